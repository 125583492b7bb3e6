//! Resizing u8 images the way Pillow's `Image.resize` does.
//!
//! Datasets in GAN papers are usually made with Pillow, and a `downsample` stage that
//! shifts pixels changes what the networks see and what the metrics measure. So every
//! [`Filter`] here reproduces Pillow's filter of the same name, for gray and RGB
//! images, reducing and enlarging alike: the fixtures in `tests/fixtures/pillow` are
//! matched bit for bit.
//!
//! Matching bit for bit means doing Pillow's arithmetic, not an equivalent one:
//!
//! - the convolution weights come from Pillow's filter functions, supports and
//!   window bounds in `f64`, normalised per output pixel, then rounded to 22-bit fixed
//!   point; sums start at one half, are floored by the shift and clipped to 0..=255;
//! - the two axes are filtered one after the other with the intermediate image rounded
//!   to u8 in between: rows first, unless the height loses more than twice as many
//!   pixels as the width (Pillow 13 made that exception to save work; older Pillow
//!   always filters rows first, so its output differs there); an axis whose size does
//!   not change is not filtered at all;
//! - nearest is Pillow's affine scale, whose source position is accumulated in `f64`
//!   one output pixel after the other.
//!
//! `fast_image_resize` was the first choice, but its u8 kernels keep 15-bit weights
//! and always filter columns first, which moved values by 2 against Pillow on real
//! photographs. The kernels here keep Pillow's exact sums and find their speed
//! elsewhere: weights are computed once per set rather than once per image, both
//! passes are multiply-adds of one weight over runs of contiguous bytes (the row pass
//! works on tiles of rows transposed with SSE2 or AVX2 shuffles), which the compiler
//! turns into AVX2 or AVX-512 code picked at run time, and source rows are prefetched
//! while the arithmetic runs, since real datasets come from memory, not cache.

use std::ops::Range;

use gantry_datasets::ImageSet;

use crate::buffer::par_filled_with;

/// A resampling filter, named and behaving as Pillow's `Image.Resampling` members.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    serde::Serialize,
    serde::Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Filter {
    /// Each output pixel is the plain mean of the source pixels it covers
    /// (Pillow `BOX`).
    Box,
    /// Triangle filter, support 1 (Pillow `BILINEAR`).
    Bilinear,
    /// Cubic convolution with a = -0.5, support 2 (Pillow `BICUBIC`).
    Bicubic,
    /// Lanczos windowed sinc, support 3 (Pillow `LANCZOS`).
    Lanczos,
    /// Hamming-windowed sinc, support 1 (Pillow `HAMMING`).
    Hamming,
    /// One source pixel per output pixel, no averaging (Pillow `NEAREST`).
    Nearest,
}

impl Filter {
    /// Every filter, in the order tables list them.
    pub const ALL: [Filter; 6] = [
        Filter::Box,
        Filter::Bilinear,
        Filter::Bicubic,
        Filter::Lanczos,
        Filter::Hamming,
        Filter::Nearest,
    ];

    /// The name used in pipeline files and reports.
    pub fn name(self) -> &'static str {
        match self {
            Filter::Box => "box",
            Filter::Bilinear => "bilinear",
            Filter::Bicubic => "bicubic",
            Filter::Lanczos => "lanczos",
            Filter::Hamming => "hamming",
            Filter::Nearest => "nearest",
        }
    }

    /// Pillow's filter function and support, or `None` for nearest, which Pillow
    /// does not compute as a convolution.
    fn kernel(self) -> Option<Kernel> {
        let (function, support): (fn(f64) -> f64, f64) = match self {
            Filter::Box => (box_filter, 0.5),
            Filter::Bilinear => (bilinear_filter, 1.0),
            Filter::Bicubic => (bicubic_filter, 2.0),
            Filter::Lanczos => (lanczos_filter, 3.0),
            Filter::Hamming => (hamming_filter, 1.0),
            Filter::Nearest => return None,
        };
        Some(Kernel { function, support })
    }
}

/// A convolution filter as Pillow defines one.
#[derive(Clone, Copy)]
struct Kernel {
    function: fn(f64) -> f64,
    /// Half the width of the window at scale 1, in pixels.
    support: f64,
}

impl std::fmt::Display for Filter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.name())
    }
}

// Pillow's filter functions. Their branch boundaries and the order of floating-point
// operations decide which weights come out as exactly zero or land on a rounding edge,
// so they follow Pillow's Resample.c term for term.

fn box_filter(x: f64) -> f64 {
    if x > -0.5 && x <= 0.5 { 1.0 } else { 0.0 }
}

fn bilinear_filter(x: f64) -> f64 {
    let x = x.abs();
    if x < 1.0 { 1.0 - x } else { 0.0 }
}

fn hamming_filter(x: f64) -> f64 {
    let x = x.abs();
    if x == 0.0 {
        1.0
    } else if x >= 1.0 {
        0.0
    } else {
        let x = x * std::f64::consts::PI;
        // Pillow writes these constants as C `float`s, which round them.
        x.sin() / x * (f64::from(0.54_f32) + f64::from(0.46_f32) * x.cos())
    }
}

fn bicubic_filter(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

fn sinc(x: f64) -> f64 {
    if x == 0.0 {
        1.0
    } else {
        let x = x * std::f64::consts::PI;
        x.sin() / x
    }
}

fn lanczos_filter(x: f64) -> f64 {
    if (-3.0..3.0).contains(&x) {
        sinc(x) * sinc(x / 3.0)
    } else {
        0.0
    }
}

/// Why a resize was refused.
#[derive(Debug, thiserror::Error)]
pub enum ResizeError {
    #[error("cannot resize a {width}x{height} image: it has no pixels")]
    EmptySource { width: u32, height: u32 },
    #[error("cannot resize to {width}x{height}: width and height must be at least 1")]
    EmptyTarget { width: u32, height: u32 },
    #[error("images with {0} channels cannot be resized: only 1 (gray) and 3 (RGB) are supported")]
    UnsupportedChannels(u8),
    #[error(
        "a {width}x{height} image with {channels} channels needs {expected} bytes \
         (or a multiple, for a set), but {actual} were given"
    )]
    BufferLength {
        width: u32,
        height: u32,
        channels: u8,
        expected: usize,
        actual: usize,
    },
    #[error("{width}x{height} images with {channels} channels do not fit in memory")]
    TooLarge {
        width: u32,
        height: u32,
        channels: u8,
    },
}

/// Resize one u8 image (row-major HWC, channels 1 or 3) exactly as Pillow's
/// `Image.resize(size, filter)` with the default `reducing_gap=None`.
pub fn resize_image(
    src: &[u8],
    width: u32,
    height: u32,
    channels: u8,
    dst_width: u32,
    dst_height: u32,
    filter: Filter,
) -> Result<Vec<u8>, ResizeError> {
    let plan = Plan::new(width, height, channels, dst_width, dst_height, filter)?;
    if src.len() != plan.src_len {
        return Err(plan.wrong_length(src.len()));
    }
    let mut dst = vec![0; plan.dst_len];
    Scratch::default().run(&plan, src, 0, &mut dst);
    Ok(dst)
}

/// Resize every image of a set, in parallel with rayon, order preserved.
pub fn resize_set(
    set: &ImageSet,
    dst_width: u32,
    dst_height: u32,
    filter: Filter,
) -> Result<ImageSet, ResizeError> {
    let plan = Plan::new(
        set.width,
        set.height,
        set.channels,
        dst_width,
        dst_height,
        filter,
    )?;
    if !set.pixels.len().is_multiple_of(plan.src_len) {
        return Err(plan.wrong_length(set.pixels.len()));
    }
    let count = set.pixels.len() / plan.src_len;
    let total = count
        .checked_mul(plan.dst_len)
        .ok_or(ResizeError::TooLarge {
            width: dst_width,
            height: dst_height,
            channels: set.channels,
        })?;

    // Scratch buffers live as long as a rayon job, not an image, so that a job over
    // many images allocates them once.
    let pixels = par_filled_with(
        total,
        plan.dst_len,
        Scratch::default,
        |scratch, i, dst: &mut [u8]| scratch.run(&plan, &set.pixels, i, dst),
    );

    let mut out = ImageSet::new(dst_width, dst_height, set.channels);
    out.pixels = pixels;
    Ok(out)
}

/// Pillow's fixed point: weights are scaled by 2^22, which leaves room for 8-bit
/// values and for sums of weights up to 2 (lanczos lobes) in an `i32`.
const PRECISION_BITS: u32 = 32 - 8 - 2;
/// Added before the shift, so that the shift rounds half up.
const HALF: i32 = 1 << (PRECISION_BITS - 1);

/// Everything about a resize that does not depend on the pixels, checked and
/// computed once per set.
struct Plan {
    width: usize,
    height: usize,
    dst_width: usize,
    channels: usize,
    src_len: usize,
    dst_len: usize,
    method: Method,
}

enum Method {
    Copy,
    Nearest {
        cols: Vec<usize>,
        rows: Vec<usize>,
        /// Each output row cut into pieces that one two-register byte permute makes.
        pieces: Vec<Piece>,
    },
    Convolve {
        /// The row pass, when the width changes.
        horizontal: Option<Axis>,
        /// The column pass, when the height changes, with its windows relative to
        /// `rows`.
        vertical: Option<Axis>,
        /// The source rows that the first pass reads, when it is the row pass: all of
        /// them unless the column pass leaves some out.
        rows: Range<usize>,
        vertical_first: bool,
    },
}

impl Plan {
    fn new(
        width: u32,
        height: u32,
        channels: u8,
        dst_width: u32,
        dst_height: u32,
        filter: Filter,
    ) -> Result<Self, ResizeError> {
        if !matches!(channels, 1 | 3) {
            return Err(ResizeError::UnsupportedChannels(channels));
        }
        if width == 0 || height == 0 {
            return Err(ResizeError::EmptySource { width, height });
        }
        if dst_width == 0 || dst_height == 0 {
            return Err(ResizeError::EmptyTarget {
                width: dst_width,
                height: dst_height,
            });
        }
        let image_len = |w: u32, h: u32| {
            (w as usize)
                .checked_mul(h as usize)
                .and_then(|n| n.checked_mul(channels as usize))
                .ok_or(ResizeError::TooLarge {
                    width: w,
                    height: h,
                    channels,
                })
        };
        let src_len = image_len(width, height)?;
        let dst_len = image_len(dst_width, dst_height)?;

        // Pillow hands back a copy when nothing changes size, whatever the filter.
        let method = if (width, height) == (dst_width, dst_height) {
            Method::Copy
        } else {
            match filter.kernel() {
                None => {
                    let cols = nearest_indices(width, dst_width);
                    Method::Nearest {
                        pieces: Piece::cut(&cols, channels as usize),
                        cols,
                        rows: nearest_indices(height, dst_height),
                    }
                }
                Some(kernel) => {
                    let horizontal =
                        (width != dst_width).then(|| Axis::new(width, dst_width, kernel));
                    let mut vertical =
                        (height != dst_height).then(|| Axis::new(height, dst_height, kernel));
                    // Pillow 13's rule, in its own terms: columns first when the height
                    // loses more than twice as many pixels as the width, which makes
                    // the row pass cheaper.
                    let lost_rows = i64::from(height) - i64::from(dst_height);
                    let lost_cols = i64::from(width) - i64::from(dst_width);
                    let vertical_first = lost_rows > 0 && lost_rows > lost_cols * 2;
                    // Rows first, Pillow filters only the rows the column pass will read.
                    let rows = match &mut vertical {
                        Some(axis) if !vertical_first => axis.trim_source(),
                        _ => 0..height as usize,
                    };
                    Method::Convolve {
                        horizontal,
                        vertical,
                        rows,
                        vertical_first,
                    }
                }
            }
        };
        Ok(Plan {
            width: width as usize,
            height: height as usize,
            dst_width: dst_width as usize,
            channels: channels as usize,
            src_len,
            dst_len,
            method,
        })
    }

    fn wrong_length(&self, actual: usize) -> ResizeError {
        ResizeError::BufferLength {
            width: self.width as u32,
            height: self.height as u32,
            channels: self.channels as u8,
            expected: self.src_len,
            actual,
        }
    }
}

/// One axis's convolution: for each output index, a window of source indices and
/// their fixed-point weights.
struct Axis {
    windows: Vec<Window>,
    weights: Vec<i32>,
    /// Set when every window is `taps` source pixels side by side from the start
    /// of the axis, all of one weight: a box filter reducing by a whole number.
    uniform: Option<Uniform>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct Uniform {
    taps: usize,
    weight: i32,
}

struct Window {
    /// First source index.
    start: usize,
    /// Where this window's weights start in [`Axis::weights`]; it has `len` of them.
    offset: usize,
    len: usize,
}

impl Axis {
    /// Pillow's `precompute_coeffs` and `normalize_coeffs_8bpc` for a whole axis
    /// (`in0 = 0`, `in1 = src`).
    fn new(src: u32, dst: u32, kernel: Kernel) -> Self {
        let scale = f64::from(src) / f64::from(dst);
        // Reducing widens the filter so that every source pixel is seen.
        let filter_scale = scale.max(1.0);
        let support = kernel.support * filter_scale;
        let inverse = 1.0 / filter_scale;
        let src = src as usize;

        let mut windows = Vec::with_capacity(dst as usize);
        let mut weights = Vec::new();
        let mut floats = Vec::new();
        for out in 0..dst {
            let center = (f64::from(out) + 0.5) * scale;
            // Pillow truncates toward zero, then clamps.
            let first = ((center - support + 0.5) as i64).max(0) as usize;
            let end = ((center + support + 0.5) as i64).clamp(0, src as i64) as usize;
            floats.clear();
            let mut sum = 0.0;
            for i in first..end {
                let w = (kernel.function)(((i as f64) - center + 0.5) * inverse);
                floats.push(w);
                sum += w;
            }
            let offset = weights.len();
            for w in &floats {
                let w = if sum != 0.0 { w / sum } else { *w };
                let scaled = w * f64::from(1u32 << PRECISION_BITS);
                // Rounds half away from zero, as Pillow's casts after +-0.5 do.
                weights.push(if w < 0.0 {
                    (scaled - 0.5) as i32
                } else {
                    (scaled + 0.5) as i32
                });
            }
            // Taps whose fixed-point weight is 0 add nothing to Pillow's sums either;
            // dropping them from both ends only saves work.
            let mut start = first;
            let mut len = end.saturating_sub(first);
            let mut lead = 0;
            while len > 0 && weights[offset + lead] == 0 {
                lead += 1;
                start += 1;
                len -= 1;
            }
            while len > 0 && weights[offset + lead + len - 1] == 0 {
                len -= 1;
            }
            windows.push(Window {
                start,
                offset: offset + lead,
                len,
            });
        }
        let uniform = windows.first().and_then(|first| {
            let taps = first.len;
            let weight = *weights.get(first.offset)?;
            let all = windows.iter().enumerate().all(|(j, w)| {
                w.start == j * taps
                    && w.len == taps
                    && weights[w.offset..w.offset + w.len]
                        .iter()
                        .all(|&x| x == weight)
            });
            (taps > 0 && all).then_some(Uniform { taps, weight })
        });
        Axis {
            windows,
            weights,
            uniform,
        }
    }

    /// The source range the windows read, with the windows made relative to it.
    fn trim_source(&mut self) -> Range<usize> {
        let first = self.windows.iter().map(|w| w.start).min().unwrap_or(0);
        let end = self
            .windows
            .iter()
            .map(|w| w.start + w.len)
            .max()
            .unwrap_or(0)
            .max(first);
        for w in &mut self.windows {
            w.start -= first;
        }
        first..end
    }

    fn iter(&self) -> impl Iterator<Item = (usize, &[i32])> + '_ {
        self.windows
            .iter()
            .map(|w| (w.start, &self.weights[w.offset..w.offset + w.len]))
    }

    fn len(&self) -> usize {
        self.windows.len()
    }
}

/// Source index for each output index, as Pillow's `ImagingScaleAffine` finds them:
/// start at half a step and keep adding the step. Accumulating (rather than computing
/// `(i + 0.5) * step`) is what makes the rounding, and so the chosen pixel, agree
/// with Pillow's for every ratio.
fn nearest_indices(src: u32, dst: u32) -> Vec<usize> {
    let step = f64::from(src) / f64::from(dst);
    let last = src as usize - 1;
    let mut pos = step * 0.5;
    (0..dst)
        .map(|_| {
            // `pos` never goes below half a step, so truncation is Pillow's floor.
            // Pillow leaves an output pixel black if rounding ever carried `pos` past
            // the last source pixel; that needs steps far below one part in 2^40,
            // so clamping here only guards the indexing.
            let index = (pos as usize).min(last);
            pos += step;
            index
        })
        .collect()
}

/// Per-thread buffers, reused from image to image.
#[derive(Default)]
struct Scratch {
    /// The first pass's output, the second pass's input.
    between: Vec<u8>,
    /// Source rows transposed for the row pass: byte column after byte column.
    tile: Vec<u8>,
    /// The row pass's results for one tile, still transposed.
    tile_out: Vec<u8>,
    /// The last, partial, tile padded to full height.
    pad: Vec<u8>,
}

impl Scratch {
    /// Resize image `index` of `images` into `dst`; the caller has checked both
    /// lengths against `plan`. The other images are only prefetched from.
    fn run(&mut self, plan: &Plan, images: &[u8], index: usize, dst: &mut [u8]) {
        let src = &images[index * plan.src_len..][..plan.src_len];
        match &plan.method {
            Method::Copy => dst.copy_from_slice(src),
            Method::Nearest { .. } => {
                #[cfg(target_arch = "x86_64")]
                if permute::usable() {
                    // SAFETY: `usable` has checked the CPU.
                    unsafe {
                        if plan.channels == 3 {
                            permute::nearest::<3>(plan, images, index, dst)
                        } else {
                            permute::nearest::<1>(plan, images, index, dst)
                        }
                    }
                    return;
                }
                if plan.channels == 3 {
                    nearest::<3, false>(plan, images, index, dst)
                } else {
                    nearest::<1, false>(plan, images, index, dst)
                }
            }
            Method::Convolve { .. } => kernels::convolve(plan, src, dst, self),
        }
    }
}

/// How many sampled rows ahead nearest asks for rows into L2, and then into L1.
/// Measured on AMD Zen 4: without requests nearest ran at a third of the speed;
/// with only L1 requests two rows ahead, about 10% slower than with both.
const NEAREST_L2_AHEAD: usize = 8;
const NEAREST_L1_AHEAD: usize = 2;

/// Nearest, with each output row made by byte permutes (AVX-512 VBMI) where
/// `PERMUTE`.
#[inline(always)]
fn nearest<const C: usize, const PERMUTE: bool>(
    plan: &Plan,
    images: &[u8],
    index: usize,
    dst: &mut [u8],
) {
    let Method::Nearest { cols, rows, pieces } = &plan.method else {
        return;
    };
    // Only the permute path reads the pieces.
    #[cfg(not(target_arch = "x86_64"))]
    let _ = pieces;
    let src_row_len = plan.width * C;
    let dst_row_len = plan.dst_width * C;
    let src = &images[index * plan.src_len..][..plan.src_len];
    // The sampled rows lie too far apart for the hardware prefetchers, so nearest
    // would wait on memory at every row. The rows `ahead` of row `i` are requested
    // instead, running on into the next image of the set at the end of this one.
    let row_ahead = |i: usize, ahead: usize| {
        let j = i + ahead;
        let start = (index + j / rows.len()) * plan.src_len + rows[j % rows.len()] * src_row_len;
        images.get(start..start + src_row_len)
    };
    for (i, (dst_row, &y)) in dst.chunks_exact_mut(dst_row_len).zip(rows).enumerate() {
        if let Some(row) = row_ahead(i, NEAREST_L2_AHEAD) {
            prefetch_to::<false>(row);
        }
        if let Some(row) = row_ahead(i, NEAREST_L1_AHEAD) {
            prefetch(row);
        }
        let src_row = &src[y * src_row_len..][..src_row_len];
        #[cfg(target_arch = "x86_64")]
        if PERMUTE {
            // SAFETY: `PERMUTE` is set only by `permute::nearest`, whose caller has
            // checked the CPU.
            unsafe { permute::row(src_row, pieces, dst_row) };
            continue;
        }
        for (out, &x) in dst_row.chunks_exact_mut(C).zip(cols) {
            out.copy_from_slice(&src_row[x * C..][..C]);
        }
    }
}

/// A run of output pixels whose source bytes all lie within 128 bytes of a row, so
/// that one two-register byte permute picks them all out.
#[derive(Debug, Clone)]
struct Piece {
    /// Where in the source row the 128-byte window starts.
    src: usize,
    /// How many bytes of the window are in the row (the rest are never read).
    src_len: usize,
    /// Where in the output row the piece's bytes go, and how many.
    dst: usize,
    dst_len: usize,
    /// For each output byte, its place in the window.
    index: [u8; 64],
}

impl Piece {
    /// Greedy cut of a row with sampled columns `cols` and `channels` bytes a pixel.
    fn cut(cols: &[usize], channels: usize) -> Vec<Piece> {
        let mut pieces = Vec::new();
        let mut first = 0;
        while first < cols.len() {
            let src = cols[first] * channels;
            let mut piece = Piece {
                src,
                src_len: 0,
                dst: first * channels,
                dst_len: 0,
                index: [0; 64],
            };
            let mut pixel = first;
            while pixel < cols.len()
                && piece.dst_len + channels <= 64
                && cols[pixel] * channels + channels - src <= 128
            {
                for c in 0..channels {
                    piece.index[piece.dst_len + c] = (cols[pixel] * channels + c - src) as u8;
                }
                piece.dst_len += channels;
                piece.src_len = cols[pixel] * channels + channels - src;
                pixel += 1;
            }
            pieces.push(piece);
            first = pixel;
        }
        pieces
    }
}

#[cfg(target_arch = "x86_64")]
mod permute {
    use super::{Piece, Plan};
    use std::arch::x86_64::{
        _mm512_loadu_si512, _mm512_mask_storeu_epi8, _mm512_maskz_loadu_epi8,
        _mm512_permutex2var_epi8,
    };

    pub(super) fn usable() -> bool {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512vbmi")
    }

    /// # Safety
    ///
    /// The CPU must support AVX-512 F, BW and VBMI.
    #[target_feature(enable = "avx512f,avx512bw,avx512vbmi")]
    pub(super) unsafe fn nearest<const C: usize>(
        plan: &Plan,
        images: &[u8],
        index: usize,
        dst: &mut [u8],
    ) {
        super::nearest::<C, true>(plan, images, index, dst)
    }

    /// One output row from one source row.
    ///
    /// # Safety
    ///
    /// The CPU must support AVX-512 F, BW and VBMI.
    #[inline(always)]
    pub(super) unsafe fn row(src: &[u8], pieces: &[Piece], dst: &mut [u8]) {
        let mask = |bytes: usize| match bytes {
            0 => 0,
            64.. => u64::MAX,
            n => (1u64 << n) - 1,
        };
        for piece in pieces {
            assert!(
                piece.src + piece.src_len <= src.len() && piece.dst + piece.dst_len <= dst.len()
            );
            // SAFETY: the caller vouches for the instruction set. The loads read only
            // the masked bytes, the window's first `src_len`, inside `src` (asserted
            // above); the store writes only the piece's `dst_len` bytes, inside `dst`.
            unsafe {
                let from = src.as_ptr().add(piece.src);
                let low = _mm512_maskz_loadu_epi8(mask(piece.src_len), from.cast());
                let high = _mm512_maskz_loadu_epi8(
                    mask(piece.src_len.saturating_sub(64)),
                    from.wrapping_add(64).cast(),
                );
                let index = _mm512_loadu_si512(piece.index.as_ptr().cast());
                let bytes = _mm512_permutex2var_epi8(low, index, high);
                _mm512_mask_storeu_epi8(
                    dst.as_mut_ptr().add(piece.dst).cast(),
                    mask(piece.dst_len),
                    bytes,
                );
            }
        }
    }
}

/// Ask the CPU to start loading `bytes` into L1; a hint with no effect on results.
#[inline(always)]
fn prefetch(bytes: &[u8]) {
    prefetch_to::<true>(bytes)
}

/// Ask the CPU to start loading `bytes` into L1 (`L1`) or only as far as L2.
#[inline(always)]
fn prefetch_to<const L1: bool>(bytes: &[u8]) {
    #[cfg(target_arch = "x86_64")]
    for line in bytes.chunks(64) {
        // SAFETY: SSE is part of every x86_64 CPU, and a prefetch never faults; the
        // address is inside `bytes` anyway.
        unsafe {
            use std::arch::x86_64::{_MM_HINT_T0, _MM_HINT_T1, _mm_prefetch};
            if L1 {
                _mm_prefetch::<_MM_HINT_T0>(line.as_ptr().cast());
            } else {
                _mm_prefetch::<_MM_HINT_T1>(line.as_ptr().cast());
            }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = bytes;
}

/// The convolution passes.
///
/// Both passes are written as the same operation: one weight times a run of
/// contiguous bytes, added into a row of `i32` sums. The column pass is that shape
/// already. The row pass gets it by transposing `TILE` source rows at a time, so that
/// each source byte column holds `TILE` values side by side; its results are
/// transposed back. The sums are plain Rust loops that the compiler vectorises (only
/// the transposes spell out their SSE2 shuffles), and the passes are compiled once per
/// instruction set and picked at run time, so the wider the registers, the more
/// values each instruction handles.
mod kernels {
    use super::*;

    /// Rows per row-pass tile, so that each channel of a tile column is one block of
    /// sums.
    const TILE: usize = LANES;

    pub(super) fn convolve(plan: &Plan, src: &[u8], dst: &mut [u8], scratch: &mut Scratch) {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512bw") {
                // SAFETY: the CPU supports AVX-512 BW (and so F), checked just above.
                return unsafe { convolve_avx512(plan, src, dst, scratch) };
            }
            if std::arch::is_x86_feature_detected!("avx2") {
                // SAFETY: the CPU supports AVX2, checked just above.
                return unsafe { convolve_avx2(plan, src, dst, scratch) };
            }
        }
        two_passes::<false, false>(plan, src, dst, scratch)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512bw")]
    fn convolve_avx512(plan: &Plan, src: &[u8], dst: &mut [u8], scratch: &mut Scratch) {
        // Four blocks side by side in AVX-512 registers measured slower than two in
        // AVX2 ones on AMD Zen 4 (which splits 512-bit shuffles, and pays for storing
        // the upper lanes).
        two_passes::<true, true>(plan, src, dst, scratch)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    fn convolve_avx2(plan: &Plan, src: &[u8], dst: &mut [u8], scratch: &mut Scratch) {
        two_passes::<true, false>(plan, src, dst, scratch)
    }

    /// Both passes; with `WIDE`, the row pass's transposes take two 16 x 16 blocks side
    /// by side in AVX2 registers instead of one in SSE2 ones; with `AVX512`, the sums
    /// are spelled out in AVX-512 instructions. Only the entry points above, which
    /// have checked the CPU, set them.
    #[inline(always)]
    fn two_passes<const WIDE: bool, const AVX512: bool>(
        plan: &Plan,
        src: &[u8],
        dst: &mut [u8],
        scratch: &mut Scratch,
    ) {
        let Method::Convolve {
            horizontal,
            vertical,
            rows,
            vertical_first,
        } = &plan.method
        else {
            return;
        };
        let c = plan.channels;
        let mut between = std::mem::take(&mut scratch.between);
        match (horizontal, vertical) {
            (Some(h), Some(v)) if *vertical_first => {
                let row = plan.width * c;
                between.resize(v.len() * row, 0);
                column_pass::<AVX512>(v, row, src, &mut between);
                row_pass::<WIDE, AVX512>(plan, h, 0..v.len(), &between, dst, scratch);
            }
            (Some(h), Some(v)) => {
                let between_row = h.len() * c;
                between.resize(rows.len() * between_row, 0);
                row_pass::<WIDE, AVX512>(plan, h, rows.clone(), src, &mut between, scratch);
                column_pass::<AVX512>(v, between_row, &between, dst);
            }
            (Some(h), None) => row_pass::<WIDE, AVX512>(plan, h, rows.clone(), src, dst, scratch),
            (None, Some(v)) => {
                let row = plan.width * c;
                column_pass::<AVX512>(v, row, &src[rows.start * row..rows.end * row], dst)
            }
            (None, None) => dst.copy_from_slice(src),
        }
        scratch.between = between;
    }

    #[inline(always)]
    fn clip8(sum: i32) -> u8 {
        (sum >> PRECISION_BITS).clamp(0, 255) as u8
    }

    /// Lanes per block of sums: 16 `i32` fill one AVX-512 register (two AVX2 ones).
    const LANES: usize = 16;

    /// For `N * LANES` lanes `i`: `Σ_k weights[k] * src[k * stride + i]`, rounded,
    /// clipped and stored in `out[i]`, one block of `LANES` at a time: a block's sums
    /// then stay in registers across all the taps.
    #[inline(always)]
    fn weighted_sum<const N: usize>(src: &[u8], stride: usize, weights: &[i32], out: &mut [u8]) {
        for (block, out) in out[..N * LANES].chunks_exact_mut(LANES).enumerate() {
            let src = &src[block * LANES..];
            let mut acc = [HALF; LANES];
            for (k, &w) in weights.iter().enumerate() {
                multiply_add(&mut acc, &src[k * stride..][..LANES], w);
            }
            for (o, &a) in out.iter_mut().zip(&acc) {
                *o = clip8(a);
            }
        }
    }

    /// [`weighted_sum`], in AVX-512 instructions where `AVX512` says the CPU has them.
    #[inline(always)]
    fn block_sums<const N: usize, const AVX512: bool>(
        src: &[u8],
        stride: usize,
        weights: &[i32],
        out: &mut [u8],
    ) {
        #[cfg(target_arch = "x86_64")]
        if AVX512 {
            // SAFETY: `AVX512` is set only in the pass compiled for AVX-512 F and BW,
            // which runs only once the CPU has been checked for them.
            return unsafe { avx512::weighted_sum::<N>(src, stride, weights, out) };
        }
        weighted_sum::<N>(src, stride, weights, out)
    }

    /// `acc += weight * bytes`. Wrapping arithmetic is what Pillow's `int` sums do,
    /// and it keeps overflow checks out of the loop in debug builds; these filters'
    /// sums stay far below 2^31 anyway.
    #[inline(always)]
    fn multiply_add(acc: &mut [i32; LANES], bytes: &[u8], weight: i32) {
        for (a, &b) in acc.iter_mut().zip(&bytes[..LANES]) {
            *a = a.wrapping_add(i32::from(b).wrapping_mul(weight));
        }
    }

    #[inline(always)]
    fn row_pass<const WIDE: bool, const AVX512: bool>(
        plan: &Plan,
        axis: &Axis,
        rows: Range<usize>,
        src: &[u8],
        out: &mut [u8],
        scratch: &mut Scratch,
    ) {
        #[cfg(target_arch = "x86_64")]
        if AVX512
            && let Some(uniform) = axis.uniform
            && uniform.taps <= vbmi::MAX_TAPS
            && std::arch::is_x86_feature_detected!("avx512vbmi")
            && std::arch::is_x86_feature_detected!("avx512vl")
        {
            let src_row = plan.width * plan.channels;
            let src = &src[rows.start * src_row..rows.end * src_row];
            // SAFETY: the CPU has AVX-512 F and BW (`AVX512` is set only where it
            // was checked), and VBMI and VL, checked just above.
            unsafe {
                if plan.channels == 3 {
                    vbmi::uniform_row_pass::<3>(uniform, src_row, src, axis.len(), out)
                } else {
                    vbmi::uniform_row_pass::<1>(uniform, src_row, src, axis.len(), out)
                }
            }
            return;
        }
        if plan.channels == 3 {
            row_pass_tiles::<3, { 3 * TILE }, WIDE, AVX512>(plan, axis, rows, src, out, scratch)
        } else {
            row_pass_tiles::<1, TILE, WIDE, AVX512>(plan, axis, rows, src, out, scratch)
        }
    }

    /// The row pass over `rows` of `src` into `out`, `TILE` rows at a time. `L` is
    /// `C * TILE`: a source pixel column's bytes in the tile, channel after channel.
    #[inline(always)]
    fn row_pass_tiles<const C: usize, const L: usize, const WIDE: bool, const AVX512: bool>(
        plan: &Plan,
        axis: &Axis,
        rows: Range<usize>,
        src: &[u8],
        out: &mut [u8],
        scratch: &mut Scratch,
    ) {
        let src_row = plan.width * C;
        let out_row = axis.len() * C;
        let Scratch {
            tile,
            tile_out,
            pad,
            ..
        } = scratch;
        tile.resize(src_row * TILE, 0);
        tile_out.resize(out_row * TILE, 0);
        pad.resize(src_row.max(out_row) * TILE, 0);

        let src = &src[rows.start * src_row..rows.end * src_row];
        let blocks_in = src.chunks(TILE * src_row);
        for (index, (block_in, block_out)) in
            blocks_in.zip(out.chunks_mut(TILE * out_row)).enumerate()
        {
            let count = block_out.len() / out_row;
            if count == TILE {
                transpose::<WIDE>(block_in, src_row, TILE, src_row, tile, TILE);
            } else {
                // Rows past the end are zeros and their results are dropped.
                pad[..block_in.len()].copy_from_slice(block_in);
                pad[block_in.len()..TILE * src_row].fill(0);
                transpose::<WIDE>(pad, src_row, TILE, src_row, tile, TILE);
            }

            // The sums leave the memory idle, so they are interleaved with requests for
            // the next tile's rows, a few lines each: the next transpose then finds
            // them in cache instead of stalling on one miss after another.
            let next = src.get((index + 1) * TILE * src_row..).unwrap_or_default();
            let next = &next[..next.len().min(TILE * src_row)];
            let share = next.len().div_ceil(axis.len()).next_multiple_of(64);
            let mut ahead = next.chunks(share.max(64));
            for ((start, weights), sums) in axis.iter().zip(tile_out.chunks_exact_mut(L)) {
                if let Some(lines) = ahead.next() {
                    prefetch(lines);
                }
                block_sums::<C, AVX512>(&tile[start * L..], L, weights, sums);
            }

            if count == TILE {
                transpose::<WIDE>(tile_out, TILE, out_row, TILE, block_out, out_row);
            } else {
                transpose::<WIDE>(tile_out, TILE, out_row, TILE, pad, out_row);
                block_out.copy_from_slice(&pad[..count * out_row]);
            }
        }
    }

    /// The column pass: each output row is a weighted sum of whole source rows.
    #[inline(always)]
    fn column_pass<const AVX512: bool>(axis: &Axis, row: usize, src: &[u8], out: &mut [u8]) {
        for ((start, weights), out_row) in axis.iter().zip(out.chunks_exact_mut(row)) {
            let window = &src[start * row..];
            let mut x = 0;
            while x + 4 * LANES <= row {
                block_sums::<4, AVX512>(&window[x..], row, weights, &mut out_row[x..]);
                x += 4 * LANES;
            }
            while x + LANES <= row {
                block_sums::<1, AVX512>(&window[x..], row, weights, &mut out_row[x..]);
                x += LANES;
            }
            for (i, o) in out_row.iter_mut().enumerate().skip(x) {
                let mut sum = HALF;
                for (k, &w) in weights.iter().enumerate() {
                    sum = sum.wrapping_add(i32::from(window[k * row + i]).wrapping_mul(w));
                }
                *o = clip8(sum);
            }
        }
    }

    /// Transpose the `rows` x `cols` bytes of `src` (rows `src_stride` apart) into
    /// `dst` (rows `dst_stride` apart), 16 x 16 blocks at a time, two side by side
    /// where `WIDE` and the width allow.
    #[inline(always)]
    fn transpose<const WIDE: bool>(
        src: &[u8],
        src_stride: usize,
        rows: usize,
        cols: usize,
        dst: &mut [u8],
        dst_stride: usize,
    ) {
        let mut r = 0;
        while r < rows {
            let mut c = 0;
            while c < cols {
                let (h, w) = ((rows - r).min(16), (cols - c).min(16));
                let from = &src[r * src_stride + c..];
                let to = &mut dst[c * dst_stride + r..];
                #[cfg(target_arch = "x86_64")]
                if WIDE && h == 16 && cols - c >= 32 {
                    // SAFETY: `WIDE` is set only in the passes compiled for AVX2 or
                    // AVX-512, which run only once the CPU has been checked for them.
                    unsafe { wide::transpose_16x32(from, src_stride, to, dst_stride) };
                    c += 32;
                    continue;
                }
                if h == 16 && w == 16 {
                    transpose_16x16(from, src_stride, to, dst_stride);
                } else {
                    for i in 0..h {
                        for j in 0..w {
                            to[j * dst_stride + i] = from[i * src_stride + j];
                        }
                    }
                }
                c += 16;
            }
            r += 16;
        }
    }

    /// One 16 x 16 block. Interleaving row `i` with row `i + 8`, bytes of the low
    /// halves then of the high halves, rotates each byte's (row, column) bit index by
    /// one bit; four rounds swap row and column.
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    fn transpose_16x16(src: &[u8], src_stride: usize, dst: &mut [u8], dst_stride: usize) {
        use std::arch::x86_64::{
            _mm_loadu_si128, _mm_setzero_si128, _mm_storeu_si128, _mm_unpackhi_epi8,
            _mm_unpacklo_epi8,
        };
        assert!(src.len() >= 15 * src_stride + 16 && dst.len() >= 15 * dst_stride + 16);
        // SAFETY: SSE2 is part of every x86_64 CPU, and the loads and stores stay
        // within the bounds asserted above (and take any alignment).
        unsafe {
            let mut v = [_mm_setzero_si128(); 16];
            for (i, row) in v.iter_mut().enumerate() {
                *row = _mm_loadu_si128(src.as_ptr().add(i * src_stride).cast());
            }
            for _ in 0..4 {
                let mut next = [_mm_setzero_si128(); 16];
                for i in 0..8 {
                    next[2 * i] = _mm_unpacklo_epi8(v[i], v[i + 8]);
                    next[2 * i + 1] = _mm_unpackhi_epi8(v[i], v[i + 8]);
                }
                v = next;
            }
            for (i, row) in v.iter().enumerate() {
                _mm_storeu_si128(dst.as_mut_ptr().add(i * dst_stride).cast(), *row);
            }
        }
    }

    /// The row pass of a box filter reducing by a whole number, in AVX-512 VBMI.
    ///
    /// Every output byte is then `weight` times the plain sum of `taps` bytes `C`
    /// apart, which is Pillow's fixed-point sum exactly, since all weights are equal.
    /// A byte permute gathers each output's bytes into one 8-byte group, and one
    /// sum-of-absolute-differences against zero adds up eight groups at once. The
    /// row is read once, front to back, with no transposes.
    #[cfg(target_arch = "x86_64")]
    mod vbmi {
        use super::{HALF, PRECISION_BITS, Uniform, clip8};
        use std::arch::x86_64::{
            __m512i, _mm_mask_storeu_epi8, _mm512_add_epi64, _mm512_cvtepi64_epi8,
            _mm512_loadu_si512, _mm512_maskz_loadu_epi8, _mm512_maskz_permutexvar_epi8,
            _mm512_min_epu64, _mm512_mul_epu32, _mm512_sad_epu8, _mm512_set1_epi64,
            _mm512_setzero_si512, _mm512_srli_epi64,
        };

        /// One group of the sum of absolute differences is 8 bytes.
        pub(super) const MAX_TAPS: usize = 8;

        /// Rows of `src_row` bytes (all of `src`) into rows of `dst_width` pixels
        /// (`out`, as many rows).
        ///
        /// # Safety
        ///
        /// The CPU must support AVX-512 F, BW, VL and VBMI.
        #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vbmi")]
        pub(super) unsafe fn uniform_row_pass<const C: usize>(
            uniform: Uniform,
            src_row: usize,
            src: &[u8],
            dst_width: usize,
            out: &mut [u8],
        ) {
            let Uniform { taps, weight } = uniform;
            let out_row = dst_width * C;
            let rows = src.len() / src_row.max(1);
            assert!(
                (1..=MAX_TAPS).contains(&taps)
                    && taps * C * dst_width <= src_row
                    && out.len() == rows * out_row
            );
            // Output pixels per step: one 8-byte group per output byte, at most 8.
            let per_step = 8 / C;
            let step_in = per_step * taps * C;
            let step_out = per_step * C;
            let mut index = [0u8; 64];
            let mut gather = 0u64;
            for group in 0..step_out {
                let (pixel, channel) = (group / C, group % C);
                for tap in 0..taps {
                    let byte = group * 8 + tap;
                    index[byte] = ((pixel * taps + tap) * C + channel) as u8;
                    gather |= 1 << byte;
                }
            }
            let load = if step_in == 64 {
                u64::MAX
            } else {
                (1u64 << step_in) - 1
            };
            let store = (1u16 << step_out) - 1;
            let steps = dst_width / per_step;
            // SAFETY: the caller vouches for the instruction set. Each step loads
            // only the `step_in` bytes under `load`, at `step * step_in` into a row,
            // which the assert above keeps inside the row (`steps * step_in` is at
            // most `taps * C * dst_width`), and stores only the `step_out` bytes
            // under `store`, inside the output row. Masked-off bytes are neither
            // read nor written.
            unsafe {
                let index: __m512i = _mm512_loadu_si512(index.as_ptr().cast());
                let weight = _mm512_set1_epi64(i64::from(weight));
                let half = _mm512_set1_epi64(i64::from(HALF));
                let max = _mm512_set1_epi64(255);
                for (row, dst) in src.chunks_exact(src_row).zip(out.chunks_exact_mut(out_row)) {
                    for step in 0..steps {
                        let bytes =
                            _mm512_maskz_loadu_epi8(load, row.as_ptr().add(step * step_in).cast());
                        let grouped = _mm512_maskz_permutexvar_epi8(gather, index, bytes);
                        let sums = _mm512_sad_epu8(grouped, _mm512_setzero_si512());
                        // Sums of at most 8 bytes times a weight below 2^23: no
                        // overflow, so Pillow's i32 sums give the same values.
                        let scaled = _mm512_add_epi64(_mm512_mul_epu32(sums, weight), half);
                        let clipped =
                            _mm512_min_epu64(_mm512_srli_epi64::<{ PRECISION_BITS }>(scaled), max);
                        _mm_mask_storeu_epi8(
                            dst.as_mut_ptr().add(step * step_out).cast(),
                            store,
                            _mm512_cvtepi64_epi8(clipped),
                        );
                    }
                    for pixel in steps * per_step..dst_width {
                        for channel in 0..C {
                            let sum: u32 = (0..taps)
                                .map(|tap| u32::from(row[(pixel * taps + tap) * C + channel]))
                                .sum();
                            dst[pixel * C + channel] =
                                clip8((sum as i32).wrapping_mul(uniform.weight).wrapping_add(HALF));
                        }
                    }
                }
            }
        }
    }

    /// The sums in AVX-512 instructions.
    #[cfg(target_arch = "x86_64")]
    mod avx512 {
        use super::{HALF, LANES, PRECISION_BITS};
        use std::arch::x86_64::{
            _mm_loadu_si128, _mm_storeu_si128, _mm512_add_epi32, _mm512_cvtepu8_epi32,
            _mm512_cvtusepi32_epi8, _mm512_max_epi32, _mm512_mullo_epi32, _mm512_set1_epi32,
            _mm512_setzero_si512, _mm512_srai_epi32,
        };

        /// [`super::weighted_sum`], with every tap feeding all `N` blocks: one weight
        /// broadcast per tap, `N` independent sums, and one bounds check per call.
        /// The compiler does not find this schedule itself (written that way in
        /// plain Rust, the sums came out scalar, five times slower).
        ///
        /// # Safety
        ///
        /// The CPU must support AVX-512 F and BW.
        #[inline(always)]
        pub(super) unsafe fn weighted_sum<const N: usize>(
            src: &[u8],
            stride: usize,
            weights: &[i32],
            out: &mut [u8],
        ) {
            let taps = weights.len();
            assert!(
                out.len() >= N * LANES
                    && (taps == 0 || src.len() >= (taps - 1) * stride + N * LANES)
            );
            // SAFETY: the caller vouches for the instruction set; every load is of
            // 16 bytes at `k * stride + b * LANES` for `k < taps`, `b < N`, and every
            // store of 16 bytes at `b * LANES`, all inside the bounds asserted above.
            unsafe {
                let mut acc = [_mm512_set1_epi32(HALF); N];
                for (k, &w) in weights.iter().enumerate() {
                    let w = _mm512_set1_epi32(w);
                    let row = src.as_ptr().add(k * stride);
                    for (b, acc) in acc.iter_mut().enumerate() {
                        let bytes =
                            _mm512_cvtepu8_epi32(_mm_loadu_si128(row.add(b * LANES).cast()));
                        *acc = _mm512_add_epi32(*acc, _mm512_mullo_epi32(bytes, w));
                    }
                }
                for (b, acc) in acc.into_iter().enumerate() {
                    // Clamp below at 0 first: the narrowing saturates as unsigned.
                    let v = _mm512_max_epi32(
                        _mm512_srai_epi32::<{ PRECISION_BITS }>(acc),
                        _mm512_setzero_si512(),
                    );
                    _mm_storeu_si128(
                        out.as_mut_ptr().add(b * LANES).cast(),
                        _mm512_cvtusepi32_epi8(v),
                    );
                }
            }
        }
    }

    /// The same rounds as [`transpose_16x16`] on 2 blocks side by side: AVX2 unpacks
    /// work within each 16-byte lane, so one register row holds the same row of both
    /// blocks, and a block's results are its lane. Half the instructions per block of
    /// the SSE2 version: the row pass's transposes were most of its time.
    #[cfg(target_arch = "x86_64")]
    mod wide {
        use std::arch::x86_64::{
            __m256i, _mm_storeu_si128, _mm256_castsi256_si128, _mm256_extracti128_si256,
            _mm256_loadu_si256, _mm256_setzero_si256, _mm256_unpackhi_epi8, _mm256_unpacklo_epi8,
        };

        /// 16 rows x 32 columns. Inlined into the AVX2 and AVX-512 passes, which is
        /// where its intrinsics become single instructions (a `target_feature`
        /// function here was not inlined, and kept its registers in memory).
        ///
        /// # Safety
        ///
        /// The CPU must support AVX2.
        #[inline(always)]
        pub(super) unsafe fn transpose_16x32(
            src: &[u8],
            src_stride: usize,
            dst: &mut [u8],
            dst_stride: usize,
        ) {
            assert!(src.len() >= 15 * src_stride + 32 && dst.len() >= 31 * dst_stride + 16);
            // SAFETY: the caller vouches for the instruction set; the loads and stores stay
            // within the bounds asserted above and take any alignment.
            unsafe {
                let mut v: [__m256i; 16] = [_mm256_setzero_si256(); 16];
                for (i, row) in v.iter_mut().enumerate() {
                    *row = _mm256_loadu_si256(src.as_ptr().add(i * src_stride).cast());
                }
                for _ in 0..4 {
                    let mut next = [_mm256_setzero_si256(); 16];
                    for i in 0..8 {
                        next[2 * i] = _mm256_unpacklo_epi8(v[i], v[i + 8]);
                        next[2 * i + 1] = _mm256_unpackhi_epi8(v[i], v[i + 8]);
                    }
                    v = next;
                }
                for (i, row) in v.iter().enumerate() {
                    let out = dst.as_mut_ptr();
                    _mm_storeu_si128(out.add(i * dst_stride).cast(), _mm256_castsi256_si128(*row));
                    _mm_storeu_si128(
                        out.add((16 + i) * dst_stride).cast(),
                        _mm256_extracti128_si256::<1>(*row),
                    );
                }
            }
        }
    }

    #[cfg(not(target_arch = "x86_64"))]
    #[inline(always)]
    fn transpose_16x16(src: &[u8], src_stride: usize, dst: &mut [u8], dst_stride: usize) {
        for i in 0..16 {
            for j in 0..16 {
                dst[j * dst_stride + i] = src[i * src_stride + j];
            }
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        /// Every instruction set this CPU has gives the same bytes as the portable build
        /// (which the Pillow fixtures check only for the widest one).
        #[test]
        fn every_instruction_set_agrees() {
            let shapes = [
                (37, 23, 3, 16, 11),
                (50, 90, 1, 64, 17),
                (20, 33, 3, 47, 40),
                // Whole-number ratios, wider than a block of sums.
                (512, 40, 3, 64, 5),
                (96, 24, 1, 24, 6),
                (75, 9, 3, 25, 3),
            ];
            for (w, h, c, dw, dh) in shapes {
                let src: Vec<u8> = (0..w * h * c).map(|i| ((i * 37) ^ (i / 7)) as u8).collect();
                for filter in Filter::ALL.into_iter().filter(|f| f.kernel().is_some()) {
                    let plan = Plan::new(w, h, c as u8, dw, dh, filter).unwrap();
                    type Pass<'a> = dyn Fn(&[u8], &mut [u8], &mut Scratch) + 'a;
                    let run = |f: &Pass| {
                        let mut dst = vec![0; plan.dst_len];
                        f(&src, &mut dst, &mut Scratch::default());
                        dst
                    };
                    let portable = run(&|s, d, sc| two_passes::<false, false>(&plan, s, d, sc));
                    #[cfg(target_arch = "x86_64")]
                    {
                        if std::arch::is_x86_feature_detected!("avx2") {
                            // SAFETY: AVX2 is there, checked just above.
                            let avx2 = run(&|s, d, sc| unsafe { convolve_avx2(&plan, s, d, sc) });
                            assert_eq!(avx2, portable, "{filter} avx2 {w}x{h}x{c}");
                        }
                        if std::arch::is_x86_feature_detected!("avx512bw") {
                            // SAFETY: AVX-512 BW is there, checked just above.
                            let avx512 =
                                run(&|s, d, sc| unsafe { convolve_avx512(&plan, s, d, sc) });
                            assert_eq!(avx512, portable, "{filter} avx512 {w}x{h}x{c}");
                        }
                    }
                }
            }
        }

        #[test]
        fn transpose_matches_the_definition() {
            type Transpose = fn(&[u8], usize, usize, usize, &mut [u8], usize);
            let mut widths: Vec<(bool, Transpose)> = vec![(false, transpose::<false>)];
            #[cfg(target_arch = "x86_64")]
            {
                if std::arch::is_x86_feature_detected!("avx2") {
                    widths.push((true, transpose::<true>));
                }
            }
            // Widths with whole wide steps, wide steps and a remainder, and none.
            let shapes = [
                (16, 16),
                (16, 53),
                (37, 16),
                (5, 3),
                (33, 48),
                (16, 144),
                (32, 100),
            ];
            for (wide, transpose) in widths {
                for (rows, cols) in shapes {
                    let src: Vec<u8> = (0..rows * cols).map(|i| (i * 7 + i / 13) as u8).collect();
                    let mut dst = vec![0; rows * cols];
                    transpose(&src, cols, rows, cols, &mut dst, rows);
                    for r in 0..rows {
                        for c in 0..cols {
                            assert_eq!(
                                dst[c * rows + r],
                                src[r * cols + c],
                                "wide={wide} {rows}x{cols}"
                            );
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The permute path of nearest (where the CPU has it) gives the plain loop's
    /// bytes: reductions and enlargements, ratios whose pieces hold one pixel or
    /// many, rows that end mid-piece, gray and RGB.
    #[test]
    fn nearest_by_permutes_matches_the_plain_loop() {
        #[cfg(target_arch = "x86_64")]
        if permute::usable() {
            let shapes = [
                (256, 9, 64, 5),
                (512, 3, 64, 3),
                (1000, 2, 7, 2),
                (7, 4, 300, 9),
                (130, 5, 129, 4),
                (1, 1, 70, 2),
                (333, 6, 100, 6),
            ];
            for (w, h, dw, dh) in shapes {
                for c in [1u8, 3] {
                    let src = pattern(w, h, c, w + dw);
                    let plan = Plan::new(w, h, c, dw, dh, Filter::Nearest).unwrap();
                    assert!(matches!(plan.method, Method::Nearest { .. }));
                    let mut plain = vec![0; plan.dst_len];
                    let mut permuted = vec![0; plan.dst_len];
                    // SAFETY: `usable` has checked the CPU.
                    if c == 3 {
                        nearest::<3, false>(&plan, &src, 0, &mut plain);
                        unsafe { permute::nearest::<3>(&plan, &src, 0, &mut permuted) };
                    } else {
                        nearest::<1, false>(&plan, &src, 0, &mut plain);
                        unsafe { permute::nearest::<1>(&plan, &src, 0, &mut permuted) };
                    }
                    assert_eq!(permuted, plain, "{w}x{h}x{c} -> {dw}x{dh}");
                }
            }
            return;
        }
        eprintln!("skipped: this CPU lacks AVX-512 VBMI, so nearest never takes the permute path");
    }

    /// A deterministic image with edges and gradients, so that every filter has
    /// something to average and overshoot.
    fn pattern(width: u32, height: u32, channels: u8, seed: u32) -> Vec<u8> {
        let mut state = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
        let mut out = Vec::new();
        for y in 0..height {
            for x in 0..width {
                for c in 0..u32::from(channels) {
                    state ^= state << 13;
                    state ^= state >> 17;
                    state ^= state << 5;
                    let edge = if (x / 5 + y / 7 + c) % 2 == 0 {
                        200
                    } else {
                        30
                    };
                    out.push((edge + state % 40) as u8);
                }
            }
        }
        out
    }

    fn set_of(width: u32, height: u32, channels: u8, count: u32) -> ImageSet {
        let mut set = ImageSet::new(width, height, channels);
        for i in 0..count {
            set.push(&pattern(width, height, channels, i));
        }
        set
    }

    #[test]
    fn resize_refuses_zero_sizes() {
        let src = pattern(4, 4, 1, 0);
        assert!(matches!(
            resize_image(&src, 4, 4, 1, 0, 2, Filter::Box),
            Err(ResizeError::EmptyTarget {
                width: 0,
                height: 2
            })
        ));
        assert!(matches!(
            resize_image(&src, 4, 4, 1, 2, 0, Filter::Nearest),
            Err(ResizeError::EmptyTarget { .. })
        ));
        assert!(matches!(
            resize_image(&[], 0, 4, 1, 2, 2, Filter::Lanczos),
            Err(ResizeError::EmptySource {
                width: 0,
                height: 4
            })
        ));
    }

    #[test]
    fn resize_refuses_wrong_buffer_length() {
        let src = pattern(4, 4, 3, 0);
        let err = resize_image(&src[1..], 4, 4, 3, 2, 2, Filter::Bicubic).unwrap_err();
        assert!(matches!(
            err,
            ResizeError::BufferLength {
                expected: 48,
                actual: 47,
                ..
            }
        ));
        assert!(err.to_string().contains("needs 48 bytes"), "{err}");
        // Right length for gray, wrong for RGB.
        assert!(matches!(
            resize_image(&src[..16], 4, 4, 3, 2, 2, Filter::Box),
            Err(ResizeError::BufferLength { .. })
        ));
    }

    #[test]
    fn resize_refuses_other_channel_counts() {
        for channels in [0, 2, 4] {
            let src = vec![0; 16 * channels as usize];
            assert!(matches!(
                resize_image(&src, 4, 4, channels, 2, 2, Filter::Box),
                Err(ResizeError::UnsupportedChannels(c)) if c == channels
            ));
        }
    }

    #[test]
    fn resize_refuses_sizes_that_overflow() {
        assert!(matches!(
            resize_image(&[], u32::MAX, u32::MAX, 3, u32::MAX, u32::MAX, Filter::Box),
            Err(ResizeError::TooLarge { .. }) | Err(ResizeError::BufferLength { .. })
        ));
    }

    #[test]
    fn resize_to_the_same_size_copies() {
        let src = pattern(9, 7, 3, 3);
        for filter in Filter::ALL {
            assert_eq!(resize_image(&src, 9, 7, 3, 9, 7, filter).unwrap(), src);
        }
    }

    #[test]
    fn resize_of_a_flat_image_stays_flat() {
        // Weights are normalised per output pixel, so no filter may darken or
        // brighten a uniform image, in either direction of scaling.
        let src = vec![77; 13 * 11 * 3];
        for filter in Filter::ALL {
            for (dw, dh) in [(5, 4), (13, 3), (30, 25), (1, 1)] {
                let out = resize_image(&src, 13, 11, 3, dw, dh, filter).unwrap();
                assert_eq!(out.len(), dw as usize * dh as usize * 3);
                assert!(out.iter().all(|&v| v == 77), "{filter} to {dw}x{dh}");
            }
        }
    }

    #[test]
    fn box_halving_averages_blocks() {
        // Pillow rounds half up after each pass, so the right block's mean of 75.25
        // comes out as 76: rows give 150 and 1 (from 0.5), columns then 75.5.
        let src = [10, 11, 200, 100, 20, 21, 0, 1];
        let out = resize_image(&src, 4, 2, 1, 2, 1, Filter::Box).unwrap();
        assert_eq!(out, [16, 76]);
    }

    #[test]
    fn nearest_indices_follow_pillow() {
        assert_eq!(nearest_indices(4, 2), [1, 3]);
        assert_eq!(nearest_indices(3, 2), [0, 2]);
        assert_eq!(nearest_indices(2, 5), [0, 0, 1, 1, 1]);
        assert_eq!(nearest_indices(5, 5), [0, 1, 2, 3, 4]);
        for (src, dst) in [(97, 64), (1000, 3), (3, 1000), (1, 7)] {
            let idx = nearest_indices(src, dst);
            assert_eq!(idx.len(), dst as usize);
            assert!(idx.windows(2).all(|w| w[0] <= w[1]));
            assert!(idx.iter().all(|&i| i < src as usize));
        }
    }

    #[test]
    fn resize_set_matches_one_by_one_in_order() {
        for channels in [1, 3] {
            let set = set_of(37, 23, channels, 40);
            for filter in Filter::ALL {
                let out = resize_set(&set, 16, 11, filter).unwrap();
                assert_eq!((out.width, out.height, out.channels), (16, 11, channels));
                assert_eq!(out.len(), set.len());
                for i in 0..set.len() {
                    let one = resize_image(set.image(i), 37, 23, channels, 16, 11, filter).unwrap();
                    assert_eq!(out.image(i), &one[..], "{filter}, image {i}");
                }
            }
        }
    }

    #[test]
    fn resize_set_is_the_same_on_any_number_of_threads() {
        let set = set_of(50, 40, 3, 64);
        let on = |threads: usize| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap()
                .install(|| resize_set(&set, 17, 13, Filter::Lanczos).unwrap())
        };
        assert_eq!(on(1).pixels, on(4).pixels);
    }

    #[test]
    fn resize_set_of_no_images_is_empty() {
        let set = ImageSet::new(8, 8, 1);
        let out = resize_set(&set, 4, 4, Filter::Hamming).unwrap();
        assert_eq!(out.len(), 0);
        assert_eq!((out.width, out.height), (4, 4));
    }

    #[test]
    fn resize_set_refuses_what_resize_image_refuses() {
        let set = set_of(8, 8, 3, 2);
        assert!(matches!(
            resize_set(&set, 0, 4, Filter::Box),
            Err(ResizeError::EmptyTarget { .. })
        ));
        let mut odd = set_of(8, 8, 3, 2);
        odd.pixels.pop();
        assert!(matches!(
            resize_set(&odd, 4, 4, Filter::Box),
            Err(ResizeError::BufferLength { .. })
        ));
    }

    #[test]
    fn filter_names_are_the_serde_names() {
        for filter in Filter::ALL {
            let json = serde_json::to_value(filter).unwrap();
            assert_eq!(json, filter.name());
            assert_eq!(serde_json::from_value::<Filter>(json).unwrap(), filter);
        }
    }
}
