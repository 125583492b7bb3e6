//! Sliced Wasserstein distance (SWD) between two image sets over Laplacian-pyramid
//! neighbourhoods, as Karras et al. 2018 (Progressive GAN, Appendix D) define it and
//! report it in their tables.
//!
//! The algorithm and its conventions follow the authors' published
//! `metrics/sliced_wasserstein.py`; `tests/reference/swd/swd_numpy.py` is a NumPy port
//! of it, and `tests/swd_reference.rs` holds this module to that port on real
//! photographs, within the port's own run-to-run spread.
//!
//! ```no_run
//! # use gantry_datasets::{Dataset, ImageSet};
//! # use gantry_stages::metrics::swd::{swd, SwdConfig};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let images = |path: &str| -> Result<ImageSet, Box<dyn std::error::Error>> {
//!     let mut d = Dataset::load(path.as_ref())?;
//!     d.parts.remove("images").ok_or_else(|| "no images".into())
//! };
//! let (real, fake) = (images("real.safetensors")?, images("fake.safetensors")?);
//! let result = swd(&real, &fake, &SwdConfig::default(), &indicatif::ProgressBar::hidden())?;
//! for (resolution, distance) in &result.levels {
//!     println!("SWD x1e3 at {resolution}: {distance:.2}");
//! }
//! println!("average: {:.2}", result.average);
//! # Ok(())
//! # }
//! ```
//!
//! # What is computed
//!
//! - **Pixels** are the u8 values as they are (0..255, no rescaling), like the original
//!   which feeds uint8 images. The per-channel normalisation below makes the result
//!   independent of any affine pixel scale anyway.
//! - **Pyramid.** `down` convolves with the 5x5 binomial filter
//!   `[1,4,6,4,1]ᵀ[1,4,6,4,1] / 256` and keeps the even rows and columns; `up` puts a
//!   level on the even pixels of a zero image of the finer size and convolves with four
//!   times the filter (OpenCV's `pyrDown`/`pyrUp`, as the original's comments say).
//!   Borders reflect about the edge pixel without repeating it (`d c b | a b c d | c b a`,
//!   SciPy's `mode="mirror"`, which the original uses). Level `i` is
//!   `G_i - up(G_{i+1})`; the coarsest level is the Gaussian level itself. The filter is
//!   separable, so it runs as two 5-tap passes, in `f32`.
//! - **Levels** are made while the smaller side is at least
//!   [`SwdConfig::min_resolution`] (16): 64x64 images give 64, 32 and 16. A side halves
//!   to `ceil(side / 2)`; for odd sides (the original only takes powers of two) `up`
//!   fills a zero image of the odd finer size, so the Laplacian stays defined. A level
//!   is reported by its smaller side.
//! - **Descriptors.** Per image and level, [`SwdConfig::nhoods_per_image`] (128)
//!   neighbourhoods of [`SwdConfig::nhood_size`]² (7x7) pixels, all channels, at centres
//!   drawn uniformly with replacement among the positions where the whole neighbourhood
//!   lies inside the level, as the original does.
//! - **Normalisation.** Per level and per set, each channel is centred and scaled by the
//!   mean and population standard deviation of that channel over every descriptor of
//!   that level of that set (duplicates counted as often as drawn). A channel that is
//!   constant over the whole set (standard deviation 0; the original would divide by
//!   zero) is only centred, so it contributes zeros.
//! - **Distance.** Per level, [`SwdConfig::dir_repeats`] (4) repeats of
//!   [`SwdConfig::dirs_per_repeat`] (128) random directions, isotropic Gaussian vectors
//!   normalised to unit length in `f64` and then rounded to `f32`, shared by both sets.
//!   Every descriptor is projected on every direction in `f32`; each direction's
//!   projections are sorted in both sets and the sorted values are subtracted pairwise:
//!   the mean absolute difference over descriptors and directions is one repeat's
//!   distance (the 1-Wasserstein distance of the two projected samples, averaged over
//!   directions), and the level's distance is the mean over repeats. Distances are
//!   multiplied by 1e3, as in the paper's tables; [`SwdResult::average`] is the mean
//!   over levels.
//!
//! Where this module departs from the original's arithmetic, it is to be more exact:
//! statistics, differences and means are accumulated in `f64` (the original uses
//! `f32`), and projections use fused multiply-adds where the CPU has them. Neither
//! changes a result beyond its sixth significant digit, far inside the run-to-run
//! spread.
//!
//! # Randomness
//!
//! The same two sets and the same [`SwdConfig::seed`] give bit-identical results on one
//! machine, whatever the number of threads. Every random number comes
//! from a ChaCha8 stream keyed by what it is for, never from a shared sequential stream
//! consumed in parallel: the centres of image `i` of set `s` at level `l` come from the
//! stream `(seed, "centres", l, s, i)`, direction `d` of level `l` from
//! `(seed, "directions", l, d)`. The two sets draw independent centres, as in the
//! original, so an SWD of a set with itself is small but not zero: it measures the
//! sampling noise of the neighbourhoods. Sums are made in a fixed order (per image,
//! then in image order), and each direction's projections are sorted on one thread.
//! The NumPy port draws from another generator, so the two agree in distribution, not
//! bit for bit.
//!
//! # Speed and memory
//!
//! One level is processed at a time. First the images of both sets are turned into
//! descriptors in parallel (rayon, batches of [`BATCH_IMAGES`] images, one image's
//! pyramid of scratch per thread); a centre drawn twice is stored and projected once
//! (at 16x16 there are only 100 centres for 128 draws). Then the directions are taken
//! [`CHUNK_DIRS`] at a time: each batch's descriptors are projected by a small `f32`
//! kernel that keeps a 6-descriptor x 16-direction tile of sums in registers
//! (AVX2+FMA when the CPU has them, detected at run time; portable loops otherwise),
//! written so that each direction's projections are contiguous; then every direction
//! of the chunk is sorted, in parallel over directions, by a radix sort on the
//! order-preserving integer keys of the `f32` values (one pass on the top digit
//! through memory, then two passes per bucket inside the cache).
//!
//! With `N` images per set, `n = N * nhoods_per_image` descriptors per set and
//! `K = channels * nhood_size²` components per descriptor, the memory at the peak
//! (beyond the two input sets) is about
//!
//! ```text
//!   2·n·K·4          descriptors of the current level, both sets (less where centres repeat)
//! + 2·n·CHUNK_DIRS·4 projections on one chunk of directions, both sets
//! + 2·n·4            which stored descriptor each draw is
//! + T·3·n·4          radix-sort buffers, per thread (T threads)
//! ```
//!
//! bytes: for RGB and the defaults, `N × (147 + 64 + 1 + 1.5·T) KiB`, about 2.1 GB for
//! 10,000 images per set on 2 threads, linear in `N` and independent of the image size
//! and of the number of levels. (The original keeps the descriptors of every level of
//! both sets: `N × 441 KiB` for three levels.)
//!
//! # Progress
//!
//! [`swd`] sets the bar's length to the number of image passes it will make (per level,
//! both sets once for descriptors and once per chunk of directions) and advances it
//! after every batch of images.

use std::f64::consts::TAU;

use gantry_datasets::ImageSet;
use indicatif::ProgressBar;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// Images per parallel work item and per matrix product: large enough to keep the
/// product efficient, small enough that a thread's scratch stays in cache.
pub const BATCH_IMAGES: usize = 16;

/// Directions projected per pass over the descriptors. The projections of one chunk
/// are what must be held for sorting, so this trades memory (`2·n·4` bytes per
/// direction) against repeated passes over the descriptors.
pub const CHUNK_DIRS: usize = 64;

/// Settings of the metric; the defaults are the paper's. (The JSON Schema is for
/// `gantry schema`, which documents the `evaluate` stage's `swd:` settings.)
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct SwdConfig {
    /// Side of the square neighbourhoods, odd (7).
    pub nhood_size: usize,
    /// Neighbourhoods drawn per image and level (128).
    pub nhoods_per_image: usize,
    /// Independent sets of random directions per level; their distances are averaged (4).
    pub dir_repeats: usize,
    /// Random directions per repeat (128).
    pub dirs_per_repeat: usize,
    /// Levels are made while the smaller side is at least this (16). Must be at least
    /// `nhood_size`, so that every level holds a neighbourhood.
    pub min_resolution: u32,
    /// Seed of the neighbourhood centres and of the directions.
    pub seed: u64,
}

impl Default for SwdConfig {
    fn default() -> Self {
        SwdConfig {
            nhood_size: 7,
            nhoods_per_image: 128,
            dir_repeats: 4,
            dirs_per_repeat: 128,
            min_resolution: 16,
            seed: 0,
        }
    }
}

/// SWD ×1e3 per pyramid level and their mean.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SwdResult {
    /// (resolution, distance ×1e3) from the finest level down; the resolution is the
    /// level's smaller side.
    pub levels: Vec<(u32, f64)>,
    /// Mean of the level distances (×1e3).
    pub average: f64,
}

/// Why two sets could not be compared.
#[derive(Debug, thiserror::Error)]
pub enum SwdError {
    #[error("SWD setting `{field}` = {value} is invalid: {reason}")]
    InvalidConfig {
        field: &'static str,
        value: u64,
        reason: &'static str,
    },
    #[error("the {which} set is malformed: {reason}")]
    MalformedSet { which: &'static str, reason: String },
    #[error("the {which} set has no images")]
    EmptySet { which: &'static str },
    #[error(
        "the sets must hold as many images: real has {real}, fake has {fake} \
         (sample the larger one down)"
    )]
    CountMismatch { real: usize, fake: usize },
    #[error(
        "the sets must have one image shape: real images are {}x{}x{}, fake images {}x{}x{} \
         (resize one set to the other first)",
        real.0, real.1, real.2, fake.0, fake.1, fake.2
    )]
    ShapeMismatch {
        real: (u32, u32, u8),
        fake: (u32, u32, u8),
    },
    #[error(
        "images of {width}x{height} are too small for SWD: the smaller side must be at \
         least min_resolution = {min_resolution} (and the {nhood_size}x{nhood_size} \
         neighbourhood)"
    )]
    TooSmall {
        width: u32,
        height: u32,
        min_resolution: u32,
        nhood_size: usize,
    },
    #[error(
        "{count} neighbourhoods per set is more than SWD can sort \
         (at most {max}; use fewer images or nhoods_per_image)"
    )]
    TooManyDescriptors { count: u128, max: u32 },
}

/// The sliced Wasserstein distance between `real` and `fake`, ×1e3, per pyramid level
/// (finest first) and averaged; see the module documentation for the exact algorithm.
///
/// Both sets must hold the same number of images of one shape (gray, RGB or any other
/// channel count). `progress` gets its length set and advances as images are processed.
pub fn swd(
    real: &ImageSet,
    fake: &ImageSet,
    cfg: &SwdConfig,
    progress: &ProgressBar,
) -> Result<SwdResult, SwdError> {
    compare(real, fake, cfg, progress, SetTag::Fake)
}

/// [`swd`], with the stream of the fake set's centres chosen by the caller: the tests
/// give both sets the same centres to show that identical sets then score exactly 0.
fn compare(
    real: &ImageSet,
    fake: &ImageSet,
    cfg: &SwdConfig,
    progress: &ProgressBar,
    fake_tag: SetTag,
) -> Result<SwdResult, SwdError> {
    check_config(cfg)?;
    let count = check_sets(real, fake)?;
    let dims = level_dims(real.width, real.height, cfg)?;
    let descriptors = count as u128 * cfg.nhoods_per_image as u128;
    if descriptors > u32::MAX as u128 {
        return Err(SwdError::TooManyDescriptors {
            count: descriptors,
            max: u32::MAX,
        });
    }

    let total_dirs = cfg.dir_repeats * cfg.dirs_per_repeat;
    let chunks = total_dirs.div_ceil(CHUNK_DIRS);
    progress.set_length((dims.len() * 2 * count * (1 + chunks)) as u64);

    let geometry = Geometry::new(real, cfg);
    let mut levels = Vec::with_capacity(dims.len());
    // Every level has as many draws, so the projection buffers (hundreds of MB at 10,000
    // images) are made once: fresh ones per level cost seconds of page faults.
    let (mut proj_real, mut proj_fake) = (Vec::new(), Vec::new());
    let (mut real_buf, mut fake_buf) = (Vec::new(), Vec::new());
    for (level, &(w, h)) in dims.iter().enumerate() {
        let _span = tracing::debug_span!("swd level", level, width = w, height = h).entered();
        let mut real_desc = describe(
            real,
            &geometry,
            &dims,
            level,
            SetTag::Real,
            std::mem::take(&mut real_buf),
            progress,
        );
        let mut fake_desc = describe(
            fake,
            &geometry,
            &dims,
            level,
            fake_tag,
            std::mem::take(&mut fake_buf),
            progress,
        );
        real_desc.normalise(geometry.channels, geometry.patch_area);
        fake_desc.normalise(geometry.channels, geometry.patch_area);

        let sums = direction_sums(
            &real_desc,
            &fake_desc,
            &geometry,
            level,
            (&mut proj_real, &mut proj_fake),
            progress,
        );
        let n = (count * cfg.nhoods_per_image) as f64;
        let repeat_mean: f64 = sums
            .chunks(cfg.dirs_per_repeat)
            .map(|s| s.iter().sum::<f64>() / (n * cfg.dirs_per_repeat as f64))
            .sum::<f64>()
            / cfg.dir_repeats as f64;
        (real_buf, fake_buf) = (real_desc.data, fake_desc.data);
        let distance = repeat_mean * 1e3;
        tracing::debug!(level, distance, "SWD x1e3");
        levels.push((w.min(h) as u32, distance));
    }
    let average = levels.iter().map(|&(_, d)| d).sum::<f64>() / levels.len() as f64;
    Ok(SwdResult { levels, average })
}

fn check_config(cfg: &SwdConfig) -> Result<(), SwdError> {
    let invalid = |field, value: usize, reason| SwdError::InvalidConfig {
        field,
        value: value as u64,
        reason,
    };
    if cfg.nhood_size == 0 || cfg.nhood_size.is_multiple_of(2) {
        return Err(invalid(
            "nhood_size",
            cfg.nhood_size,
            "must be odd, so that a neighbourhood has a centre pixel",
        ));
    }
    if cfg.nhoods_per_image == 0 {
        return Err(invalid("nhoods_per_image", 0, "must be at least 1"));
    }
    if cfg.dir_repeats == 0 {
        return Err(invalid("dir_repeats", 0, "must be at least 1"));
    }
    if cfg.dirs_per_repeat == 0 {
        return Err(invalid("dirs_per_repeat", 0, "must be at least 1"));
    }
    if (cfg.min_resolution as usize) < cfg.nhood_size {
        return Err(invalid(
            "min_resolution",
            cfg.min_resolution as usize,
            "must be at least nhood_size, so that the coarsest level holds a neighbourhood",
        ));
    }
    Ok(())
}

fn check_sets(real: &ImageSet, fake: &ImageSet) -> Result<usize, SwdError> {
    for (which, set) in [("real", real), ("fake", fake)] {
        if set.width == 0 || set.height == 0 || set.channels == 0 {
            return Err(SwdError::MalformedSet {
                which,
                reason: format!(
                    "its images are {}x{} with {} channels",
                    set.width, set.height, set.channels
                ),
            });
        }
        if set.pixels.len() % set.image_len() != 0 {
            return Err(SwdError::MalformedSet {
                which,
                reason: format!(
                    "{} bytes of pixels is not a whole number of {}x{}x{} images",
                    set.pixels.len(),
                    set.width,
                    set.height,
                    set.channels
                ),
            });
        }
        if set.is_empty() {
            return Err(SwdError::EmptySet { which });
        }
    }
    let shape = |s: &ImageSet| (s.width, s.height, s.channels);
    if shape(real) != shape(fake) {
        return Err(SwdError::ShapeMismatch {
            real: shape(real),
            fake: shape(fake),
        });
    }
    if real.len() != fake.len() {
        return Err(SwdError::CountMismatch {
            real: real.len(),
            fake: fake.len(),
        });
    }
    Ok(real.len())
}

/// (width, height) of every level, finest first.
fn level_dims(width: u32, height: u32, cfg: &SwdConfig) -> Result<Vec<(usize, usize)>, SwdError> {
    let (mut w, mut h) = (width as usize, height as usize);
    let min = cfg.min_resolution as usize;
    let mut dims = Vec::new();
    while w.min(h) >= min {
        dims.push((w, h));
        if w.min(h) == 1 {
            break;
        }
        (w, h) = (w.div_ceil(2), h.div_ceil(2));
    }
    if dims.is_empty() {
        return Err(SwdError::TooSmall {
            width,
            height,
            min_resolution: cfg.min_resolution,
            nhood_size: cfg.nhood_size,
        });
    }
    Ok(dims)
}

/// What every level shares: the settings in the units the loops want.
struct Geometry<'a> {
    cfg: &'a SwdConfig,
    channels: usize,
    /// Pixels per neighbourhood and channel (`nhood_size²`).
    patch_area: usize,
    /// Components per descriptor (`channels * patch_area`).
    dim: usize,
}

impl<'a> Geometry<'a> {
    fn new(set: &ImageSet, cfg: &'a SwdConfig) -> Self {
        let channels = set.channels as usize;
        let patch_area = cfg.nhood_size * cfg.nhood_size;
        Geometry {
            cfg,
            channels,
            patch_area,
            dim: channels * patch_area,
        }
    }
}

#[derive(Clone, Copy)]
enum SetTag {
    Real = 0,
    Fake = 1,
}

/// Domain tags of the ChaCha keys, so that centres and directions never share a stream.
const CENTRES: u64 = 0x6365_6e74_7265_7300; // "centres"
const DIRECTIONS: u64 = 0x6469_7265_6374_6e73; // "directns"

fn stream(seed: u64, domain: u64, a: u64, b: u64) -> ChaCha8Rng {
    let mut key = [0u8; 32];
    for (i, word) in [seed, domain, a, b].into_iter().enumerate() {
        key[i * 8..(i + 1) * 8].copy_from_slice(&word.to_le_bytes());
    }
    ChaCha8Rng::from_seed(key)
}

/// The descriptors of one level of one set, one row of `dim` values (channel-major,
/// then row, then column) per distinct neighbourhood. Centres drawn more than once are
/// stored once: image `i`'s rows are `rows[i]..rows[i + 1]`, and
/// `draws[i * nhoods + j]` says which of them (counted from `rows[i]`) draw `j` is.
struct LevelDescriptors {
    data: Vec<f32>,
    rows: Vec<usize>,
    draws: Vec<u32>,
    /// Per-channel (mean, sum of squared deviations, count) of each image, combined in
    /// image order by `normalise`, so the statistics never depend on the thread count.
    stats: Vec<Vec<Moments>>,
}

#[derive(Clone, Copy, Default)]
struct Moments {
    count: f64,
    mean: f64,
    m2: f64,
}

impl Moments {
    /// Chan et al.'s pairwise update: exact for constant data, unlike `E[x²] - E[x]²`.
    fn merge(self, other: Moments) -> Moments {
        if other.count == 0.0 {
            return self;
        }
        let count = self.count + other.count;
        let delta = other.mean - self.mean;
        Moments {
            count,
            mean: self.mean + delta * other.count / count,
            m2: self.m2 + other.m2 + delta * delta * self.count * other.count / count,
        }
    }
}

impl LevelDescriptors {
    fn count(&self) -> usize {
        self.rows.len() - 1
    }

    /// The rows of the batch that starts at image `start`, and their number.
    fn batch(&self, start: usize, dim: usize) -> (&[f32], usize) {
        let end = (start + BATCH_IMAGES).min(self.count());
        let (r0, r1) = (self.rows[start], self.rows[end]);
        (&self.data[r0 * dim..r1 * dim], r1 - r0)
    }

    fn normalise(&mut self, channels: usize, patch_area: usize) {
        let mut total = vec![Moments::default(); channels];
        for image in &self.stats {
            for (t, m) in total.iter_mut().zip(image) {
                *t = t.merge(*m);
            }
        }
        let shift_scale: Vec<(f32, f32)> = total
            .iter()
            .map(|m| {
                let std = (m.m2 / m.count).sqrt();
                let scale = if std > 0.0 && std.is_finite() {
                    1.0 / std
                } else {
                    1.0
                };
                (m.mean as f32, scale as f32)
            })
            .collect();
        let dim = channels * patch_area;
        self.data.par_chunks_mut(dim * 256).for_each(|rows| {
            for row in rows.chunks_exact_mut(dim) {
                for (values, &(shift, scale)) in row.chunks_exact_mut(patch_area).zip(&shift_scale)
                {
                    for v in values {
                        *v = (*v - shift) * scale;
                    }
                }
            }
        });
    }
}

/// Draws the neighbourhoods of every image of `set` at `level` and stores them.
fn describe(
    set: &ImageSet,
    geo: &Geometry,
    dims: &[(usize, usize)],
    level: usize,
    tag: SetTag,
    mut data: Vec<f32>,
    progress: &ProgressBar,
) -> LevelDescriptors {
    let cfg = geo.cfg;
    let count = set.len();
    let nh = cfg.nhoods_per_image;
    let (lw, lh) = dims[level];
    let r = cfg.nhood_size / 2;

    // Centres first (cheap), so that every image's columns are known and the images
    // can then be filled in parallel, in place.
    let centres: Vec<(Vec<u32>, Vec<u32>)> = (0..count)
        .into_par_iter()
        .map(|i| {
            let mut rng = stream(
                cfg.seed,
                CENTRES,
                ((level as u64) << 1) | tag as u64,
                i as u64,
            );
            let drawn: Vec<u32> = (0..nh)
                .map(|_| {
                    let x = rng.random_range(r..lw - r);
                    let y = rng.random_range(r..lh - r);
                    (y * lw + x) as u32
                })
                .collect();
            let mut distinct = drawn.clone();
            distinct.sort_unstable();
            distinct.dedup();
            let draws = drawn
                .iter()
                .map(|c| distinct.partition_point(|d| d < c) as u32)
                .collect();
            (distinct, draws)
        })
        .collect();

    let mut rows = Vec::with_capacity(count + 1);
    rows.push(0);
    for (distinct, _) in &centres {
        rows.push(rows[rows.len() - 1] + distinct.len());
    }
    let mut draws = Vec::with_capacity(count * nh);
    for (_, d) in &centres {
        draws.extend_from_slice(d);
    }
    // `data` is the last level's buffer when there was one: its pages are mapped
    // already (a fresh one was gigabytes of page faults per level at 10,000 images).
    data.clear();
    data.resize(rows[count] * geo.dim, 0.0);
    let mut desc = LevelDescriptors {
        data,
        rows,
        draws,
        stats: Vec::new(),
    };

    let rows = &desc.rows;
    let mut batches = Vec::with_capacity(count.div_ceil(BATCH_IMAGES));
    let mut rest = desc.data.as_mut_slice();
    for start in (0..count).step_by(BATCH_IMAGES) {
        let end = (start + BATCH_IMAGES).min(count);
        let (head, tail) = rest.split_at_mut((rows[end] - rows[start]) * geo.dim);
        batches.push((start, head));
        rest = tail;
    }
    let stats: Vec<Vec<Vec<Moments>>> = batches
        .into_par_iter()
        .map_init(Pyramid::default, |pyramid, (start, block)| {
            let end = (start + BATCH_IMAGES).min(count);
            let stats = (start..end)
                .map(|i| {
                    let planes =
                        pyramid.level(set.image(i), set.width, set.height, geo, dims, level);
                    let (centres, draws) = &centres[i];
                    let from = (rows[i] - rows[start]) * geo.dim;
                    let to = (rows[i + 1] - rows[start]) * geo.dim;
                    gather(planes, lw, lh, geo, centres, draws, &mut block[from..to])
                })
                .collect();
            progress.inc((end - start) as u64);
            stats
        })
        .collect();
    desc.stats = stats.into_iter().flatten().collect();
    desc
}

/// Copies one image's distinct neighbourhoods into `out` (one row each) and returns
/// the image's per-channel moments over all draws (a neighbourhood drawn twice counts
/// twice).
fn gather(
    planes: &[f32],
    lw: usize,
    lh: usize,
    geo: &Geometry,
    centres: &[u32],
    draws: &[u32],
    out: &mut [f32],
) -> Vec<Moments> {
    let s = geo.cfg.nhood_size;
    let r = s / 2;
    let plane_len = lw * lh;
    for (&centre, row) in centres.iter().zip(out.chunks_exact_mut(geo.dim)) {
        let (cx, cy) = (centre as usize % lw, centre as usize / lw);
        let corner = (cy - r) * lw + (cx - r);
        for (c, patch) in row.chunks_exact_mut(geo.patch_area).enumerate() {
            let plane = &planes[c * plane_len..(c + 1) * plane_len];
            for (dy, patch_row) in patch.chunks_exact_mut(s).enumerate() {
                let from = corner + dy * lw;
                patch_row.copy_from_slice(&plane[from..from + s]);
            }
        }
    }

    let mut weight = vec![0f64; centres.len()];
    for &d in draws {
        weight[d as usize] += 1.0;
    }
    let count = (draws.len() * geo.patch_area) as f64;
    (0..geo.channels)
        .map(|c| {
            let channel = c * geo.patch_area..(c + 1) * geo.patch_area;
            let mut sum = 0.0;
            for (row, &w) in out.chunks_exact(geo.dim).zip(&weight) {
                sum += w * row[channel.clone()].iter().map(|&v| v as f64).sum::<f64>();
            }
            let mean = sum / count;
            let mut m2 = 0.0;
            for (row, &w) in out.chunks_exact(geo.dim).zip(&weight) {
                let squares: f64 = row[channel.clone()]
                    .iter()
                    .map(|&v| (v as f64 - mean) * (v as f64 - mean))
                    .sum();
                m2 += w * squares;
            }
            Moments { count, mean, m2 }
        })
        .collect()
}

/// Per-thread scratch for one image's pyramid, kept between images.
#[derive(Default)]
struct Pyramid {
    fine: Vec<f32>,
    coarse: Vec<f32>,
    up: Vec<f32>,
    tmp: Vec<f32>,
}

impl Pyramid {
    /// The planes (channel-major) of `level` of the Laplacian pyramid of one HWC image.
    fn level(
        &mut self,
        image: &[u8],
        width: u32,
        height: u32,
        geo: &Geometry,
        dims: &[(usize, usize)],
        level: usize,
    ) -> &[f32] {
        let c = geo.channels;
        let (w, h) = (width as usize, height as usize);
        self.fine.clear();
        self.fine.resize(w * h * c, 0.0);
        for (p, pixel) in image.chunks_exact(c).enumerate() {
            for (ch, &v) in pixel.iter().enumerate() {
                self.fine[ch * w * h + p] = v as f32;
            }
        }
        for l in 0..level {
            let (fw, fh) = dims[l];
            let (cw, ch) = dims[l + 1];
            down(
                &self.fine,
                fw,
                fh,
                c,
                &mut self.coarse,
                cw,
                ch,
                &mut self.tmp,
            );
            std::mem::swap(&mut self.fine, &mut self.coarse);
        }
        if level + 1 < dims.len() {
            let (fw, fh) = dims[level];
            let (cw, ch) = dims[level + 1];
            down(
                &self.fine,
                fw,
                fh,
                c,
                &mut self.coarse,
                cw,
                ch,
                &mut self.tmp,
            );
            up(&self.coarse, cw, ch, c, &mut self.up, fw, fh, &mut self.tmp);
            for (f, u) in self.fine.iter_mut().zip(&self.up) {
                *f -= *u;
            }
        }
        &self.fine
    }
}

/// The 5-tap binomial filter; its outer product with itself is the original's 5x5.
const BINOMIAL: [f32; 5] = [1.0 / 16.0, 4.0 / 16.0, 6.0 / 16.0, 4.0 / 16.0, 1.0 / 16.0];

/// Reflection about the edge pixel (SciPy's `mirror`), for any distance outside.
fn mirror(i: isize, n: usize) -> usize {
    if n == 1 {
        return 0;
    }
    let period = 2 * (n as isize - 1);
    let m = i.rem_euclid(period);
    (if m >= n as isize { period - m } else { m }) as usize
}

/// For every output index, the source indices and weights of a 1-D filter pass.
struct Taps {
    taps: Vec<[(usize, f32); 5]>,
}

impl Taps {
    /// Filter at `n` positions, keep the even ones.
    fn down(n: usize) -> Taps {
        let taps = (0..n.div_ceil(2))
            .map(|o| std::array::from_fn(|t| (mirror((2 * o + t) as isize - 2, n), BINOMIAL[t])))
            .collect();
        Taps { taps }
    }

    /// Place `n.div_ceil(2)` values on the even positions of `n` zeros and filter with
    /// twice the binomial (the 2-D filter's 4x, split over the two passes). Taps that
    /// land on a zero get weight 0, so every output has five taps and the loops stay
    /// uniform.
    fn up(n: usize) -> Taps {
        let taps = (0..n)
            .map(|o| {
                std::array::from_fn(|t| {
                    let s = mirror(o as isize + t as isize - 2, n);
                    if s.is_multiple_of(2) {
                        (s / 2, 2.0 * BINOMIAL[t])
                    } else {
                        (0, 0.0)
                    }
                })
            })
            .collect();
        Taps { taps }
    }
}

/// Separable filtering of `c` planes of `sw`x`sh` into `c` planes of `dw`x`dh`, rows
/// then columns.
#[allow(clippy::too_many_arguments)]
fn separable(
    src: &[f32],
    sw: usize,
    sh: usize,
    c: usize,
    dst: &mut Vec<f32>,
    dw: usize,
    dh: usize,
    tmp: &mut Vec<f32>,
    horizontal: &Taps,
    vertical: &Taps,
) {
    tmp.clear();
    tmp.resize(dw * sh * c, 0.0);
    for (src_row, tmp_row) in src.chunks_exact(sw).zip(tmp.chunks_exact_mut(dw)) {
        for (out, taps) in tmp_row.iter_mut().zip(&horizontal.taps) {
            *out = taps.iter().map(|&(s, k)| k * src_row[s]).sum();
        }
    }
    dst.clear();
    dst.resize(dw * dh * c, 0.0);
    for (tmp_plane, dst_plane) in tmp.chunks_exact(dw * sh).zip(dst.chunks_exact_mut(dw * dh)) {
        for (dst_row, taps) in dst_plane.chunks_exact_mut(dw).zip(&vertical.taps) {
            for &(s, k) in taps {
                if k == 0.0 {
                    continue;
                }
                let src_row = &tmp_plane[s * dw..(s + 1) * dw];
                for (d, &v) in dst_row.iter_mut().zip(src_row) {
                    *d += k * v;
                }
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn down(
    src: &[f32],
    sw: usize,
    sh: usize,
    c: usize,
    dst: &mut Vec<f32>,
    dw: usize,
    dh: usize,
    tmp: &mut Vec<f32>,
) {
    separable(
        src,
        sw,
        sh,
        c,
        dst,
        dw,
        dh,
        tmp,
        &Taps::down(sw),
        &Taps::down(sh),
    );
}

#[allow(clippy::too_many_arguments)]
fn up(
    src: &[f32],
    sw: usize,
    sh: usize,
    c: usize,
    dst: &mut Vec<f32>,
    dw: usize,
    dh: usize,
    tmp: &mut Vec<f32>,
) {
    separable(
        src,
        sw,
        sh,
        c,
        dst,
        dw,
        dh,
        tmp,
        &Taps::up(dw),
        &Taps::up(dh),
    );
}

/// Unit directions `first..first + count` of `level`, row-major (`count` x `dim`).
fn directions(seed: u64, level: usize, first: usize, count: usize, dim: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(count * dim);
    let mut v = vec![0f64; dim];
    for d in first..first + count {
        let mut rng = stream(seed, DIRECTIONS, level as u64, d as u64);
        for pair in v.chunks_mut(2) {
            // Box-Muller; 1 - u keeps the logarithm's argument in (0, 1].
            let radius = (-2.0 * (1.0 - rng.random::<f64>()).ln()).sqrt();
            let angle = TAU * rng.random::<f64>();
            pair[0] = radius * angle.cos();
            if let Some(second) = pair.get_mut(1) {
                *second = radius * angle.sin();
            }
        }
        let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
        out.extend(v.iter().map(|x| (x / norm) as f32));
    }
    out
}

/// Σ over descriptors of |sorted projection difference|, for every direction of the
/// level, in direction order.
fn direction_sums(
    real: &LevelDescriptors,
    fake: &LevelDescriptors,
    geo: &Geometry,
    level: usize,
    proj: (&mut Vec<f32>, &mut Vec<f32>),
    progress: &ProgressBar,
) -> Vec<f64> {
    let cfg = geo.cfg;
    let count = real.count();
    let nh = cfg.nhoods_per_image;
    let total = cfg.dir_repeats * cfg.dirs_per_repeat;
    let mut sums = Vec::with_capacity(total);
    let (proj_real, proj_fake) = proj;
    for first in (0..total).step_by(CHUNK_DIRS) {
        let dirs = (total - first).min(CHUNK_DIRS);
        let w = pack_directions(
            &directions(cfg.seed, level, first, dirs, geo.dim),
            dirs,
            geo.dim,
        );
        project(real, &w, dirs, geo, proj_real, progress);
        project(fake, &w, dirs, geo, proj_fake, progress);
        let chunk: Vec<f64> = (0..dirs)
            .into_par_iter()
            .map(|j| {
                let a = direction_runs(proj_real, j, dirs, count, nh);
                let b = direction_runs(proj_fake, j, dirs, count, nh);
                SORT_SCRATCH.with_borrow_mut(|scratch| scratch.sum_abs_sorted_diff(&a, &b))
            })
            .collect();
        sums.extend(chunk);
    }
    sums
}

/// Directions per panel of the projection kernel: two 8-lane vectors.
const LANES: usize = 16;
/// Descriptors per tile of the projection kernel: 6 x 2 accumulators plus the two
/// direction vectors fit the 16 AVX registers.
const TILE: usize = 6;

/// Directions `dirs` x `dim` (row-major) as panels of [`LANES`] directions,
/// `[panel][component][lane]`, zero-padded to whole panels.
fn pack_directions(rows: &[f32], dirs: usize, dim: usize) -> Vec<f32> {
    let panels = dirs.div_ceil(LANES);
    let mut packed = vec![0f32; panels * dim * LANES];
    for (j, dir) in rows.chunks_exact(dim).enumerate() {
        let (panel, lane) = (j / LANES, j % LANES);
        for (k, &v) in dir.iter().enumerate() {
            packed[(panel * dim + k) * LANES + lane] = v;
        }
    }
    packed
}

/// Projects every draw of `desc` on the `dirs` directions packed in `w` into `out`,
/// laid out per batch of images as `[direction][draw within the batch]`, so that a
/// direction's values in a batch are contiguous.
fn project(
    desc: &LevelDescriptors,
    w: &[f32],
    dirs: usize,
    geo: &Geometry,
    out: &mut Vec<f32>,
    progress: &ProgressBar,
) {
    let nh = geo.cfg.nhoods_per_image;
    let count = desc.count();
    let width = dirs.div_ceil(LANES) * LANES;
    // Every slot is written below, so a buffer kept from the last chunk is not cleared.
    out.resize(count * nh * dirs, 0.0);
    out.par_chunks_mut(BATCH_IMAGES * nh * dirs)
        .enumerate()
        .for_each(|(b, block)| {
            let start = b * BATCH_IMAGES;
            let end = (start + BATCH_IMAGES).min(count);
            let (rows, distinct) = desc.batch(start, geo.dim);
            PRODUCTS.with_borrow_mut(|products| {
                products.resize(distinct * width, 0.0);
                project_rows(rows, geo.dim, w, products);

                // Draws that share a centre share the distinct row's projections.
                let draws_in_block = (end - start) * nh;
                let r0 = desc.rows[start];
                for (dst, src) in block
                    .chunks_exact_mut(draws_in_block)
                    .zip(products.chunks_exact(distinct))
                {
                    for (i, dst_image) in (start..end).zip(dst.chunks_exact_mut(nh)) {
                        let base = desc.rows[i] - r0;
                        let draws = &desc.draws[i * nh..(i + 1) * nh];
                        for (d, &k) in dst_image.iter_mut().zip(draws) {
                            *d = src[base + k as usize];
                        }
                    }
                }
            });
            progress.inc((end - start) as u64);
        });
}

thread_local! {
    /// One batch's projections per thread, kept across batches, directions and levels
    /// instead of a megabyte allocated per rayon job.
    static PRODUCTS: std::cell::RefCell<Vec<f32>> = Default::default();
}

/// `out[j][u] = rows[u] · direction j` for every row, `out` direction-major with
/// `panels * LANES` rows of `stride` values, so that each direction's values are
/// contiguous for the expansion to draws.
fn project_rows(rows: &[f32], dim: usize, w: &[f32], out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU was just checked for the feature the function enables.
        unsafe { avx512::project_rows(rows, dim, w, out) };
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU was just checked for both features the function enables.
        unsafe { fma::project_rows(rows, dim, w, out) };
        return;
    }
    project_rows_portable(rows, dim, w, out);
}

/// [`project_rows`] for CPUs without AVX2+FMA.
fn project_rows_portable(rows: &[f32], dim: usize, w: &[f32], out: &mut [f32]) {
    let count = rows.len() / dim;
    for (u, row) in rows.chunks_exact(dim).enumerate() {
        for (p, panel) in w.chunks_exact(dim * LANES).enumerate() {
            let mut acc = [0f32; LANES];
            for (&x, wk) in row.iter().zip(panel.chunks_exact(LANES)) {
                for (a, &wl) in acc.iter_mut().zip(wk) {
                    *a += x * wl;
                }
            }
            for (l, &v) in acc.iter().enumerate() {
                out[(p * LANES + l) * count + u] = v;
            }
        }
    }
}

/// The loop both projection kernels share: `$tile` over whole tiles of `$size`
/// descriptors, then one descriptor at a time over the rest. A macro rather than a
/// function so that it expands inside each kernel's `target_feature` function, where
/// that kernel's tile inlines.
#[cfg(target_arch = "x86_64")]
macro_rules! in_tiles {
    ($tile:ident, $size:ident, $rows:expr, $dim:expr, $w:expr, $out:expr) => {{
        let (rows, dim, w, out): (&[f32], usize, &[f32], &mut [f32]) = ($rows, $dim, $w, $out);
        let count = rows.len() / dim;
        let mut tiles = rows.chunks_exact($size * dim);
        for (t, tile_rows) in tiles.by_ref().enumerate() {
            $tile::<$size>(tile_rows, dim, w, out, count, t * $size);
        }
        let done = count - count % $size;
        for (u, row) in tiles.remainder().chunks_exact(dim).enumerate() {
            $tile::<1>(row, dim, w, out, count, done + u);
        }
    }};
}

/// The projection kernel in AVX2+FMA intrinsics: explicit vectors keep it fast in the
/// tests' lightly optimised builds too, where the portable loops are not vectorised.
#[cfg(target_arch = "x86_64")]
mod fma {
    use std::arch::x86_64::{
        __m256, _mm256_fmadd_ps, _mm256_loadu_ps, _mm256_set1_ps, _mm256_setzero_ps,
        _mm256_storeu_ps,
    };

    use super::{LANES, TILE};

    #[target_feature(enable = "avx2,fma")]
    pub(super) fn project_rows(rows: &[f32], dim: usize, w: &[f32], out: &mut [f32]) {
        in_tiles!(tile, TILE, rows, dim, w, out);
    }

    /// `J` descriptors (columns `first..first + J`) against every panel: per
    /// component, `J` broadcasts times one panel row of [`LANES`] directions, summed
    /// in `2·J` registers.
    #[target_feature(enable = "avx2,fma")]
    fn tile<const J: usize>(
        rows: &[f32],
        dim: usize,
        w: &[f32],
        out: &mut [f32],
        stride: usize,
        first: usize,
    ) {
        for (p, panel) in w.chunks_exact(dim * LANES).enumerate() {
            let mut lo: [__m256; J] = [_mm256_setzero_ps(); J];
            let mut hi: [__m256; J] = [_mm256_setzero_ps(); J];
            for (k, wk) in panel.chunks_exact(LANES).enumerate() {
                // SAFETY: `wk` holds LANES = 16 values, read as two vectors of 8.
                let (w0, w1) = unsafe {
                    (
                        _mm256_loadu_ps(wk.as_ptr()),
                        _mm256_loadu_ps(wk.as_ptr().add(8)),
                    )
                };
                for j in 0..J {
                    let x = _mm256_set1_ps(rows[j * dim + k]);
                    lo[j] = _mm256_fmadd_ps(x, w0, lo[j]);
                    hi[j] = _mm256_fmadd_ps(x, w1, hi[j]);
                }
            }
            for j in 0..J {
                let mut lanes = [0f32; LANES];
                // SAFETY: `lanes` has room for the two vectors of 8.
                unsafe {
                    _mm256_storeu_ps(lanes.as_mut_ptr(), lo[j]);
                    _mm256_storeu_ps(lanes.as_mut_ptr().add(8), hi[j]);
                }
                for (l, &v) in lanes.iter().enumerate() {
                    out[(p * LANES + l) * stride + first + j] = v;
                }
            }
        }
    }
}

/// The projection kernel in AVX-512: a panel row of [`LANES`] directions is one
/// register, and with 32 registers a tile spans two panels, so each broadcast
/// descriptor value feeds two FMAs and the loads stay well below one per FMA. Each
/// sum is the same chain of FMAs as in the AVX2 kernel, so the results are identical.
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::{
        __m512, _mm512_fmadd_ps, _mm512_loadu_ps, _mm512_set1_ps, _mm512_setzero_ps,
        _mm512_storeu_ps,
    };

    use super::LANES;

    /// Descriptors per tile: 2 x 12 accumulators, two direction vectors and a
    /// broadcast fit the 32 registers.
    const TILE: usize = 12;

    #[target_feature(enable = "avx512f")]
    pub(super) fn project_rows(rows: &[f32], dim: usize, w: &[f32], out: &mut [f32]) {
        in_tiles!(tile, TILE, rows, dim, w, out);
    }

    /// `J` descriptors (columns `first..first + J`) against every panel, two panels
    /// at a time.
    #[target_feature(enable = "avx512f")]
    fn tile<const J: usize>(
        rows: &[f32],
        dim: usize,
        w: &[f32],
        out: &mut [f32],
        stride: usize,
        first: usize,
    ) {
        let panel_len = dim * LANES;
        let mut pairs = w.chunks_exact(2 * panel_len);
        for (q, pair) in pairs.by_ref().enumerate() {
            let (a, b) = pair.split_at(panel_len);
            let mut acc_a: [__m512; J] = [_mm512_setzero_ps(); J];
            let mut acc_b: [__m512; J] = [_mm512_setzero_ps(); J];
            for (k, (wa, wb)) in a.chunks_exact(LANES).zip(b.chunks_exact(LANES)).enumerate() {
                // SAFETY: `wa` and `wb` hold LANES = 16 values each.
                let (va, vb) =
                    unsafe { (_mm512_loadu_ps(wa.as_ptr()), _mm512_loadu_ps(wb.as_ptr())) };
                for j in 0..J {
                    let x = _mm512_set1_ps(rows[j * dim + k]);
                    acc_a[j] = _mm512_fmadd_ps(x, va, acc_a[j]);
                    acc_b[j] = _mm512_fmadd_ps(x, vb, acc_b[j]);
                }
            }
            store(&acc_a, 2 * q, out, stride, first);
            store(&acc_b, 2 * q + 1, out, stride, first);
        }
        let last = pairs.remainder();
        if !last.is_empty() {
            let p = w.len() / panel_len - 1;
            let mut acc: [__m512; J] = [_mm512_setzero_ps(); J];
            for (k, wk) in last.chunks_exact(LANES).enumerate() {
                // SAFETY: `wk` holds LANES = 16 values.
                let v = unsafe { _mm512_loadu_ps(wk.as_ptr()) };
                for (j, acc) in acc.iter_mut().enumerate() {
                    *acc = _mm512_fmadd_ps(_mm512_set1_ps(rows[j * dim + k]), v, *acc);
                }
            }
            store(&acc, p, out, stride, first);
        }
    }

    /// Panel `p`'s sums for descriptors `first..first + J` into the direction-major
    /// `out`.
    #[inline(always)]
    fn store<const J: usize>(
        acc: &[__m512; J],
        p: usize,
        out: &mut [f32],
        stride: usize,
        first: usize,
    ) {
        for (j, &v) in acc.iter().enumerate() {
            let mut lanes = [0f32; LANES];
            // SAFETY: `lanes` has room for the 16 values.
            unsafe { _mm512_storeu_ps(lanes.as_mut_ptr(), v) };
            for (l, &x) in lanes.iter().enumerate() {
                out[(p * LANES + l) * stride + first + j] = x;
            }
        }
    }
}

/// Direction `j`'s projections of one set: one contiguous run per batch of images.
fn direction_runs(proj: &[f32], j: usize, dirs: usize, count: usize, nh: usize) -> Vec<&[f32]> {
    proj.chunks(BATCH_IMAGES * nh * dirs)
        .enumerate()
        .map(|(b, block)| {
            let in_block = (count - b * BATCH_IMAGES).min(BATCH_IMAGES) * nh;
            &block[j * in_block..(j + 1) * in_block]
        })
        .collect()
}

thread_local! {
    /// One sort's buffers per thread, kept across directions, chunks, levels and calls:
    /// buffers made per parallel job were a stream of fresh pages to fault in.
    static SORT_SCRATCH: std::cell::RefCell<SortScratch> = Default::default();
}

/// Sorts direction `j`'s projections of both sets and sums the absolute differences of
/// the sorted values.
#[derive(Default)]
struct SortScratch {
    real: Vec<u32>,
    fake: Vec<u32>,
    radix: RadixBuffers,
}

/// The radix sort's own buffers besides its output.
#[derive(Default)]
struct RadixBuffers {
    tmp: Vec<u32>,
    counts: Vec<[u32; WAYS]>,
    starts: Vec<usize>,
    offsets: Vec<[usize; WAYS]>,
}

impl SortScratch {
    /// `Σ_k |a_(k) - b_(k)|` over the order statistics of two samples of equal size,
    /// given as runs of values.
    fn sum_abs_sorted_diff(&mut self, a: &[&[f32]], b: &[&[f32]]) -> f64 {
        radix_sort(a, &mut self.real, &mut self.radix);
        radix_sort(b, &mut self.fake, &mut self.radix);
        self.real
            .iter()
            .zip(&self.fake)
            .map(|(&x, &y)| (from_key(x) as f64 - from_key(y) as f64).abs())
            .sum()
    }
}

/// The radix sort's digits: the top 12 bits of a key (sign, exponent and three
/// mantissa bits, so a bucket is an eighth of a binade, small enough for L2), then two
/// low digits of 10 bits, whose 1024 write positions stay in L1.
const TOP_BITS: u32 = 12;
const TOP_SHIFT: u32 = 32 - TOP_BITS;
const LOW_BITS: u32 = 10;
const LOW: usize = 1 << LOW_BITS;
const LOW_MASK: u32 = LOW as u32 - 1;

/// Buckets of the first pass smaller than this are finished by comparison sorting,
/// where two more radix passes would cost more than the few elements are worth.
const SMALL_BUCKET: usize = 256;

/// Sorts the values of `runs` (as order-preserving keys) into `keys`.
///
/// Most-significant digit first, then least-significant within each bucket: the
/// first pass spreads the keys by their top 12 bits (sign, exponent and three mantissa
/// bits, so a bucket is an eighth of a binade), and each bucket is then small enough to
/// be sorted on its low 20 bits inside the L2 cache. Only the first pass and the
/// reading of the result stream through main memory, instead of every pass of a plain
/// LSD sort.
///
/// The first pass deals elements round-robin to [`WAYS`] separate counters per digit
/// (it needs no stability): projections are smooth, so neighbouring values mostly share a
/// digit, and one counter per digit made each increment wait for the previous one
/// (a store-to-load chain through memory that was most of the sort's time).
fn radix_sort(runs: &[&[f32]], keys: &mut Vec<u32>, buffers: &mut RadixBuffers) {
    const BUCKETS: usize = 1 << TOP_BITS;
    let RadixBuffers {
        tmp,
        counts,
        starts,
        offsets,
    } = buffers;
    counts.clear();
    counts.resize(BUCKETS, [0; WAYS]);
    for run in runs {
        let quads = run.chunks_exact(WAYS);
        for &v in quads.remainder() {
            counts[(to_key(v) >> TOP_SHIFT) as usize][0] += 1;
        }
        for quad in quads {
            for (way, &v) in quad.iter().enumerate() {
                counts[(to_key(v) >> TOP_SHIFT) as usize][way] += 1;
            }
        }
    }
    let n: usize = runs.iter().map(|r| r.len()).sum();
    // Every slot is written below, so stale contents need no clearing.
    keys.resize(n, 0);
    // One bucket's worth, reused by every bucket, so that the low passes write into
    // lines still in cache instead of into a cold slice of an array as large as `keys`.
    let largest = counts
        .iter()
        .map(|ways| ways.iter().sum::<u32>() as usize)
        .max()
        .unwrap_or(0);
    tmp.resize(largest, 0);

    // Every slot of these two is written below.
    starts.resize(BUCKETS + 1, 0);
    offsets.resize(BUCKETS, [0; WAYS]);
    let mut running = 0usize;
    for (digit, ways) in counts.iter().enumerate() {
        starts[digit] = running;
        for (way, &c) in ways.iter().enumerate() {
            offsets[digit][way] = running;
            running += c as usize;
        }
    }
    starts[BUCKETS] = running;
    for run in runs {
        let quads = run.chunks_exact(WAYS);
        for &v in quads.remainder() {
            let k = to_key(v);
            let slot = &mut offsets[(k >> TOP_SHIFT) as usize][0];
            keys[*slot] = k;
            *slot += 1;
        }
        for quad in quads {
            for (way, &v) in quad.iter().enumerate() {
                let k = to_key(v);
                let slot = &mut offsets[(k >> TOP_SHIFT) as usize][way];
                keys[*slot] = k;
                *slot += 1;
            }
        }
    }

    for bucket in starts.windows(2) {
        let (from, to) = (bucket[0], bucket[1]);
        let (bucket_keys, bucket_tmp) = (&mut keys[from..to], &mut tmp[..to - from]);
        if bucket_keys.len() < SMALL_BUCKET {
            bucket_keys.sort_unstable();
        } else {
            sort_low_digits(bucket_keys, bucket_tmp);
        }
    }
}

/// Independent counters per digit in the radix sort's loops.
const WAYS: usize = 4;

/// LSD radix sort of keys that share their top digit: the two low digits, in two
/// passes that leave the result back in `keys`.
fn sort_low_digits(keys: &mut [u32], tmp: &mut [u32]) {
    let mut hist = [[0u32; LOW]; 2];
    for &k in keys.iter() {
        hist[0][(k & LOW_MASK) as usize] += 1;
        hist[1][((k >> LOW_BITS) & LOW_MASK) as usize] += 1;
    }
    let starts = |counts: &[u32; LOW]| {
        let mut offsets = [0u32; LOW];
        let mut running = 0u32;
        for (o, &c) in offsets.iter_mut().zip(counts) {
            *o = running;
            running += c;
        }
        offsets
    };
    let mut offsets = starts(&hist[0]);
    for &k in keys.iter() {
        let digit = (k & LOW_MASK) as usize;
        tmp[offsets[digit] as usize] = k;
        offsets[digit] += 1;
    }
    let mut offsets = starts(&hist[1]);
    for &k in tmp.iter() {
        let digit = ((k >> LOW_BITS) & LOW_MASK) as usize;
        keys[offsets[digit] as usize] = k;
        offsets[digit] += 1;
    }
}

/// Order-preserving map of `f32` to `u32`: flip all bits of negatives, the sign bit of
/// the rest, so that unsigned order is numeric order.
fn to_key(v: f32) -> u32 {
    let bits = v.to_bits();
    if bits >> 31 == 1 {
        !bits
    } else {
        bits | 0x8000_0000
    }
}

fn from_key(k: u32) -> f32 {
    f32::from_bits(if k >> 31 == 1 { k & 0x7fff_ffff } else { !k })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirror_reflects_without_repeating_the_edge() {
        let got: Vec<usize> = (-3..8).map(|i| mirror(i, 5)).collect();
        assert_eq!(got, vec![3, 2, 1, 0, 1, 2, 3, 4, 3, 2, 1]);
        assert_eq!(mirror(-7, 2), 1);
        assert_eq!(mirror(4, 1), 0);
    }

    #[test]
    fn keys_sort_like_floats() {
        let mut values = [
            3.5f32,
            -0.0,
            0.0,
            -1e-30,
            1e30,
            -7.25,
            f32::MIN_POSITIVE,
            -2.0,
        ];
        let mut keys: Vec<u32> = values.iter().map(|&v| to_key(v)).collect();
        keys.sort_unstable();
        values.sort_by(f32::total_cmp);
        let back: Vec<f32> = keys.iter().map(|&k| from_key(k)).collect();
        assert_eq!(
            back.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            values.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
        );
    }

    fn sorted_sum(a: &[f32], b: &[f32]) -> f64 {
        let (mut a, mut b) = (a.to_vec(), b.to_vec());
        a.sort_by(f32::total_cmp);
        b.sort_by(f32::total_cmp);
        a.iter()
            .zip(&b)
            .map(|(&x, &y)| (x as f64 - y as f64).abs())
            .sum()
    }

    fn check_w1(a: &[f32], b: &[f32]) {
        let want = sorted_sum(a, b);
        // Runs of uneven lengths, as the batches give them.
        let split = |v: &[f32]| -> Vec<Vec<f32>> { v.chunks(37).map(|c| c.to_vec()).collect() };
        let (ra, rb) = (split(a), split(b));
        let ra: Vec<&[f32]> = ra.iter().map(|r| r.as_slice()).collect();
        let rb: Vec<&[f32]> = rb.iter().map(|r| r.as_slice()).collect();
        let got = SortScratch::default().sum_abs_sorted_diff(&ra, &rb);
        assert!(
            (got - want).abs() <= 1e-9 * want.abs().max(1.0),
            "radix {got} vs std sort {want}"
        );
    }

    #[test]
    fn radix_w1_matches_the_sorted_sum() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let mut normal = |shift: f32, scale: f32, n: usize| -> Vec<f32> {
            (0..n)
                .map(|_| {
                    let u: f32 = (0..6).map(|_| rng.random::<f32>()).sum::<f32>() - 3.0;
                    shift + scale * u
                })
                .collect()
        };
        for n in [1, 2, 5, 100, 5000, 40_000] {
            let a = normal(0.0, 1.0, n);
            check_w1(&a, &normal(0.0, 1.0, n)); // same distribution: many crossings
            check_w1(&a, &normal(0.3, 1.2, n));
            check_w1(&a, &normal(-4.0, 0.1, n));
            check_w1(&a, &a); // identical samples: every bin straddles
        }
        // Ties and a constant sample.
        let ints: Vec<f32> = (0..3000).map(|i| (i % 7) as f32).collect();
        let other: Vec<f32> = (0..3000).map(|i| (i % 5) as f32 - 1.0).collect();
        check_w1(&ints, &other);
        check_w1(&ints, &vec![2.0; 3000]);
        check_w1(&vec![2.0; 3000], &vec![2.0; 3000]);
    }

    #[test]
    fn projection_kernel_matches_dot_products() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let (dim, dirs, count) = (147, 37, 13);
        let rows: Vec<f32> = (0..count * dim)
            .map(|_| rng.random::<f32>() - 0.5)
            .collect();
        let w = directions(1, 0, 0, dirs, dim);
        let packed = pack_directions(&w, dirs, dim);
        let width = dirs.div_ceil(LANES) * LANES;
        type Kernel = fn(&[f32], usize, &[f32], &mut [f32]);
        let mut kernels: Vec<(&str, Kernel)> = vec![
            ("dispatched", project_rows),
            ("portable", project_rows_portable),
        ];
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: the CPU was just checked for both features the kernel enables.
            kernels.push(("avx2", |r, d, w, o| unsafe {
                fma::project_rows(r, d, w, o)
            }));
        }
        for (name, kernel) in kernels {
            let mut out = vec![0f32; count * width];
            kernel(&rows, dim, &packed, &mut out);
            for u in 0..count {
                for j in 0..dirs {
                    let want: f64 = (0..dim)
                        .map(|k| rows[u * dim + k] as f64 * w[j * dim + k] as f64)
                        .sum();
                    assert!(
                        (out[j * count + u] as f64 - want).abs() < 1e-5,
                        "{name}: row {u} dir {j}"
                    );
                }
            }
        }
    }

    #[test]
    fn pyramid_matches_the_numpy_port() {
        // tests/reference/swd/pyramid_a0.bin: a 64x64 RGB photo crop, then the NumPy
        // port's Laplacian levels (SciPy's 2-D mirror convolution, accumulated in f64).
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/reference/swd/pyramid_a0.bin"
        );
        let blob = std::fs::read(path).expect("pyramid fixture");
        let (image, levels) = blob.split_at(64 * 64 * 3);
        let want: Vec<f32> = levels
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        let cfg = SwdConfig::default();
        let set = ImageSet {
            width: 64,
            height: 64,
            channels: 3,
            pixels: image.to_vec(),
        };
        let geo = Geometry::new(&set, &cfg);
        let dims = level_dims(64, 64, &cfg).expect("64 fits");
        let mut pyramid = Pyramid::default();
        let mut offset = 0;
        for (level, &(w, h)) in dims.iter().enumerate() {
            let got = pyramid.level(set.image(0), 64, 64, &geo, &dims, level);
            let want = &want[offset..offset + 3 * w * h];
            offset += 3 * w * h;
            let worst = got
                .iter()
                .zip(want)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            // f32 rounding of values up to 255 in two passes of five taps.
            assert!(worst < 1e-3, "level {level}: off by {worst}");
        }
        assert_eq!(offset, want.len());
    }

    #[test]
    fn pyramid_of_a_constant_image_is_exact() {
        let cfg = SwdConfig::default();
        let set = ImageSet {
            width: 64,
            height: 64,
            channels: 1,
            pixels: vec![200; 64 * 64],
        };
        let geo = Geometry::new(&set, &cfg);
        let dims = level_dims(64, 64, &cfg).expect("64 fits");
        assert_eq!(dims, vec![(64, 64), (32, 32), (16, 16)]);
        let mut pyramid = Pyramid::default();
        for level in 0..2 {
            let planes = pyramid.level(set.image(0), 64, 64, &geo, &dims, level);
            assert!(planes.iter().all(|&v| v == 0.0), "level {level}");
        }
        let planes = pyramid.level(set.image(0), 64, 64, &geo, &dims, 2);
        assert!(planes.iter().all(|&v| v == 200.0));
    }

    #[test]
    fn identical_sets_with_identical_centres_score_exactly_zero() {
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        let mut set = ImageSet::new(32, 32, 3);
        for _ in 0..20 {
            let image: Vec<u8> = (0..32 * 32 * 3).map(|_| rng.random()).collect();
            set.push(&image);
        }
        let cfg = SwdConfig::default();
        let hidden = ProgressBar::hidden();
        let same = compare(&set, &set, &cfg, &hidden, SetTag::Real).expect("valid sets");
        assert_eq!(same.levels.len(), 2);
        assert!(same.levels.iter().all(|&(_, d)| d == 0.0), "{same:?}");
        // Independent centres, as `swd` draws them, leave the sampling noise.
        let noisy = swd(&set, &set, &cfg, &hidden).expect("valid sets");
        assert!(noisy.average > 0.0);
    }

    #[test]
    fn directions_are_unit_and_independent_of_chunking() {
        let all = directions(3, 1, 0, 10, 147);
        let part = directions(3, 1, 4, 3, 147);
        assert_eq!(&all[4 * 147..7 * 147], part.as_slice());
        for d in all.chunks_exact(147) {
            let norm: f64 = d.iter().map(|&x| x as f64 * x as f64).sum();
            assert!((norm - 1.0).abs() < 1e-5);
        }
    }

    #[test]
    fn odd_sides_halve_upwards() {
        let cfg = SwdConfig::default();
        assert_eq!(
            level_dims(66, 40, &cfg).expect("fits"),
            vec![(66, 40), (33, 20)]
        );
        assert!(matches!(
            level_dims(15, 64, &cfg),
            Err(SwdError::TooSmall { .. })
        ));
    }
}
