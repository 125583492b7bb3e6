//! The contract of `metrics::swd::swd` that the `evaluate` stage relies on: results
//! that repeat bit for bit (across runs and thread counts), gray and odd-sized images,
//! the progress bar, the config's serde form, and a typed error for every input it
//! cannot score.

#[path = "reference/swd/fixtures.rs"]
mod fixtures;

use gantry_datasets::ImageSet;
use gantry_stages::metrics::swd::{SwdConfig, SwdError, SwdResult, swd};
use indicatif::ProgressBar;

fn quick(seed: u64) -> SwdConfig {
    SwdConfig {
        dir_repeats: 2,
        dirs_per_repeat: 24,
        seed,
        ..SwdConfig::default()
    }
}

fn bits(r: &SwdResult) -> Vec<u64> {
    r.levels
        .iter()
        .map(|&(_, d)| d.to_bits())
        .chain([r.average.to_bits()])
        .collect()
}

fn on_threads(threads: usize, real: &ImageSet, fake: &ImageSet, cfg: &SwdConfig) -> SwdResult {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .expect("thread pool");
    pool.install(|| swd(real, fake, cfg, &ProgressBar::hidden()))
        .expect("valid sets")
}

#[test]
fn same_seed_same_bits_whatever_the_thread_count() {
    // 40 images: more than two batches, the last one partial.
    let real = fixtures::head(&fixtures::photos("a"), 40);
    let fake = fixtures::head(&fixtures::photos("b"), 40);
    let one = on_threads(1, &real, &fake, &quick(9));
    let two = on_threads(2, &real, &fake, &quick(9));
    let three = on_threads(3, &real, &fake, &quick(9));
    let again = on_threads(2, &real, &fake, &quick(9));
    assert_eq!(bits(&one), bits(&two));
    assert_eq!(bits(&one), bits(&three));
    assert_eq!(bits(&one), bits(&again));
    let other_seed = on_threads(2, &real, &fake, &quick(10));
    assert_ne!(bits(&one), bits(&other_seed));
    assert_eq!(
        one.levels.iter().map(|&(r, _)| r).collect::<Vec<_>>(),
        vec![64, 32, 16]
    );
    let mean = one.levels.iter().map(|&(_, d)| d).sum::<f64>() / 3.0;
    assert_eq!(one.average, mean);
}

#[test]
fn gray_images_are_scored() {
    let real = fixtures::gray(&fixtures::head(&fixtures::photos("a"), 24));
    let blurred = fixtures::blur(&real, 2);
    let itself = swd(&real, &real, &quick(1), &ProgressBar::hidden()).expect("gray");
    let worse = swd(&real, &blurred, &quick(1), &ProgressBar::hidden()).expect("gray");
    assert_eq!(itself.levels.len(), 3);
    assert!(worse.average > itself.average, "{worse:?} vs {itself:?}");
}

#[test]
fn odd_and_rectangular_images_are_scored() {
    // 50x37: levels 50x37, 25x19 (the smaller side is reported); 13x10 is below 16.
    let photos = fixtures::head(&fixtures::photos("a"), 12);
    let mut set = ImageSet::new(50, 37, 3);
    for i in 0..photos.len() {
        let image = photos.image(i);
        let mut crop = Vec::with_capacity(50 * 37 * 3);
        for y in 0..37 {
            crop.extend_from_slice(&image[y * 64 * 3..(y * 64 + 50) * 3]);
        }
        set.push(&crop);
    }
    let r = swd(
        &set,
        &fixtures::noise(&set, 10.0),
        &quick(2),
        &ProgressBar::hidden(),
    )
    .expect("odd sizes");
    assert_eq!(
        r.levels.iter().map(|&(res, _)| res).collect::<Vec<_>>(),
        vec![37, 19]
    );
    assert!(r.levels.iter().all(|&(_, d)| d.is_finite() && d > 0.0));
}

#[test]
fn constant_images_score_zero_not_nan() {
    // Every Laplacian level is exactly 0 and the coarsest is one value: nothing to
    // normalise (standard deviation 0) and nothing to tell apart.
    let mut set = ImageSet::new(32, 32, 1);
    for _ in 0..3 {
        set.push(&[77; 32 * 32]);
    }
    let r = swd(&set, &set, &quick(0), &ProgressBar::hidden()).expect("constant");
    assert_eq!(bits(&r), vec![0f64.to_bits(); 3]);
}

#[test]
fn the_progress_bar_ends_full() {
    let set = fixtures::head(&fixtures::photos("a"), 20);
    let bar = ProgressBar::hidden();
    swd(&set, &set, &quick(0), &bar).expect("valid sets");
    assert!(bar.length().is_some_and(|l| l > 0));
    assert_eq!(bar.position(), bar.length().unwrap_or(0));
}

#[test]
fn config_defaults_are_the_papers_and_unknown_keys_are_refused() {
    let d = SwdConfig::default();
    assert_eq!(
        (
            d.nhood_size,
            d.nhoods_per_image,
            d.dir_repeats,
            d.dirs_per_repeat,
            d.min_resolution
        ),
        (7, 128, 4, 128, 16)
    );
    let partial: SwdConfig = serde_json::from_str(r#"{"seed": 3}"#).expect("partial config");
    assert_eq!(
        partial,
        SwdConfig {
            seed: 3,
            ..SwdConfig::default()
        }
    );
    let typo = serde_json::from_str::<SwdConfig>(r#"{"nhood": 5}"#);
    assert!(typo.is_err());
    let back: SwdConfig =
        serde_json::from_str(&serde_json::to_string(&d).expect("serialise")).expect("parse");
    assert_eq!(back, d);
}

fn rgb(width: u32, height: u32, count: usize) -> ImageSet {
    let mut set = ImageSet::new(width, height, 3);
    for i in 0..count {
        let image: Vec<u8> = (0..set.image_len())
            .map(|p| ((p * 7 + i * 13) % 251) as u8)
            .collect();
        set.push(&image);
    }
    set
}

fn err(real: &ImageSet, fake: &ImageSet, cfg: &SwdConfig) -> SwdError {
    match swd(real, fake, cfg, &ProgressBar::hidden()) {
        Ok(r) => panic!("expected an error, got {r:?}"),
        Err(e) => e,
    }
}

#[test]
fn bad_inputs_are_typed_errors() {
    let cfg = quick(0);
    let set = rgb(32, 32, 4);

    let e = err(&set, &rgb(32, 32, 3), &cfg);
    assert!(
        matches!(e, SwdError::CountMismatch { real: 4, fake: 3 }),
        "{e}"
    );

    let e = err(&set, &rgb(32, 16, 4), &cfg);
    assert!(matches!(e, SwdError::ShapeMismatch { .. }), "{e}");
    assert!(
        e.to_string().contains("32x32x3") && e.to_string().contains("32x16x3"),
        "{e}"
    );

    let mut gray = ImageSet::new(32, 32, 1);
    gray.push(&[0; 32 * 32]);
    assert!(matches!(
        err(&rgb(32, 32, 1), &gray, &cfg),
        SwdError::ShapeMismatch { .. }
    ));

    let e = err(&rgb(15, 40, 2), &rgb(15, 40, 2), &cfg);
    assert!(
        matches!(
            e,
            SwdError::TooSmall {
                width: 15,
                height: 40,
                ..
            }
        ),
        "{e}"
    );

    let empty = ImageSet::new(32, 32, 3);
    assert!(matches!(
        err(&empty, &empty, &cfg),
        SwdError::EmptySet { which: "real" }
    ));
    assert!(matches!(
        err(&set, &empty, &cfg),
        SwdError::EmptySet { which: "fake" }
    ));

    let mut ragged = rgb(32, 32, 2);
    ragged.pixels.pop();
    assert!(matches!(
        err(&ragged, &set, &cfg),
        SwdError::MalformedSet { which: "real", .. }
    ));
    let zero = ImageSet {
        width: 0,
        ..set.clone()
    };
    assert!(matches!(
        err(&set, &zero, &cfg),
        SwdError::MalformedSet { which: "fake", .. }
    ));

    for (bad, field) in [
        (
            SwdConfig {
                nhood_size: 6,
                ..cfg.clone()
            },
            "nhood_size",
        ),
        (
            SwdConfig {
                nhood_size: 0,
                ..cfg.clone()
            },
            "nhood_size",
        ),
        (
            SwdConfig {
                nhoods_per_image: 0,
                ..cfg.clone()
            },
            "nhoods_per_image",
        ),
        (
            SwdConfig {
                dir_repeats: 0,
                ..cfg.clone()
            },
            "dir_repeats",
        ),
        (
            SwdConfig {
                dirs_per_repeat: 0,
                ..cfg.clone()
            },
            "dirs_per_repeat",
        ),
        (
            SwdConfig {
                min_resolution: 5,
                ..cfg.clone()
            },
            "min_resolution",
        ),
    ] {
        let e = err(&set, &set, &bad);
        assert!(
            matches!(e, SwdError::InvalidConfig { field: f, .. } if f == field),
            "{field}: {e}"
        );
    }
}
