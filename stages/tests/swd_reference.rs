//! gantry's SWD against the NumPy port of the published algorithm
//! (`tests/reference/swd/swd_numpy.py`), on crops of real photographs.
//!
//! The two implementations draw different random numbers (ChaCha here, PCG64 there),
//! so they cannot agree bit for bit; what must agree is the distribution of the
//! result. `make_reference.py` ran the NumPy port with 16 seeds per pair and stored
//! each value's mean and sample standard deviation `s`. If both implement the same
//! algorithm, gantry's result is one more draw from that distribution, and a new draw
//! lies within `mean ± t·s·sqrt(1 + 1/16)` with `t = 4.07` (Student's t, 15 degrees of
//! freedom) 99.9% of the time. We use `t = 4`, plus 1e-9 for rounding: with 20 values
//! checked, a correct implementation fails by bad luck about once in 50 seeds (and
//! the seed is fixed, so the test is not flaky), while a real mistake in the
//! pyramid, the normalisation or the distance moves the values by many spreads (the
//! spreads are 1.5-6% of the means; a blur pass alone moves the finest level by 20).

#[path = "reference/swd/fixtures.rs"]
mod fixtures;

use gantry_stages::metrics::swd::{SwdConfig, swd};
use indicatif::ProgressBar;
use serde_json::Value;

fn reference() -> Value {
    let path = fixtures::dir().join("reference.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).expect("reference.json is JSON")
}

fn fnv1a64(bytes: &[u8]) -> String {
    let mut h: u64 = 0xCBF2_9CE4_8422_2325;
    for &b in bytes {
        h = (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01B3);
    }
    format!("{h:016x}")
}

#[test]
fn derived_sets_are_the_bytes_numpy_saw() {
    let reference = reference();
    let sets = reference["sets"].as_object().expect("sets");
    assert!(sets.len() >= 5);
    for (name, want) in sets {
        let set = fixtures::derive(name);
        let shape = [
            set.len(),
            set.height as usize,
            set.width as usize,
            set.channels as usize,
        ];
        let want_shape: Vec<usize> = want["shape"]
            .as_array()
            .expect("shape")
            .iter()
            .map(|v| v.as_u64().expect("dimension") as usize)
            .collect();
        assert_eq!(shape.as_slice(), want_shape.as_slice(), "{name}");
        assert_eq!(
            fnv1a64(&set.pixels),
            want["fnv1a64"].as_str().expect("hash"),
            "{name}"
        );
    }
}

#[test]
fn swd_is_within_the_numpy_ports_run_to_run_spread() {
    let reference = reference();
    let seeds = reference["seeds"].as_array().expect("seeds").len() as f64;
    let widen = (1.0 + 1.0 / seeds).sqrt();
    let cfg = SwdConfig::default();
    let mut report = Vec::new();
    let mut failures = Vec::new();
    for (pair, want) in reference["pairs"].as_object().expect("pairs") {
        let real = fixtures::derive(want["real"].as_str().expect("real"));
        let fake = fixtures::derive(want["fake"].as_str().expect("fake"));
        let got = swd(&real, &fake, &cfg, &ProgressBar::hidden()).expect("valid sets");

        let levels = want["levels"].as_array().expect("levels");
        assert_eq!(got.levels.len(), levels.len(), "{pair}: number of levels");
        let mut checks: Vec<(String, f64, f64, f64)> = Vec::new();
        for (&(resolution, value), level) in got.levels.iter().zip(levels) {
            assert_eq!(
                resolution as u64,
                level["resolution"].as_u64().expect("resolution")
            );
            let (mean, std) = (
                level["mean"].as_f64().expect("mean"),
                level["std"].as_f64().expect("std"),
            );
            checks.push((format!("{resolution}"), value, mean, std));
        }
        let avg = &want["average"];
        checks.push((
            "avg".into(),
            got.average,
            avg["mean"].as_f64().expect("mean"),
            avg["std"].as_f64().expect("std"),
        ));
        for (what, value, mean, std) in checks {
            let z = (value - mean) / (std * widen);
            report.push(format!(
                "{pair:>17} {what:>4}: gantry {value:8.3}  numpy {mean:8.3} ± {std:6.3}  z {z:+.2}"
            ));
            if (value - mean).abs() > 4.0 * std * widen + 1e-9 {
                failures.push(format!("{pair} {what}: {value} vs {mean} ± {std}"));
            }
        }
    }
    println!("{}", report.join("\n"));
    assert!(
        failures.is_empty(),
        "outside the NumPy spread:\n{}",
        failures.join("\n")
    );
}
