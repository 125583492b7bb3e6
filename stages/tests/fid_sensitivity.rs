//! FID through the `classifier` network's features grows monotonically as real images
//! are increasingly noised or blurred (issue 4's sensitivity requirement, at image level).
//! The network is freshly initialised from a seed: random convolutional features already
//! separate these distortions, and the test needs no training.

use gantry_datasets::{ImageSet, OnError, Source, SyntheticSource, SyntheticVariant, import};
use gantry_stages::classifier::{ClassifierSpec, FEATURES, SmallCnn, apply};
use gantry_stages::metrics::frechet::{FeatureStats, frechet_distance};
use gantry_stages::train::init::{Init, init};

type B = burn::backend::Flex;

fn digits(seed: u64) -> ImageSet {
    let src = Source::Synthetic(SyntheticSource {
        count: 400,
        size: 16,
        channels: 1,
        variant: SyntheticVariant::Digits,
        seed,
    });
    let (d, _) = import(
        &src,
        std::path::Path::new("."),
        OnError::Fail,
        &indicatif::ProgressBar::hidden(),
    )
    .unwrap();
    d.parts["images"].clone()
}

fn noised(set: &ImageSet, sigma: f32, seed: u64) -> ImageSet {
    let mut out = set.clone();
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for px in out.pixels.iter_mut() {
        // Two uniforms → one normal (Box–Muller), from a xorshift stream.
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 11) as f32 / (1u64 << 53) as f32
        };
        let (u1, u2) = (1.0 - next(), next());
        let z = (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos();
        *px = (*px as f32 + sigma * z).round().clamp(0.0, 255.0) as u8;
    }
    out
}

/// A 3×3 box blur applied `times` times.
fn blurred(set: &ImageSet, times: usize) -> ImageSet {
    let (w, h) = (set.width as usize, set.height as usize);
    let mut out = set.clone();
    for _ in 0..times {
        let src = out.clone();
        for i in 0..src.len() {
            let img = src.image(i);
            let dst = &mut out.pixels[i * w * h..(i + 1) * w * h];
            for y in 0..h {
                for x in 0..w {
                    let mut sum = 0u32;
                    let mut n = 0u32;
                    for dy in -1i32..=1 {
                        for dx in -1i32..=1 {
                            let (xx, yy) = (x as i32 + dx, y as i32 + dy);
                            if xx >= 0 && yy >= 0 && (xx as usize) < w && (yy as usize) < h {
                                sum += img[yy as usize * w + xx as usize] as u32;
                                n += 1;
                            }
                        }
                    }
                    dst[y * w + x] = ((sum + n / 2) / n) as u8;
                }
            }
        }
    }
    out
}

fn fid(net: &SmallCnn<B>, a: &ImageSet, b: &ImageSet) -> f64 {
    let dev = Default::default();
    let stats = |s: &ImageSet| {
        let (_, feats) = apply(net, s, &dev).unwrap();
        let mut st = FeatureStats::new(FEATURES);
        st.add_batch(&feats, s.len()).unwrap();
        st
    };
    frechet_distance(&stats(a), &stats(b)).unwrap()
}

fn network() -> SmallCnn<B> {
    let spec = ClassifierSpec {
        width: 16,
        height: 16,
        channels: 1,
        features: 16,
        classes: (0..10).map(|i| i.to_string()).collect(),
    };
    let dev = Default::default();
    init(SmallCnn::<B>::new(&spec, &dev), Init::Uniform, 7, 0, &dev)
}

#[test]
fn fid_grows_with_noise_and_blur() {
    let net = network();
    let real = digits(1);
    let other = digits(2);
    let base = fid(&net, &real, &other);
    let mut last = base;
    for sigma in [8.0, 24.0, 48.0, 96.0] {
        let d = fid(&net, &real, &noised(&other, sigma, 5));
        eprintln!("noise sigma {sigma}: FID {d:.4} (clean {base:.4})");
        assert!(d > last, "FID must grow with noise: {d} after {last}");
        last = d;
    }
    let mut last = base;
    for times in [1, 2, 4] {
        let d = fid(&net, &real, &blurred(&other, times));
        eprintln!("blur x{times}: FID {d:.4}");
        assert!(d > last, "FID must grow with blur: {d} after {last}");
        last = d;
    }
}
