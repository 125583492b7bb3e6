//! Built-in generated data, so that every pipeline runs without downloading anything.
//!
//! Each image is one shape (circle, square, triangle, cross) over a textured background:
//! a smooth colour gradient, two sinusoidal waves and fine noise, all with random
//! parameters. Every image draws from its own ChaCha stream (seed = the source's seed,
//! stream = image index and purpose), so images are generated in parallel and the bytes
//! depend only on the parameters, never on the thread count.

use std::collections::BTreeMap;
use std::f32::consts::{PI, TAU};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use crate::imageset::rgb_to_gray;
use crate::{Dataset, DatasetError, ImageSet, Layout, SyntheticSource, SyntheticVariant};

/// Class names of the synthetic shapes; a label is an index into this list.
pub const SHAPE_CLASSES: [&str; 4] = ["circle", "square", "triangle", "cross"];

const MIN_SIZE: u32 = 8;
const MAX_SIZE: u32 = 16384;

/// Colours of the flat label maps (the `a` side of `paired`), one per class.
const MAP_CLASS_COLOURS: [Rgb; 4] = [
    [0.85, 0.20, 0.20],
    [0.20, 0.70, 0.25],
    [0.20, 0.35, 0.85],
    [0.95, 0.80, 0.15],
];
const MAP_BACKGROUND: Rgb = [0.92, 0.90, 0.84];

type Rgb = [f32; 3];

/// What a random stream is used for; together with the image index it picks the stream.
#[derive(Clone, Copy)]
enum Purpose {
    Scene = 0,
    Background = 1,
    ShapeA = 2,
    ShapeB = 3,
}
const PURPOSES: u64 = 4;

fn rng_for(seed: u64, index: usize, purpose: Purpose) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream((index as u64).wrapping_mul(PURPOSES) + purpose as u64);
    rng
}

/// A cheap per-pixel hash in [-1, 1): drawing from the ChaCha stream per pixel would be
/// slower for no gain in quality.
fn hash_noise(seed: u64, x: usize, y: usize) -> f32 {
    let mut z = seed ^ ((x as u64) << 32 | y as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z >> 40) as f32 / (1u64 << 23) as f32 - 1.0
}

fn lerp(a: Rgb, b: Rgb, t: f32) -> Rgb {
    [
        a[0] + (b[0] - a[0]) * t,
        a[1] + (b[1] - a[1]) * t,
        a[2] + (b[2] - a[2]) * t,
    ]
}

fn hsv(hue_degrees: f32, s: f32, v: f32) -> Rgb {
    let h = hue_degrees.rem_euclid(360.0) / 60.0;
    let c = v * s;
    let x = c * (1.0 - (h % 2.0 - 1.0).abs());
    let (r, g, b) = match h as u32 {
        0 => (c, x, 0.0),
        1 => (x, c, 0.0),
        2 => (0.0, c, x),
        3 => (0.0, x, c),
        4 => (x, 0.0, c),
        _ => (c, 0.0, x),
    };
    let m = v - c;
    [r + m, g + m, b + m]
}

/// One plane wave `amp * sin(kx*x + ky*y + phase)`, evaluated separably as
/// `sin(kx x) cos(ky y + phase) + cos(kx x) sin(ky y + phase)` so that a pixel costs
/// multiplications instead of a `sin` call.
struct Wave {
    amp: f32,
    sin_x: Vec<f32>,
    cos_x: Vec<f32>,
    sin_y: Vec<f32>,
    cos_y: Vec<f32>,
}

impl Wave {
    fn random(rng: &mut ChaCha8Rng, size: usize) -> Wave {
        let angle = rng.random_range(0.0..PI);
        let cycles = rng.random_range(1.5..8.0f32);
        let phase = rng.random_range(0.0..TAU);
        let amp = rng.random_range(0.03..0.12f32);
        let k = TAU * cycles / size as f32;
        let (kx, ky) = (k * angle.cos(), k * angle.sin());
        let xs = (0..size).map(|x| kx * (x as f32 + 0.5));
        let ys = (0..size).map(|y| ky * (y as f32 + 0.5) + phase);
        Wave {
            amp,
            sin_x: xs.clone().map(f32::sin).collect(),
            cos_x: xs.map(f32::cos).collect(),
            sin_y: ys.clone().map(f32::sin).collect(),
            cos_y: ys.map(f32::cos).collect(),
        }
    }

    fn at(&self, x: usize, y: usize) -> f32 {
        self.amp * (self.sin_x[x] * self.cos_y[y] + self.cos_x[x] * self.sin_y[y])
    }
}

/// The textured "photo" background, row-major RGB in [0, 1].
fn background(rng: &mut ChaCha8Rng, size: usize) -> Vec<Rgb> {
    let mut corner = || -> Rgb {
        [
            rng.random_range(0.1..0.9),
            rng.random_range(0.1..0.9),
            rng.random_range(0.1..0.9),
        ]
    };
    let (c00, c10, c01, c11) = (corner(), corner(), corner(), corner());
    let waves = [Wave::random(rng, size), Wave::random(rng, size)];
    let tint: Rgb = [
        rng.random_range(0.4..1.0),
        rng.random_range(0.4..1.0),
        rng.random_range(0.4..1.0),
    ];
    let noise_amp = rng.random_range(0.01..0.05f32);
    let noise_seed: u64 = rng.random();

    let mut px = Vec::with_capacity(size * size);
    let step = 1.0 / size as f32;
    for y in 0..size {
        let v = (y as f32 + 0.5) * step;
        let (left, right) = (lerp(c00, c01, v), lerp(c10, c11, v));
        for x in 0..size {
            let base = lerp(left, right, (x as f32 + 0.5) * step);
            let t =
                waves[0].at(x, y) + waves[1].at(x, y) + noise_amp * hash_noise(noise_seed, x, y);
            px.push([
                base[0] + tint[0] * t,
                base[1] + tint[1] * t,
                base[2] + tint[2] * t,
            ]);
        }
    }
    px
}

/// A rotated shape, measured in pixels.
struct Shape {
    class: usize,
    cx: f32,
    cy: f32,
    /// Circumradius-like size: every class fits in a circle of about `1.15 * r`.
    r: f32,
    cos: f32,
    sin: f32,
}

fn box_distance(px: f32, py: f32, hx: f32, hy: f32) -> f32 {
    let (qx, qy) = (px.abs() - hx, py.abs() - hy);
    qx.max(0.0).hypot(qy.max(0.0)) + qx.max(qy).min(0.0)
}

impl Shape {
    fn random(rng: &mut ChaCha8Rng, size: usize) -> Shape {
        let s = size as f32;
        let class = rng.random_range(0..SHAPE_CLASSES.len());
        // At least 2 px, so that even an 8x8 image has a visible shape and a mask.
        let r = (s * rng.random_range(0.14..0.3f32)).max(2.0);
        let margin = r * 0.8;
        let cx = rng.random_range(margin..s - margin);
        let cy = rng.random_range(margin..s - margin);
        let angle = rng.random_range(0.0..TAU);
        Shape {
            class,
            cx,
            cy,
            r,
            cos: angle.cos(),
            sin: angle.sin(),
        }
    }

    /// Signed distance (negative inside) from the shape's edge to the point `(x, y)`.
    fn distance(&self, x: f32, y: f32) -> f32 {
        let (dx, dy) = (x - self.cx, y - self.cy);
        let px = dx * self.cos + dy * self.sin;
        let py = -dx * self.sin + dy * self.cos;
        let r = self.r;
        match self.class {
            0 => px.hypot(py) - r,
            1 => box_distance(px, py, 0.8 * r, 0.8 * r),
            2 => {
                // Equilateral triangle with circumradius r: the farthest of its three
                // edge lines (outward normals at -90, 30 and 150 degrees).
                const S: f32 = 0.866_025_4;
                let d = (-py).max(S * px + 0.5 * py).max(-S * px + 0.5 * py);
                d - 0.5 * r
            }
            _ => {
                let t = (0.3 * r).max(0.75);
                box_distance(px, py, r, t).min(box_distance(px, py, t, r))
            }
        }
    }

    /// Pixels the shape may touch, as half-open ranges of columns and rows.
    fn bounds(&self, size: usize) -> (std::ops::Range<usize>, std::ops::Range<usize>) {
        let ext = 1.2 * self.r + 2.0;
        let range = |c: f32| {
            let lo = (c - ext).floor().max(0.0) as usize;
            let hi = ((c + ext).ceil().max(0.0) as usize).min(size);
            lo..hi
        };
        (range(self.cx), range(self.cy))
    }

    /// Calls `paint(index, x, y, coverage)` for every pixel the shape covers at all;
    /// coverage is a one-pixel linear ramp across the edge (anti-aliasing).
    fn rasterize(&self, size: usize, mut paint: impl FnMut(usize, f32, f32, f32)) {
        let (xs, ys) = self.bounds(size);
        for y in ys {
            for x in xs.clone() {
                let (fx, fy) = (x as f32 + 0.5, y as f32 + 0.5);
                let coverage = (0.5 - self.distance(fx, fy)).clamp(0.0, 1.0);
                if coverage > 0.0 {
                    paint(y * size + x, fx, fy, coverage);
                }
            }
        }
    }

    /// Solid fill with a soft directional light, so that shapes are not flat stickers.
    fn draw_solid(&self, px: &mut [Rgb], size: usize, colour: Rgb, mask: Option<&mut [u8]>) {
        let mut mask = mask;
        self.rasterize(size, |i, x, y, coverage| {
            let light = 1.0 - 0.15 * ((x - self.cx) + (y - self.cy)) / self.r;
            let c = colour.map(|v| v * light);
            px[i] = lerp(px[i], c, coverage);
            if let Some(m) = mask.as_deref_mut() {
                m[i] = 255;
            }
        });
    }

    /// Two-tone stripes across the shape.
    fn draw_striped(
        &self,
        px: &mut [Rgb],
        size: usize,
        colours: [Rgb; 2],
        stripe: (f32, f32),
        mask: &mut [u8],
    ) {
        let (angle, period) = stripe;
        let (c, s) = (angle.cos(), angle.sin());
        self.rasterize(size, |i, x, y, coverage| {
            let along = ((x - self.cx) * c + (y - self.cy) * s) / period;
            let colour = colours[(along.floor() as i64).rem_euclid(2) as usize];
            px[i] = lerp(px[i], colour, coverage);
            mask[i] = 255;
        });
    }
}

fn quantize(px: &[Rgb], channels: u8) -> Vec<u8> {
    let rgb: Vec<u8> = px
        .iter()
        .flat_map(|p| p.map(|v| (v.clamp(0.0, 1.0) * 255.0 + 0.5) as u8))
        .collect();
    if channels == 1 {
        rgb_to_gray(&rgb)
    } else {
        rgb
    }
}

fn vivid(rng: &mut ChaCha8Rng, hues: std::ops::Range<f32>) -> Rgb {
    let h = rng.random_range(hues);
    let s = rng.random_range(0.55..1.0);
    let v = rng.random_range(0.65..1.0);
    hsv(h, s, v)
}

/// Draws scene `i` of a source.
type Render = fn(&SyntheticSource, usize) -> Scene;

/// One generated scene: image parts in part order, and the label if the variant has one.
struct Scene {
    images: Vec<Vec<u8>>,
    label: Option<u32>,
}

fn scene_single(src: &SyntheticSource, i: usize) -> Scene {
    let size = src.size as usize;
    let mut rng = rng_for(src.seed, i, Purpose::Scene);
    let mut px = background(&mut rng, size);
    let shape = Shape::random(&mut rng, size);
    let colour = vivid(&mut rng, 0.0..360.0);
    shape.draw_solid(&mut px, size, colour, None);
    Scene {
        images: vec![quantize(&px, src.channels)],
        label: Some(shape.class as u32),
    }
}

fn scene_paired(src: &SyntheticSource, i: usize) -> Scene {
    let size = src.size as usize;
    let mut rng = rng_for(src.seed, i, Purpose::Scene);
    let mut photo = background(&mut rng, size);
    let shape = Shape::random(&mut rng, size);
    let colour = vivid(&mut rng, 0.0..360.0);
    shape.draw_solid(&mut photo, size, colour, None);
    // The map is crisp, like a segmentation label: a pixel is the class or it is not.
    let mut map = vec![MAP_BACKGROUND; size * size];
    shape.rasterize(size, |i, _, _, coverage| {
        if coverage >= 0.5 {
            map[i] = MAP_CLASS_COLOURS[shape.class];
        }
    });
    Scene {
        images: vec![quantize(&map, src.channels), quantize(&photo, src.channels)],
        label: Some(shape.class as u32),
    }
}

/// Parts in name order: a, b, mask_a, mask_b. Both domains share the background of
/// index i exactly, and a mask marks every pixel a shape touched, so that outside both
/// masks a and b are byte-identical.
fn scene_unpaired(src: &SyntheticSource, i: usize) -> Scene {
    let size = src.size as usize;
    let bg = background(&mut rng_for(src.seed, i, Purpose::Background), size);

    let mut rng = rng_for(src.seed, i, Purpose::ShapeA);
    let shape = Shape::random(&mut rng, size);
    let warm = vivid(&mut rng, -30.0..55.0);
    let mut a = bg.clone();
    let mut mask_a = vec![0u8; size * size];
    shape.draw_solid(&mut a, size, warm, Some(&mut mask_a));

    let mut rng = rng_for(src.seed, i, Purpose::ShapeB);
    let shape = Shape::random(&mut rng, size);
    let cool = vivid(&mut rng, 170.0..260.0);
    let dark = cool.map(|v| v * 0.45);
    let stripe = (rng.random_range(0.0..PI), (shape.r * 0.45).max(1.5));
    let mut b = bg;
    let mut mask_b = vec![0u8; size * size];
    shape.draw_striped(&mut b, size, [cool, dark], stripe, &mut mask_b);

    Scene {
        images: vec![
            quantize(&a, src.channels),
            quantize(&b, src.channels),
            mask_a,
            mask_b,
        ],
        label: None,
    }
}

/// Strokes of the digits 0–9 as polylines in a unit box (x right, y down).
fn digit_strokes(d: usize) -> Vec<Vec<(f32, f32)>> {
    let ellipse = |cx: f32, cy: f32, rx: f32, ry: f32| -> Vec<(f32, f32)> {
        (0..=16)
            .map(|k| {
                let t = k as f32 / 16.0 * std::f32::consts::TAU;
                (cx + rx * t.cos(), cy + ry * t.sin())
            })
            .collect()
    };
    match d {
        0 => vec![ellipse(0.5, 0.5, 0.36, 0.5)],
        1 => vec![vec![(0.3, 0.22), (0.55, 0.0), (0.55, 1.0)]],
        2 => vec![vec![
            (0.12, 0.22),
            (0.35, 0.0),
            (0.7, 0.02),
            (0.88, 0.25),
            (0.8, 0.48),
            (0.1, 1.0),
            (0.92, 1.0),
        ]],
        3 => vec![vec![
            (0.12, 0.1),
            (0.45, 0.0),
            (0.82, 0.08),
            (0.85, 0.3),
            (0.45, 0.5),
            (0.88, 0.7),
            (0.8, 0.94),
            (0.42, 1.0),
            (0.1, 0.9),
        ]],
        4 => vec![vec![(0.7, 1.0), (0.7, 0.0), (0.05, 0.68), (0.95, 0.68)]],
        5 => vec![vec![
            (0.85, 0.0),
            (0.22, 0.0),
            (0.16, 0.45),
            (0.6, 0.4),
            (0.9, 0.66),
            (0.76, 0.95),
            (0.4, 1.0),
            (0.1, 0.9),
        ]],
        6 => vec![vec![
            (0.8, 0.04),
            (0.45, 0.0),
            (0.16, 0.4),
            (0.15, 0.8),
            (0.4, 1.0),
            (0.76, 0.95),
            (0.86, 0.7),
            (0.6, 0.5),
            (0.3, 0.54),
            (0.15, 0.72),
        ]],
        7 => vec![vec![(0.1, 0.0), (0.9, 0.0), (0.38, 1.0)]],
        8 => vec![
            ellipse(0.5, 0.26, 0.26, 0.26),
            ellipse(0.5, 0.74, 0.32, 0.26),
        ],
        _ => vec![vec![
            (0.85, 0.3),
            (0.7, 0.46),
            (0.4, 0.5),
            (0.15, 0.34),
            (0.2, 0.1),
            (0.5, 0.0),
            (0.84, 0.2),
            (0.85, 0.6),
            (0.62, 1.0),
            (0.2, 0.96),
        ]],
    }
}

fn segment_distance(p: (f32, f32), a: (f32, f32), b: (f32, f32)) -> f32 {
    let (dx, dy) = (b.0 - a.0, b.1 - a.1);
    let len2 = dx * dx + dy * dy;
    let t = if len2 > 0.0 {
        (((p.0 - a.0) * dx + (p.1 - a.1) * dy) / len2).clamp(0.0, 1.0)
    } else {
        0.0
    };
    let (qx, qy) = (a.0 + t * dx - p.0, a.1 + t * dy - p.1);
    (qx * qx + qy * qy).sqrt()
}

/// A digit drawn with a random height, slant, position, stroke width and brightness,
/// anti-aliased, on black.
fn scene_digits(src: &SyntheticSource, i: usize) -> Scene {
    let size = src.size as f32;
    let mut rng = rng_for(src.seed, i, Purpose::Scene);
    let digit = rng.random_range(0..10usize);
    let h = size * rng.random_range(0.55..0.75);
    let w = h * rng.random_range(0.5..0.7);
    let slant = rng.random_range(-0.25f32..0.25);
    let cx = size / 2.0 + rng.random_range(-0.08..0.08) * size;
    let cy = size / 2.0 + rng.random_range(-0.06..0.06) * size;
    let thickness = (h * rng.random_range(0.09..0.15)).max(1.0);
    let bright = rng.random_range(0.75f32..1.0);
    // Into pixel coordinates: scale, slant (x shifts with height), centre.
    let segments: Vec<((f32, f32), (f32, f32))> = digit_strokes(digit)
        .into_iter()
        .flat_map(|line| {
            let pts: Vec<(f32, f32)> = line
                .into_iter()
                .map(|(x, y)| {
                    let (x, y) = ((x - 0.5) * w, (y - 0.5) * h);
                    (cx + x - slant * y, cy + y)
                })
                .collect();
            pts.windows(2).map(|p| (p[0], p[1])).collect::<Vec<_>>()
        })
        .collect();
    let n = src.size as usize;
    let mut px = vec![[0.0f32; 3]; n * n];
    for y in 0..n {
        for x in 0..n {
            let p = (x as f32 + 0.5, y as f32 + 0.5);
            let d = segments
                .iter()
                .map(|&(a, b)| segment_distance(p, a, b))
                .fold(f32::MAX, f32::min);
            let v = (thickness / 2.0 - d + 0.5).clamp(0.0, 1.0) * bright;
            px[y * n + x] = [v, v, v];
        }
    }
    Scene {
        images: vec![quantize(&px, src.channels)],
        label: Some(digit as u32),
    }
}

fn check(src: &SyntheticSource) -> Result<(), DatasetError> {
    let fail = |reason: String| Err(DatasetError::Synthetic { reason });
    if src.count == 0 {
        return fail("count must be at least 1".to_string());
    }
    if !(MIN_SIZE..=MAX_SIZE).contains(&src.size) {
        return fail(format!(
            "size {} is outside {MIN_SIZE}..={MAX_SIZE}",
            src.size
        ));
    }
    if src.channels != 1 && src.channels != 3 {
        return fail(format!(
            "channels must be 1 (gray) or 3 (RGB), not {}",
            src.channels
        ));
    }
    let bytes = (src.size as usize)
        .checked_mul(src.size as usize)
        .and_then(|p| p.checked_mul(4))
        .and_then(|p| p.checked_mul(src.count));
    if bytes.is_none_or(|b| b > isize::MAX as usize) {
        return fail(format!(
            "{} images of {}x{} do not fit in memory",
            src.count, src.size, src.size
        ));
    }
    Ok(())
}

/// Generates the dataset `src` describes.
pub(crate) fn generate(
    src: &SyntheticSource,
    progress: &indicatif::ProgressBar,
) -> Result<Dataset, DatasetError> {
    check(src)?;
    let (layout, names, render): (_, &[&str], Render) = match src.variant {
        SyntheticVariant::Single => (Layout::Single, &["images"], scene_single),
        SyntheticVariant::Digits => (Layout::Single, &["images"], scene_digits),
        SyntheticVariant::Paired => (Layout::Paired, &["a", "b"], scene_paired),
        SyntheticVariant::Unpaired => (
            Layout::Unpaired,
            &["a", "b", "mask_a", "mask_b"],
            scene_unpaired,
        ),
    };
    progress.set_length(src.count as u64);
    let scenes: Vec<Scene> = (0..src.count)
        .into_par_iter()
        .map(|i| {
            let scene = render(src, i);
            progress.inc(1);
            scene
        })
        .collect();

    let mut parts: Vec<ImageSet> = names
        .iter()
        .map(|name| {
            let channels = if Dataset::is_mask(name) {
                1
            } else {
                src.channels
            };
            let mut set = ImageSet::new(src.size, src.size, channels);
            set.pixels.reserve_exact(src.count * set.image_len());
            set
        })
        .collect();
    let mut labels = Vec::with_capacity(src.count);
    for scene in scenes {
        for (set, pixels) in parts.iter_mut().zip(&scene.images) {
            set.push(pixels);
        }
        labels.extend(scene.label);
    }
    let has_labels = src.variant != SyntheticVariant::Unpaired;
    let variant = match src.variant {
        SyntheticVariant::Single => "single",
        SyntheticVariant::Paired => "paired",
        SyntheticVariant::Unpaired => "unpaired",
        SyntheticVariant::Digits => "digits",
    };
    Ok(Dataset {
        layout,
        parts: names.iter().map(|n| n.to_string()).zip(parts).collect(),
        labels: has_labels.then_some(labels),
        classes: if src.variant == SyntheticVariant::Digits {
            (0..10).map(|d| d.to_string()).collect()
        } else if has_labels {
            SHAPE_CLASSES.iter().map(|c| c.to_string()).collect()
        } else {
            Vec::new()
        },
        meta: BTreeMap::from([
            ("variant".to_string(), variant.to_string()),
            ("count".to_string(), src.count.to_string()),
            ("size".to_string(), src.size.to_string()),
            ("channels".to_string(), src.channels.to_string()),
            ("seed".to_string(), src.seed.to_string()),
        ]),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn noise_stays_in_range() {
        for x in 0..64 {
            for y in 0..64 {
                let n = hash_noise(42, x, y);
                assert!((-1.0..1.0).contains(&n), "{n}");
            }
        }
    }

    #[test]
    fn shape_distance_is_negative_inside_and_positive_outside() {
        for class in 0..SHAPE_CLASSES.len() {
            let shape = Shape {
                class,
                cx: 20.0,
                cy: 20.0,
                r: 8.0,
                cos: 0.8,
                sin: 0.6,
            };
            assert!(shape.distance(20.0, 20.0) < -1.0, "class {class}");
            assert!(shape.distance(20.0 + 11.0, 20.0) > 0.0, "class {class}");
            assert!(shape.distance(0.0, 0.0) > 5.0, "class {class}");
            // Everything the shape touches lies inside its bounds.
            let (xs, ys) = shape.bounds(64);
            for y in 0..64 {
                for x in 0..64 {
                    let d = shape.distance(x as f32 + 0.5, y as f32 + 0.5);
                    if d < 0.5 {
                        assert!(
                            xs.contains(&x) && ys.contains(&y),
                            "class {class} ({x},{y})"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn hsv_primaries() {
        let close = |a: Rgb, b: Rgb| a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-5);
        assert!(close(hsv(0.0, 1.0, 1.0), [1.0, 0.0, 0.0]));
        assert!(close(hsv(120.0, 1.0, 1.0), [0.0, 1.0, 0.0]));
        assert!(close(hsv(-120.0, 1.0, 1.0), [0.0, 0.0, 1.0]));
        assert!(close(hsv(77.0, 0.0, 0.5), [0.5, 0.5, 0.5]));
    }
}
