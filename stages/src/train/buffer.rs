//! Output buffers of the CPU kernels, zeroed by the parallel tasks that fill them.
//!
//! `vec![0.0; n]` zeroes the whole buffer on the calling thread before any task starts.
//! In the DCGAN benchmark's step, that serial zeroing was a third of the time when one of
//! the two cores was busy and the other idle (about 6% of the step): the buffers are
//! megabytes, freshly reused from the allocator and cold in the cache. Here each task
//! zeroes its own chunk just before filling it, in parallel, while the chunk is in its
//! core's cache.

use std::mem::MaybeUninit;

use rayon::prelude::*;

/// `len` values, made by `fill(i, chunk)` for the `i`-th chunk of `chunk` entries (the
/// last one shorter), in parallel. Each chunk holds zeros when `fill` gets it.
pub(crate) fn par_filled<F>(len: usize, chunk: usize, fill: F) -> Vec<f32>
where
    F: Fn(usize, &mut [f32]) + Sync,
{
    let mut buf: Vec<f32> = Vec::with_capacity(len);
    buf.spare_capacity_mut()[..len]
        .par_chunks_mut(chunk.max(1))
        // One job per chunk. rayon otherwise hands a thread a run of chunks to do in
        // turn, which no idle thread can take a part of: the last run left the other
        // core idle for up to two chunks' time at the end of every loop.
        .with_max_len(1)
        .enumerate()
        .for_each(|(i, part)| {
            part.fill(MaybeUninit::new(0.0));
            // SAFETY: every entry of `part` was initialised on the line above, and
            // `MaybeUninit<f32>` has the size, alignment and layout of `f32`.
            let part = unsafe { &mut *(part as *mut [MaybeUninit<f32>] as *mut [f32]) };
            fill(i, part);
        });
    // SAFETY: the chunks cover entries 0..len and each task initialised its chunk before
    // anything read it. A panicking task makes `for_each` panic before this line, and the
    // buffer is then dropped with length 0.
    unsafe { buf.set_len(len) };
    buf
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_chunk_starts_at_zero_and_lands_in_place() {
        for (len, chunk) in [(0, 4), (1, 4), (10, 3), (4096, 1000), (7, 0)] {
            let v = par_filled(len, chunk, |i, part| {
                assert!(part.iter().all(|&x| x == 0.0));
                for (j, x) in part.iter_mut().enumerate() {
                    *x = (i * chunk.max(1) + j) as f32;
                }
            });
            let want: Vec<f32> = (0..len).map(|j| j as f32).collect();
            assert_eq!(v, want, "len {len}, chunk {chunk}");
        }
    }
}
