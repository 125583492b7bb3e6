//! Output buffers of the CPU kernels, zeroed by the parallel tasks that fill them.
//!
//! `vec![0; n]` zeroes the whole buffer on the calling thread before any task starts.
//! In the DCGAN benchmark's step, that serial zeroing was a third of the time when one of
//! the two cores was busy and the other idle (about 6% of the step), and it was 5% of the
//! CPU time of nearest downsampling: the buffers are megabytes, reused from the allocator
//! and cold in the cache. Here each task zeroes its own chunk just before filling it, in
//! parallel, while the chunk is in its core's cache.

use std::mem::MaybeUninit;

use rayon::prelude::*;

/// `len` values, made by `fill(i, chunk)` for the `i`-th chunk of `chunk` entries (the
/// last one shorter), in parallel, one rayon job per chunk: rayon otherwise hands a
/// thread a run of chunks to do in turn, which no idle thread can take a part of, and the
/// last run left the other core idle for up to two chunks' time at the end of every
/// loop. Each chunk holds zeros when `fill` gets it.
pub(crate) fn par_filled<T, F>(len: usize, chunk: usize, fill: F) -> Vec<T>
where
    T: Copy + Default + Send + Sync,
    F: Fn(usize, &mut [T]) + Sync,
{
    filled(len, chunk, 1, || (), |(), i, part| fill(i, part))
}

/// [`par_filled`] for many small chunks: rayon splits the work as it sees fit, and each
/// of its jobs makes one `init()` state for all the chunks it fills.
pub(crate) fn par_filled_with<T, S, I, F>(len: usize, chunk: usize, init: I, fill: F) -> Vec<T>
where
    T: Copy + Default + Send + Sync,
    I: Fn() -> S + Sync + Send,
    F: Fn(&mut S, usize, &mut [T]) + Sync + Send,
{
    filled(len, chunk, usize::MAX, init, fill)
}

fn filled<T, S, I, F>(len: usize, chunk: usize, max_len: usize, init: I, fill: F) -> Vec<T>
where
    T: Copy + Default + Send + Sync,
    I: Fn() -> S + Sync + Send,
    F: Fn(&mut S, usize, &mut [T]) + Sync + Send,
{
    let mut buf: Vec<T> = Vec::with_capacity(len);
    buf.spare_capacity_mut()[..len]
        .par_chunks_mut(chunk.max(1))
        .with_max_len(max_len)
        .enumerate()
        .for_each_init(init, |state, (i, part)| {
            part.fill(MaybeUninit::new(T::default()));
            // SAFETY: every entry of `part` was initialised on the line above, and
            // `MaybeUninit<T>` has the size, alignment and layout of `T`.
            let part = unsafe { &mut *(part as *mut [MaybeUninit<T>] as *mut [T]) };
            fill(state, i, part);
        });
    // SAFETY: the chunks cover entries 0..len and each task initialised its chunk before
    // anything read it. A panicking task makes `for_each_init` panic before this line, and
    // the buffer is then dropped with length 0.
    unsafe { buf.set_len(len) };
    buf
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_chunk_starts_at_zero_and_lands_in_place() {
        for (len, chunk) in [(0, 4), (1, 4), (10, 3), (4096, 1000), (7, 0)] {
            let v = par_filled(len, chunk, |i, part: &mut [f32]| {
                assert!(part.iter().all(|&x| x == 0.0));
                for (j, x) in part.iter_mut().enumerate() {
                    *x = (i * chunk.max(1) + j) as f32;
                }
            });
            let want: Vec<f32> = (0..len).map(|j| j as f32).collect();
            assert_eq!(v, want, "len {len}, chunk {chunk}");
            let w = par_filled_with(
                len,
                chunk,
                || 0usize,
                |calls, i, part: &mut [u8]| {
                    *calls += 1;
                    assert!(part.iter().all(|&x| x == 0));
                    for (j, x) in part.iter_mut().enumerate() {
                        *x = ((i * chunk.max(1) + j) % 251) as u8;
                    }
                },
            );
            let want: Vec<u8> = (0..len).map(|j| (j % 251) as u8).collect();
            assert_eq!(w, want, "len {len}, chunk {chunk}, u8");
        }
    }
}
