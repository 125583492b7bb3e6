//! Image sets of the SWD tests: the committed photo crops and the sets derived from
//! them. The derivations repeat `make_reference.py`'s integer arithmetic bit for bit,
//! so the Rust tests see exactly the sets the NumPy reference was computed on.
//! Included with `#[path]` by `tests/swd_*.rs`; not every test uses every function.
#![allow(dead_code)]

use std::path::PathBuf;

use gantry_datasets::ImageSet;

pub const SIDE: u32 = 64;
const GRID_COLUMNS: u32 = 16;

pub fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/reference/swd")
}

/// `photos_a` or `photos_b`: 128 RGB 64x64 crops, cut out of a 16-column PNG grid.
pub fn photos(name: &str) -> ImageSet {
    let path = dir().join(format!("photos_{name}.png"));
    let grid = image::open(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .into_rgb8();
    let rows = grid.height() / SIDE;
    let mut set = ImageSet::new(SIDE, SIDE, 3);
    for r in 0..rows {
        for c in 0..GRID_COLUMNS {
            let mut pixels = Vec::with_capacity(set.image_len());
            for y in 0..SIDE {
                for x in 0..SIDE {
                    pixels.extend_from_slice(&grid.get_pixel(c * SIDE + x, r * SIDE + y).0);
                }
            }
            set.push(&pixels);
        }
    }
    set
}

/// The first `count` images.
pub fn head(set: &ImageSet, count: usize) -> ImageSet {
    ImageSet {
        pixels: set.pixels[..count * set.image_len()].to_vec(),
        ..set.clone()
    }
}

/// `passes` times the binomial [1, 2, 1] / 4 along rows, then columns, edges
/// replicated, rounded as `(a + 2b + c + 2) >> 2`.
pub fn blur(set: &ImageSet, passes: usize) -> ImageSet {
    let (w, h, c) = (
        set.width as usize,
        set.height as usize,
        set.channels as usize,
    );
    let mut out = set.clone();
    let mut tmp = vec![0u8; set.image_len()];
    for image in out.pixels.chunks_exact_mut(set.image_len()) {
        for _ in 0..passes {
            let at = |x: usize, y: usize, ch: usize| (y * w + x) * c + ch;
            for y in 0..h {
                for x in 0..w {
                    for ch in 0..c {
                        let a = image[at(x.saturating_sub(1), y, ch)] as u32;
                        let b = image[at(x, y, ch)] as u32;
                        let d = image[at((x + 1).min(w - 1), y, ch)] as u32;
                        tmp[at(x, y, ch)] = ((a + 2 * b + d + 2) >> 2) as u8;
                    }
                }
            }
            for y in 0..h {
                for x in 0..w {
                    for ch in 0..c {
                        let a = tmp[at(x, y.saturating_sub(1), ch)] as u32;
                        let b = tmp[at(x, y, ch)] as u32;
                        let d = tmp[at(x, (y + 1).min(h - 1), ch)] as u32;
                        image[at(x, y, ch)] = ((a + 2 * b + d + 2) >> 2) as u8;
                    }
                }
            }
        }
    }
    out
}

fn splitmix64(i: u64) -> u64 {
    let mut z = i.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Adds nearly Gaussian noise of standard deviation `amplitude` (the sum of four
/// 16-bit words of `splitmix64(index)`, centred and scaled), rounded and clipped.
pub fn noise(set: &ImageSet, amplitude: f64) -> ImageSet {
    let mut out = set.clone();
    for (i, p) in out.pixels.iter_mut().enumerate() {
        let h = splitmix64(i as u64);
        let s: i64 = (0..4).map(|k| ((h >> (16 * k)) & 0xFFFF) as i64).sum();
        let v = *p as f64 + amplitude * ((s - 131_070) as f64 / 37837.23);
        *p = (v + 0.5).floor().clamp(0.0, 255.0) as u8;
    }
    out
}

/// BT.601 luma in 16-bit fixed point.
pub fn gray(set: &ImageSet) -> ImageSet {
    let mut out = ImageSet::new(set.width, set.height, 1);
    out.pixels = set
        .pixels
        .chunks_exact(3)
        .map(|p| {
            ((19595 * p[0] as u32 + 38470 * p[1] as u32 + 7471 * p[2] as u32 + 32768) >> 16) as u8
        })
        .collect();
    out
}

/// A set named like `make_reference.py`'s pairs: `a`, `b`, `blur(a, 1)`,
/// `noise(a, 8)`, `gray(b)`.
pub fn derive(name: &str) -> ImageSet {
    match name {
        "a" | "b" => photos(name),
        _ => {
            let open = name
                .find('(')
                .unwrap_or_else(|| panic!("unknown set {name}"));
            let args: Vec<&str> = name[open + 1..name.len() - 1]
                .split(',')
                .map(str::trim)
                .collect();
            let base = derive(args[0]);
            match &name[..open] {
                "blur" => blur(&base, args[1].parse().expect("blur passes")),
                "noise" => noise(&base, args[1].parse().expect("noise amplitude")),
                "gray" => gray(&base),
                other => panic!("unknown derivation {other}"),
            }
        }
    }
}
