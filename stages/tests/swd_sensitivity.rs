//! SWD responds to what it should: it grows with every further blur pass and with
//! every increase of the noise, and a set compared with itself scores only the noise
//! floor of the sampling. Real photo crops (`tests/reference/swd/photos_a.png`),
//! degraded by the integer blur and noise that `make_reference.py` also uses.

#[path = "reference/swd/fixtures.rs"]
mod fixtures;

use gantry_datasets::ImageSet;
use gantry_stages::metrics::swd::{SwdConfig, SwdResult, swd};
use indicatif::ProgressBar;

/// 64 images and 2 x 64 directions keep a debug-build test to seconds; the effects
/// checked here are many times the run-to-run spread even so.
fn small() -> SwdConfig {
    SwdConfig {
        dir_repeats: 2,
        dirs_per_repeat: 64,
        seed: 5,
        ..SwdConfig::default()
    }
}

fn clean() -> ImageSet {
    fixtures::head(&fixtures::photos("a"), 64)
}

fn score(real: &ImageSet, fake: &ImageSet) -> SwdResult {
    swd(real, fake, &small(), &ProgressBar::hidden()).expect("valid sets")
}

fn assert_increasing(what: &str, results: &[(String, SwdResult)]) {
    let table: Vec<String> = results
        .iter()
        .map(|(name, r)| format!("{name:>10}: {:?} avg {:.2}", r.levels, r.average))
        .collect();
    println!("{what}:\n{}", table.join("\n"));
    for pair in results.windows(2) {
        let ((a_name, a), (b_name, b)) = (&pair[0], &pair[1]);
        assert!(
            b.average > a.average,
            "{what}: {b_name} ({}) <= {a_name} ({})",
            b.average,
            a.average
        );
        // The finest level carries blur and noise most; it must grow too.
        assert!(
            b.levels[0].1 > a.levels[0].1,
            "{what}, finest level: {b_name} ({}) <= {a_name} ({})",
            b.levels[0].1,
            a.levels[0].1
        );
    }
}

#[test]
fn swd_grows_with_every_blur_pass() {
    let real = clean();
    let mut results = vec![("itself".to_string(), score(&real, &real))];
    for passes in [1, 2, 4, 8] {
        results.push((
            format!("blur x{passes}"),
            score(&real, &fixtures::blur(&real, passes)),
        ));
    }
    assert_increasing("blur", &results);
}

#[test]
fn swd_grows_with_the_noise() {
    let real = clean();
    let mut results = vec![("itself".to_string(), score(&real, &real))];
    for amplitude in [2.0, 6.0, 16.0, 40.0] {
        results.push((
            format!("noise {amplitude}"),
            score(&real, &fixtures::noise(&real, amplitude)),
        ));
    }
    assert_increasing("noise", &results);
}

#[test]
fn a_set_against_itself_scores_the_sampling_floor_only() {
    // The two sets draw independent neighbourhoods (as the original does), so the
    // score is not 0 but the sampling noise: well below any real difference, and
    // shrinking as the sets grow.
    let all = fixtures::photos("a");
    let small_set = fixtures::head(&all, 32);
    let floor_small = score(&small_set, &small_set).average;
    let floor = score(&all, &all).average;
    let blurred = score(&all, &fixtures::blur(&all, 1)).average;
    println!("floor 32 images {floor_small:.2}, 128 images {floor:.2}; one blur pass {blurred:.2}");
    assert!(floor > 0.0);
    assert!(
        floor < floor_small,
        "the floor should fall with more images"
    );
    assert!(
        floor < 0.7 * blurred,
        "floor {floor} vs one blur pass {blurred}"
    );
}
