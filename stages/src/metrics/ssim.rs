//! SSIM and MS-SSIM (Wang, Bovik, Sheikh, Simoncelli 2004; Wang, Simoncelli, Bovik
//! 2003) for u8 images, between paired images and as ProGAN's diversity score.
//!
//! Two trusted implementations define what the numbers mean, and the fixtures in
//! `tests/reference/ssim` hold this module to them on real photographs:
//!
//! - [`ssim`] is scikit-image's `structural_similarity(a, b, gaussian_weights=True,
//!   sigma=1.5, use_sample_covariance=False, data_range=255, channel_axis=-1)`.
//!   scikit-image filters with `mode='reflect'` and then crops `(win_size - 1) / 2`
//!   pixels from every side before taking the mean, so every pixel that counts has its
//!   whole window inside the image and the border mode never matters: the mean is over
//!   the *valid* positions of the window, which is what this module computes.
//!   One difference in the settings: scikit-image sizes its Gaussian from `sigma`
//!   (`2 * floor(3.5 * sigma + 0.5) + 1` taps, 11 for 1.5), while here the window is
//!   [`SsimConfig::window`] taps whatever the sigma, as in pytorch-msssim; the defaults
//!   agree.
//! - [`ms_ssim`] is pytorch-msssim's `ms_ssim(a, b, data_range=255, win_size=11,
//!   win_sigma=1.5)`: per channel, the SSIM and contrast-structure (cs) maps of a
//!   separable Gaussian window over valid positions; between scales a 2x2 average pool
//!   that pads an odd side with one zero row or column on each side and counts the
//!   zeros in the mean (PyTorch's `avg_pool2d(kernel_size=2, padding=side % 2)`), so a
//!   `w`-pixel side becomes `ceil(w / 2)`; five scales weighted [`MS_SSIM_WEIGHTS`];
//!   `relu` on the per-channel mean cs of scales 1-4 and mean SSIM of scale 5; the
//!   weighted product per channel, then the mean over channels.
//!
//! **Small images.** pytorch-msssim refuses images whose smaller side is under 161
//! pixels, because from there on its fifth scale is narrower than the 11-pixel window.
//! The Progressive GAN code (`metrics/ms_ssim.py`, which scored 128x128 images, whose
//! fifth scale is 8 pixels) instead shrinks the window at such scales, and so does this
//! module: at a scale of `w`x`h` pixels the window is
//! `n = min(window, w, h)` taps and its sigma is `sigma * n / window`; an even `n`
//! puts the taps at half-pixel offsets from the centre (`i - (n - 1) / 2`), as ProGAN's
//! `_FSpecialGauss` does. For 64x64 images the scales are 64, 32, 16, 8 and 4 pixels:
//! the first three use the 11-tap window, the fourth 8 taps with sigma 1.0909 and the
//! fifth 4 taps with sigma 0.5455, so each of the last two scales has exactly one
//! window position. Images of 161 pixels and more never reach the shrink and match
//! pytorch-msssim exactly. Everything else (pooling, relu, the per-channel product)
//! stays pytorch-msssim's, which is not ProGAN's (ProGAN averages cs over channels
//! before the product and pools without padding), so the two differ slightly on small
//! images.
//!
//! **Modes.** [`ms_ssim_paired`] and [`ssim_paired`] compare `a[i]` with `b[i]`
//! (reconstruction quality); [`ms_ssim_diversity`] is ProGAN's diversity score, the mean
//! MS-SSIM over random pairs of distinct images of one set (lower means more varied).
//! ProGAN pairs consecutive images of freshly generated minibatches; for a stored set,
//! pairs drawn uniformly (with replacement) from a seeded stream are the equivalent.
//! Sets are scored in chunks of [`CHUNK`] pairs in parallel, each thread reusing its own
//! buffers, so memory stays a few image planes per thread however large the set; the
//! progress bar advances by one per pair (the caller sets its length).
//!
//! **Arithmetic.** The filtered maps are `f32`, as in pytorch-msssim, computed one
//! output row at a time from a ring of horizontally filtered rows. Pixel values are
//! centred on the mean of the two images before the squares and products are
//! filtered, which keeps `E[x²] - E[x]²` from cancelling away its precision. Means
//! over a map are summed in `f64`. An image compared with itself gives exactly 1.
//!
//! This module does not convert colour spaces (RGB is scored channel by channel, as
//! both references do) or resize images.

use gantry_datasets::ImageSet;
use indicatif::ProgressBar;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

/// MS-SSIM's per-scale exponents, finest scale first (Wang et al. 2003, Table 1).
pub const MS_SSIM_WEIGHTS: [f64; 5] = [0.0448, 0.2856, 0.3001, 0.2363, 0.1333];

/// Pairs scored between two progress updates. Large enough that both threads stay
/// busy, small enough that the bar moves every second or so at 256x256.
pub const CHUNK: usize = 64;

/// SSIM's parameters. The defaults are the papers' and both references'.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SsimConfig {
    /// Gaussian window width in pixels, odd (default 11).
    pub window: usize,
    /// Standard deviation of the Gaussian window in pixels (default 1.5).
    pub sigma: f64,
    /// Luminance stabiliser: `C1 = (k1 * data_range)²` (default 0.01).
    pub k1: f64,
    /// Contrast stabiliser: `C2 = (k2 * data_range)²` (default 0.03).
    pub k2: f64,
    /// The span of pixel values (default 255, for u8 images).
    pub data_range: f64,
}

impl Default for SsimConfig {
    fn default() -> Self {
        SsimConfig {
            window: 11,
            sigma: 1.5,
            k1: 0.01,
            k2: 0.03,
            data_range: 255.0,
        }
    }
}

/// The mean, population standard deviation and number of per-pair scores.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct MeanStd {
    pub mean: f64,
    pub std: f64,
    pub count: usize,
}

/// Why SSIM or MS-SSIM could not be computed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SsimError {
    #[error("SSIM setting `{field}` = {value} is invalid: {reason}")]
    Config {
        field: &'static str,
        value: String,
        reason: &'static str,
    },
    #[error("cannot compare {width}x{height} images with {channels} channels: they have no pixels")]
    Empty {
        width: u32,
        height: u32,
        channels: u8,
    },
    #[error(
        "image {which} has {actual} bytes, but a {width}x{height} image with {channels} \
         channels has {expected}"
    )]
    BufferLength {
        which: &'static str,
        width: u32,
        height: u32,
        channels: u8,
        expected: usize,
        actual: usize,
    },
    #[error(
        "SSIM needs images at least as large as its {window}x{window} window; \
         these are {width}x{height}"
    )]
    TooSmall {
        width: u32,
        height: u32,
        window: usize,
    },
    #[error(
        "cannot compare sets of different shapes: {}x{}x{} and {}x{}x{} (width x height x channels)",
        a.0, a.1, a.2, b.0, b.1, b.2
    )]
    ShapeMismatch {
        a: (u32, u32, u8),
        b: (u32, u32, u8),
    },
    #[error("paired sets must hold as many images: {a} and {b}")]
    CountMismatch { a: usize, b: usize },
    #[error("there are no images to compare")]
    NoImages,
    #[error("MS-SSIM diversity needs pairs of distinct images, but the set holds {0} image(s)")]
    TooFewImages(usize),
    #[error("MS-SSIM diversity needs at least one pair (`pairs` is 0)")]
    NoPairs,
}

/// Mean SSIM of two u8 HWC images, averaged over channels, as scikit-image's
/// `structural_similarity(a, b, gaussian_weights=True, sigma=1.5,
/// use_sample_covariance=False, data_range=255, channel_axis=-1)`: the mean over the
/// positions where the whole window lies inside the image.
pub fn ssim(
    a: &[u8],
    b: &[u8],
    width: u32,
    height: u32,
    channels: u8,
    cfg: &SsimConfig,
) -> Result<f64, SsimError> {
    let shape = Shape::checked(width, height, channels)?;
    shape.check_buffer("a", a)?;
    shape.check_buffer("b", b)?;
    let params = Params::new(cfg)?;
    shape.check_fits(cfg.window)?;
    Ok(ssim_unchecked(a, b, shape, &params, &mut Work::default()))
}

/// MS-SSIM of two u8 HWC images with pytorch-msssim's algorithm, and ProGAN's smaller
/// window at scales narrower than the window (see the module docs).
pub fn ms_ssim(
    a: &[u8],
    b: &[u8],
    width: u32,
    height: u32,
    channels: u8,
    cfg: &SsimConfig,
) -> Result<f64, SsimError> {
    let shape = Shape::checked(width, height, channels)?;
    shape.check_buffer("a", a)?;
    shape.check_buffer("b", b)?;
    let params = Params::new(cfg)?;
    Ok(ms_ssim_unchecked(
        a,
        b,
        shape,
        &params,
        &mut Work::default(),
    ))
}

/// MS-SSIM of `a[i]` against `b[i]` for every `i`, in parallel.
pub fn ms_ssim_paired(
    a: &ImageSet,
    b: &ImageSet,
    cfg: &SsimConfig,
    progress: &ProgressBar,
) -> Result<MeanStd, SsimError> {
    let (shape, count) = check_paired(a, b)?;
    let params = Params::new(cfg)?;
    score_pairs((0..count).map(|i| (i, i)), progress, |i, j, work| {
        ms_ssim_unchecked(a.image(i), b.image(j), shape, &params, work)
    })
}

/// SSIM of `a[i]` against `b[i]` for every `i`, in parallel.
pub fn ssim_paired(
    a: &ImageSet,
    b: &ImageSet,
    cfg: &SsimConfig,
    progress: &ProgressBar,
) -> Result<MeanStd, SsimError> {
    let (shape, count) = check_paired(a, b)?;
    let params = Params::new(cfg)?;
    shape.check_fits(cfg.window)?;
    score_pairs((0..count).map(|i| (i, i)), progress, |i, j, work| {
        ssim_unchecked(a.image(i), b.image(j), shape, &params, work)
    })
}

/// ProGAN's diversity score: the MS-SSIM of `pairs` random pairs `(i, j)`, `i != j`,
/// of one set. The pairs come from a ChaCha8 stream seeded with `seed`, drawn in order
/// before they are handed to threads, so the result is the same for every thread
/// count.
pub fn ms_ssim_diversity(
    set: &ImageSet,
    pairs: usize,
    seed: u64,
    cfg: &SsimConfig,
    progress: &ProgressBar,
) -> Result<MeanStd, SsimError> {
    let shape = check_set(set, "set")?;
    let count = set.len();
    if count < 2 {
        return Err(SsimError::TooFewImages(count));
    }
    if pairs == 0 {
        return Err(SsimError::NoPairs);
    }
    let params = Params::new(cfg)?;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let draws = (0..pairs).map(move |_| {
        let i = rng.random_range(0..count);
        // Drawing j from the other count - 1 images keeps the pairs uniform over i != j
        // without rejection, so every pair costs the same two draws.
        let j = rng.random_range(0..count - 1);
        (i, if j >= i { j + 1 } else { j })
    });
    score_pairs(draws, progress, |i, j, work| {
        ms_ssim_unchecked(set.image(i), set.image(j), shape, &params, work)
    })
}

// --- checks --------------------------------------------------------------------------

#[derive(Debug, Clone, Copy)]
struct Shape {
    width: u32,
    height: u32,
    channels: u8,
    /// Bytes per image.
    len: usize,
}

impl Shape {
    fn checked(width: u32, height: u32, channels: u8) -> Result<Shape, SsimError> {
        let len = (width as usize)
            .checked_mul(height as usize)
            .and_then(|n| n.checked_mul(channels as usize));
        match len {
            Some(len) if len > 0 => Ok(Shape {
                width,
                height,
                channels,
                len,
            }),
            _ => Err(SsimError::Empty {
                width,
                height,
                channels,
            }),
        }
    }

    fn check_buffer(&self, which: &'static str, pixels: &[u8]) -> Result<(), SsimError> {
        if pixels.len() == self.len {
            return Ok(());
        }
        Err(SsimError::BufferLength {
            which,
            width: self.width,
            height: self.height,
            channels: self.channels,
            expected: self.len,
            actual: pixels.len(),
        })
    }

    fn check_fits(&self, window: usize) -> Result<(), SsimError> {
        if (self.width as usize) < window || (self.height as usize) < window {
            return Err(SsimError::TooSmall {
                width: self.width,
                height: self.height,
                window,
            });
        }
        Ok(())
    }
}

fn check_set(set: &ImageSet, which: &'static str) -> Result<Shape, SsimError> {
    let shape = Shape::checked(set.width, set.height, set.channels)?;
    // `ImageSet::image` would silently drop a trailing partial image.
    if !set.pixels.len().is_multiple_of(shape.len) {
        return Err(SsimError::BufferLength {
            which,
            width: shape.width,
            height: shape.height,
            channels: shape.channels,
            expected: (set.pixels.len() / shape.len + 1) * shape.len,
            actual: set.pixels.len(),
        });
    }
    Ok(shape)
}

fn check_paired(a: &ImageSet, b: &ImageSet) -> Result<(Shape, usize), SsimError> {
    let dims = |s: &ImageSet| (s.width, s.height, s.channels);
    if dims(a) != dims(b) {
        return Err(SsimError::ShapeMismatch {
            a: dims(a),
            b: dims(b),
        });
    }
    let shape = check_set(a, "set a")?;
    check_set(b, "set b")?;
    if a.len() != b.len() {
        return Err(SsimError::CountMismatch {
            a: a.len(),
            b: b.len(),
        });
    }
    if a.is_empty() {
        return Err(SsimError::NoImages);
    }
    Ok((shape, a.len()))
}

/// A validated [`SsimConfig`] with its constants worked out.
struct Params {
    window: usize,
    sigma: f64,
    c1: f32,
    c2: f32,
}

impl Params {
    fn new(cfg: &SsimConfig) -> Result<Params, SsimError> {
        let bad = |field, value: String, reason| {
            Err(SsimError::Config {
                field,
                value,
                reason,
            })
        };
        if cfg.window.is_multiple_of(2) {
            return bad("window", cfg.window.to_string(), "it must be odd");
        }
        if !(cfg.sigma.is_finite() && cfg.sigma > 0.0) {
            return bad("sigma", cfg.sigma.to_string(), "it must be positive");
        }
        // Zero constants make flat regions of equal images 0/0.
        for (field, k) in [("k1", cfg.k1), ("k2", cfg.k2)] {
            if !(k.is_finite() && k > 0.0) {
                return bad(field, k.to_string(), "it must be positive");
            }
        }
        if !(cfg.data_range.is_finite() && cfg.data_range > 0.0) {
            return bad(
                "data_range",
                cfg.data_range.to_string(),
                "it must be positive",
            );
        }
        Ok(Params {
            window: cfg.window,
            sigma: cfg.sigma,
            c1: ((cfg.k1 * cfg.data_range).powi(2)) as f32,
            c2: ((cfg.k2 * cfg.data_range).powi(2)) as f32,
        })
    }
}

// --- scoring sets --------------------------------------------------------------------

/// Scores `pairs` chunk by chunk, in parallel within a chunk; the scores are folded in
/// pair order, so the result does not depend on how rayon splits the work.
fn score_pairs(
    pairs: impl Iterator<Item = (usize, usize)>,
    progress: &ProgressBar,
    score: impl Fn(usize, usize, &mut Work) -> f64 + Sync,
) -> Result<MeanStd, SsimError> {
    let mut pairs = pairs;
    let mut chunk = Vec::with_capacity(CHUNK);
    let mut scores = Vec::with_capacity(CHUNK);
    let mut stats = Welford::default();
    loop {
        chunk.clear();
        chunk.extend(pairs.by_ref().take(CHUNK));
        if chunk.is_empty() {
            break;
        }
        chunk
            .par_iter()
            .map_init(Work::default, |work, &(i, j)| score(i, j, work))
            .collect_into_vec(&mut scores);
        scores.iter().for_each(|&s| stats.push(s));
        progress.inc(chunk.len() as u64);
    }
    if stats.count == 0 {
        return Err(SsimError::NoImages);
    }
    Ok(stats.finish())
}

#[derive(Default)]
struct Welford {
    count: usize,
    mean: f64,
    m2: f64,
}

impl Welford {
    fn push(&mut self, x: f64) {
        self.count += 1;
        let delta = x - self.mean;
        self.mean += delta / self.count as f64;
        self.m2 += delta * (x - self.mean);
    }

    fn finish(&self) -> MeanStd {
        MeanStd {
            mean: self.mean,
            std: (self.m2 / self.count as f64).sqrt(),
            count: self.count,
        }
    }
}

// --- one pair ------------------------------------------------------------------------

fn ssim_unchecked(a: &[u8], b: &[u8], shape: Shape, params: &Params, work: &mut Work) -> f64 {
    let (w, h) = (shape.width as usize, shape.height as usize);
    let channels = shape.channels as usize;
    gaussian_taps(params.window, params.sigma, &mut work.taps);
    let mut total = 0.0;
    for ch in 0..channels {
        let offset = work.load_channel(a, b, ch, channels);
        let stats = work.plane_stats(w, h, offset, params);
        total += stats.ssim;
    }
    total / channels as f64
}

fn ms_ssim_unchecked(a: &[u8], b: &[u8], shape: Shape, params: &Params, work: &mut Work) -> f64 {
    let channels = shape.channels as usize;
    let last = MS_SSIM_WEIGHTS.len() - 1;
    let mut total = 0.0;
    for ch in 0..channels {
        let offset = work.load_channel(a, b, ch, channels);
        let (mut w, mut h) = (shape.width as usize, shape.height as usize);
        let mut value = 1.0;
        for (scale, &weight) in MS_SSIM_WEIGHTS.iter().enumerate() {
            let n = params.window.min(w).min(h);
            let sigma = params.sigma * n as f64 / params.window as f64;
            gaussian_taps(n, sigma, &mut work.taps);
            let stats = work.plane_stats(w, h, offset, params);
            let term = if scale == last {
                stats.ssim
            } else {
                (w, h) = work.pool(w, h);
                stats.cs
            };
            value *= term.max(0.0).powf(weight);
        }
        total += value;
    }
    total / channels as f64
}

/// `n` Gaussian taps summing to 1, centred between the middle two when `n` is even.
fn gaussian_taps(n: usize, sigma: f64, taps: &mut Vec<f32>) {
    let centre = (n as f64 - 1.0) / 2.0;
    let weight = |i: usize| (-(i as f64 - centre).powi(2) / (2.0 * sigma * sigma)).exp();
    let sum: f64 = (0..n).map(weight).sum();
    taps.clear();
    taps.extend((0..n).map(|i| (weight(i) / sum) as f32));
}

struct PlaneStats {
    ssim: f64,
    cs: f64,
}

/// The five filtered quantities, in this order in every buffer below.
const X: usize = 0;
const Y: usize = 1;
const XX: usize = 2;
const YY: usize = 3;
const XY: usize = 4;
const QUANTITIES: usize = 5;

/// Per-thread buffers, grown to the largest image seen and reused.
#[derive(Default)]
struct Work {
    /// The current scale of the two images, one channel, row-major `f32`.
    x: Vec<f32>,
    y: Vec<f32>,
    /// The next scale while it is being pooled.
    x_next: Vec<f32>,
    y_next: Vec<f32>,
    taps: Vec<f32>,
    /// One input row of each quantity.
    rows: Vec<f32>,
    /// The last `taps.len()` horizontally filtered rows of each quantity.
    ring: Vec<f32>,
    /// Where the rows of one quantity's window start in `ring`, top row first.
    ring_rows: Vec<usize>,
    /// One fully filtered output row of each quantity.
    out: Vec<f32>,
    /// Per-pixel SSIM and cs of one output row.
    ssim_row: Vec<f32>,
    cs_row: Vec<f32>,
}

impl Work {
    /// Copies channel `ch` of both images into `x` and `y`; returns the value to centre
    /// them on (their joint mean, rounded, so that it is exact in `f32`).
    fn load_channel(&mut self, a: &[u8], b: &[u8], ch: usize, channels: usize) -> f32 {
        for (src, dst) in [(a, &mut self.x), (b, &mut self.y)] {
            dst.clear();
            dst.extend(src.chunks_exact(channels).map(|px| px[ch] as f32));
        }
        // Sums of u8 values are exact in f64.
        let sum = sum_f64(&self.x) + sum_f64(&self.y);
        (sum / (2 * self.x.len()) as f64).round() as f32
    }

    /// Mean SSIM and cs over the valid window positions of `x` against `y` (both
    /// `w`x`h`), with the window in `taps`.
    fn plane_stats(&mut self, w: usize, h: usize, offset: f32, params: &Params) -> PlaneStats {
        let n = self.taps.len();
        let (ow, oh) = (w + 1 - n, h + 1 - n);
        // Rows are padded to whole blocks of LANES outputs, so that the filters never
        // need a scalar tail; the padding is computed and ignored.
        let out_stride = ow.next_multiple_of(LANES);
        let row_stride = out_stride + n - 1;
        self.rows.clear();
        self.rows.resize(QUANTITIES * row_stride, 0.0);
        self.ring.resize(QUANTITIES * n * out_stride, 0.0);
        self.out.resize(QUANTITIES * out_stride, 0.0);
        self.ssim_row.resize(ow, 0.0);
        self.cs_row.resize(ow, 0.0);
        let taps = &self.taps[..];
        let (mut ssim_sum, mut cs_sum) = (0.0f64, 0.0f64);
        for r in 0..h {
            let (xr, yr) = (&self.x[r * w..][..w], &self.y[r * w..][..w]);
            let (px, rest) = self.rows.split_at_mut(row_stride);
            let (py, rest) = rest.split_at_mut(row_stride);
            let (pxx, rest) = rest.split_at_mut(row_stride);
            let (pyy, pxy) = rest.split_at_mut(row_stride);
            let (px, py, pxx, pyy) = (&mut px[..w], &mut py[..w], &mut pxx[..w], &mut pyy[..w]);
            let pxy = &mut pxy[..w];
            for j in 0..w {
                let (u, v) = (xr[j] - offset, yr[j] - offset);
                px[j] = u;
                py[j] = v;
                pxx[j] = u * u;
                pyy[j] = v * v;
                pxy[j] = u * v;
            }
            let slot = r % n;
            for q in 0..QUANTITIES {
                let src = &self.rows[q * row_stride..][..row_stride];
                let dst = &mut self.ring[(q * n + slot) * out_stride..][..out_stride];
                filter_row(src, taps, dst);
            }
            if r + 1 < n {
                continue;
            }
            let top = r + 1 - n;
            for q in 0..QUANTITIES {
                self.ring_rows.clear();
                self.ring_rows
                    .extend((0..n).map(|k| (q * n + (top + k) % n) * out_stride));
                let ring = &self.ring;
                let starts = &self.ring_rows;
                let dst = &mut self.out[q * out_stride..][..out_stride];
                weighted_sum(taps, |k| &ring[starts[k]..], dst);
            }
            score_row(
                &self.out,
                out_stride,
                offset,
                params,
                &mut self.ssim_row,
                &mut self.cs_row,
            );
            ssim_sum += sum_f64(&self.ssim_row);
            cs_sum += sum_f64(&self.cs_row);
        }
        let positions = (ow * oh) as f64;
        PlaneStats {
            ssim: ssim_sum / positions,
            cs: cs_sum / positions,
        }
    }

    /// Replaces `x` and `y` by their 2x2 average pools; returns the new size.
    fn pool(&mut self, w: usize, h: usize) -> (usize, usize) {
        let (nw, nh) = (w.div_ceil(2), h.div_ceil(2));
        for (src, dst) in [(&self.x, &mut self.x_next), (&self.y, &mut self.y_next)] {
            dst.clear();
            dst.resize(nw * nh, 0.0);
            pool_plane(src, w, h, dst, nw, nh);
        }
        std::mem::swap(&mut self.x, &mut self.x_next);
        std::mem::swap(&mut self.y, &mut self.y_next);
        (nw, nh)
    }
}

/// Per-pixel SSIM and cs of one output row, from its filtered quantities in `out`
/// (`stride` apart).
fn score_row(
    out: &[f32],
    stride: usize,
    offset: f32,
    params: &Params,
    ssim_row: &mut [f32],
    cs_row: &mut [f32],
) {
    let ow = ssim_row.len().min(cs_row.len());
    let q = |i: usize| &out[i * stride..][..ow];
    let (mx, my, exx, eyy, exy) = (q(X), q(Y), q(XX), q(YY), q(XY));
    let (c1, c2) = (params.c1, params.c2);
    for j in 0..ow {
        // The filtered values are of centred pixels: variances need no offset,
        // luminance does.
        let (ux, uy) = (mx[j], my[j]);
        let vx = exx[j] - ux * ux;
        let vy = eyy[j] - uy * uy;
        let vxy = exy[j] - ux * uy;
        let (m1, m2) = (ux + offset, uy + offset);
        // Written so that x == y gives numerator == denominator bit for bit.
        let cs = (2.0 * vxy + c2) / (vx + vy + c2);
        let luminance = (2.0 * (m1 * m2) + c1) / (m1 * m1 + m2 * m2 + c1);
        cs_row[j] = cs;
        ssim_row[j] = luminance * cs;
    }
}

/// `dst[j] = Σ_k taps[k] · src[j + k]`.
fn filter_row(src: &[f32], taps: &[f32], dst: &mut [f32]) {
    weighted_sum(taps, |k| &src[k..], dst);
}

/// Output pixels computed together: enough independent accumulators to hide the
/// latency of the adds, few enough to stay in registers.
const LANES: usize = 16;

/// `dst[j] = Σ_k taps[k] · row(k)[j]`, a block of [`LANES`] outputs at a time with
/// the sums in registers, which the compiler turns into SIMD multiply-adds; the taps
/// are added in order, so every block gives the same bits as the scalar tail.
#[inline(always)]
fn weighted_sum<'a>(taps: &[f32], row: impl Fn(usize) -> &'a [f32], dst: &mut [f32]) {
    let mut blocks = dst.chunks_exact_mut(LANES);
    let mut j = 0;
    for block in &mut blocks {
        let mut acc = [0.0f32; LANES];
        for (k, &t) in taps.iter().enumerate() {
            let src = &row(k)[j..][..LANES];
            for (a, &v) in acc.iter_mut().zip(src) {
                *a += t * v;
            }
        }
        block.copy_from_slice(&acc);
        j += LANES;
    }
    for (i, d) in blocks.into_remainder().iter_mut().enumerate() {
        *d = taps
            .iter()
            .enumerate()
            .fold(0.0, |acc, (k, &t)| acc + t * row(k)[j + i]);
    }
}

/// PyTorch's `avg_pool2d(kernel_size=2, padding=(h % 2, w % 2))`: an odd side gets a
/// zero before its first pixel (and one after its last, which no window reaches), and
/// every output is a quarter of its 2x2 sum, padding included.
fn pool_plane(src: &[f32], w: usize, h: usize, dst: &mut [f32], nw: usize, nh: usize) {
    let (pad_x, pad_y) = (w % 2, h % 2);
    let at = |r: usize, c: usize| -> f32 {
        // r and c are positions in the padded plane.
        if r < pad_y || c < pad_x {
            0.0
        } else {
            src[(r - pad_y) * w + (c - pad_x)]
        }
    };
    for i in 0..nh {
        let (r0, r1) = (2 * i, 2 * i + 1);
        let row = &mut dst[i * nw..][..nw];
        if pad_x == 0 && r0 >= pad_y {
            // The common case, no padding on this row: plain slices.
            let a = &src[(r0 - pad_y) * w..][..w];
            let b = &src[(r1 - pad_y) * w..][..w];
            for (j, d) in row.iter_mut().enumerate() {
                *d = (a[2 * j] + a[2 * j + 1] + b[2 * j] + b[2 * j + 1]) * 0.25;
            }
        } else {
            for (j, d) in row.iter_mut().enumerate() {
                let (c0, c1) = (2 * j, 2 * j + 1);
                *d = (at(r0, c0) + at(r0, c1) + at(r1, c0) + at(r1, c1)) * 0.25;
            }
        }
    }
}

/// Sum in `f64` with eight independent accumulators so the loop vectorises.
fn sum_f64(values: &[f32]) -> f64 {
    let mut lanes = [0.0f64; 8];
    let mut chunks = values.chunks_exact(8);
    for chunk in chunks.by_ref() {
        for (lane, &v) in lanes.iter_mut().zip(chunk) {
            *lane += v as f64;
        }
    }
    let tail: f64 = chunks.remainder().iter().map(|&v| v as f64).sum();
    lanes.iter().sum::<f64>() + tail
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn taps_are_normalised_and_symmetric() {
        let mut taps = Vec::new();
        for (n, sigma) in [(11, 1.5), (8, 1.5 * 8.0 / 11.0), (4, 0.545), (1, 0.136)] {
            gaussian_taps(n, sigma, &mut taps);
            assert_eq!(taps.len(), n);
            let sum: f32 = taps.iter().sum();
            assert!((sum - 1.0).abs() < 1e-6, "{n}: {sum}");
            for i in 0..n {
                assert_eq!(taps[i], taps[n - 1 - i]);
            }
        }
    }

    #[test]
    fn pooling_matches_avg_pool2d_padding() {
        // 3x3 input, padded with a zero row on top and a zero column on the left.
        let src: Vec<f32> = (1..=9).map(|v| v as f32).collect();
        let mut dst = vec![0.0; 4];
        pool_plane(&src, 3, 3, &mut dst, 2, 2);
        assert_eq!(
            dst,
            vec![1.0 / 4.0, (2.0 + 3.0) / 4.0, (4.0 + 7.0) / 4.0, 28.0 / 4.0]
        );
        // 4x2: no padding.
        let src: Vec<f32> = (1..=8).map(|v| v as f32).collect();
        let mut dst = vec![0.0; 2];
        pool_plane(&src, 4, 2, &mut dst, 2, 1);
        assert_eq!(
            dst,
            vec![(1.0 + 2.0 + 5.0 + 6.0) / 4.0, (3.0 + 4.0 + 7.0 + 8.0) / 4.0]
        );
    }

    #[test]
    fn welford_matches_two_pass() {
        let xs = [0.25, 0.5, 0.125, 0.875, 0.5];
        let mut w = Welford::default();
        xs.iter().for_each(|&x| w.push(x));
        let r = w.finish();
        let mean = xs.iter().sum::<f64>() / 5.0;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / 5.0;
        assert!((r.mean - mean).abs() < 1e-15);
        assert!((r.std - var.sqrt()).abs() < 1e-15);
        assert_eq!(r.count, 5);
    }

    #[test]
    fn invalid_configs_are_refused() {
        let cases = [
            SsimConfig {
                window: 10,
                ..Default::default()
            },
            SsimConfig {
                sigma: 0.0,
                ..Default::default()
            },
            SsimConfig {
                k2: f64::NAN,
                ..Default::default()
            },
            SsimConfig {
                data_range: -1.0,
                ..Default::default()
            },
        ];
        for cfg in cases {
            let err = ms_ssim(&[0; 16 * 16], &[0; 16 * 16], 16, 16, 1, &cfg);
            assert!(
                matches!(err, Err(SsimError::Config { .. })),
                "{cfg:?}: {err:?}"
            );
        }
    }
}
