//! Inception Score against float64 evaluations of the formula, and its properties.
//!
//! Reference tables and values come from `tests/reference/fid/make_reference.py`.

use std::path::PathBuf;

use gantry_stages::metrics::inception_score::{IsError, inception_score};
use serde_json::Value;

fn reference_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/reference/fid")
}

fn relative(a: f64, b: f64) -> f64 {
    (a - b).abs() / b.abs().max(f64::MIN_POSITIVE)
}

#[test]
fn matches_numpy_formula() {
    let text = std::fs::read_to_string(reference_dir().join("reference.json"))
        .expect("reference.json is committed");
    let reference: Value = serde_json::from_str(&text).expect("reference.json parses");
    let cases = reference["inception_score"].as_array().expect("IS cases");
    assert!(!cases.is_empty());
    for case in cases {
        let name = case["name"].as_str().expect("name");
        let file = case["file"].as_str().expect("file");
        let count = |k: &str| case[k].as_u64().expect("integer") as usize;
        let (n, classes, splits) = (count("n"), count("classes"), count("splits"));
        let bytes = std::fs::read(reference_dir().join(file)).expect("table is committed");
        let probs: Vec<f32> = bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        let is = inception_score(&probs, n, classes, splits).expect("valid table");
        assert_eq!(is.splits, splits);

        // Same formula, same summation order, same libm: agreement to the last bits.
        let seq = &case["sequential"];
        let (mean, std) = (
            seq["mean"].as_f64().expect("mean"),
            seq["std"].as_f64().expect("std"),
        );
        let (rm, rs) = (relative(is.mean, mean), relative(is.std, std));
        println!(
            "{name}: gantry {} ± {}; sequential reference off by {rm:.1e} / {rs:.1e}",
            is.mean, is.std
        );
        assert!(rm <= 1e-14 && rs <= 1e-12, "{name}: vs sequential");

        // numpy sums pairwise and has its own SIMD log: rounding-level differences only.
        let np = &case["numpy"];
        let (mean, std) = (
            np["mean"].as_f64().expect("mean"),
            np["std"].as_f64().expect("std"),
        );
        let (rm, rs) = (relative(is.mean, mean), relative(is.std, std));
        println!("{name}: numpy reference off by {rm:.1e} / {rs:.1e}");
        assert!(rm <= 1e-9 && rs <= 1e-9, "{name}: vs numpy");
    }
}

#[test]
fn identical_rows_score_one() {
    let row = [0.1f32, 0.2, 0.3, 0.4];
    let probs: Vec<f32> = row.iter().copied().cycle().take(4 * 100).collect();
    let is = inception_score(&probs, 100, 4, 10).expect("valid table");
    assert!((is.mean - 1.0).abs() < 1e-12, "{is:?}");
    assert!(is.std < 1e-12);
}

#[test]
fn confident_uniform_assignment_scores_the_class_count() {
    let classes = 10;
    let n = 1000;
    let mut probs = vec![0.0f32; n * classes];
    for i in 0..n {
        probs[i * classes + i % classes] = 1.0;
    }
    let is = inception_score(&probs, n, classes, 10).expect("valid table");
    assert!((is.mean - classes as f64).abs() < 1e-12, "{is:?}");
    assert!(is.std < 1e-12);
}

#[test]
fn invalid_tables_are_errors() {
    let good = [0.5f32, 0.5, 0.25, 0.75];
    assert!(inception_score(&good, 2, 2, 2).is_ok());

    let mut bad = good;
    bad[2] = f32::NAN;
    assert!(matches!(
        inception_score(&bad, 2, 2, 1),
        Err(IsError::InvalidProbability {
            row: 1,
            class: 0,
            ..
        })
    ));
    bad[2] = f32::INFINITY;
    assert!(matches!(
        inception_score(&bad, 2, 2, 1),
        Err(IsError::InvalidProbability {
            row: 1,
            class: 0,
            ..
        })
    ));
    bad = [1.1, -0.1, 0.25, 0.75];
    assert!(matches!(
        inception_score(&bad, 2, 2, 1),
        Err(IsError::InvalidProbability {
            row: 0,
            class: 1,
            ..
        })
    ));
    // Logits instead of probabilities.
    bad = [0.5, 0.5, 2.0, -1.0];
    let err = inception_score(&bad, 2, 2, 1).expect_err("negative");
    assert!(err.to_string().contains("row 1"), "{err}");
    bad = [0.5, 0.5, 0.5, 0.6];
    let err = inception_score(&bad, 2, 2, 1).expect_err("row sum");
    assert!(matches!(err, IsError::RowSum { row: 1, .. }));
    assert!(err.to_string().contains("row 1"), "{err}");
    // Inside the tolerance: accepted.
    assert!(inception_score(&[0.5, 0.5005, 0.25, 0.75], 2, 2, 1).is_ok());

    assert!(matches!(
        inception_score(&good, 2, 3, 1),
        Err(IsError::Shape { .. })
    ));
    assert_eq!(
        inception_score(&good, 2, 2, 3),
        Err(IsError::Splits { splits: 3, n: 2 })
    );
}
