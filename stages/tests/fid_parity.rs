//! FID against the scipy `sqrtm` route of pytorch-fid / TTUR, and its properties.
//!
//! Reference values come from `tests/reference/fid/make_reference.py` (see there for how
//! the sets were made and how to regenerate them).

use std::path::PathBuf;
use std::time::Instant;

use gantry_stages::metrics::frechet::{FeatureStats, FrechetError, frechet_distance};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::Value;

const PARITY_TOLERANCE: f64 = 1e-3;

fn reference_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/reference/fid")
}

fn reference() -> Value {
    let path = reference_dir().join("reference.json");
    let text = std::fs::read_to_string(&path).expect("reference.json is committed");
    serde_json::from_str(&text).expect("reference.json parses")
}

/// A feature set: row-major values and its shape.
struct Set {
    rows: Vec<f32>,
    n: usize,
    dim: usize,
}

impl Set {
    fn stats(&self) -> FeatureStats {
        let mut s = FeatureStats::new(self.dim);
        s.add_batch(&self.rows, self.n).expect("valid set");
        s
    }

    fn transformed(&self, f: impl Fn(usize, f32) -> f32) -> Set {
        let rows = self
            .rows
            .iter()
            .enumerate()
            .map(|(i, &v)| f(i % self.dim, v))
            .collect();
        Set {
            rows,
            n: self.n,
            dim: self.dim,
        }
    }
}

fn as_usize(v: &Value) -> usize {
    usize::try_from(v.as_u64().expect("an integer")).expect("fits usize")
}

fn load_set(reference: &Value, name: &str) -> Set {
    let meta = &reference["sets"][name];
    let (n, dim) = (as_usize(&meta["n"]), as_usize(&meta["dim"]));
    let rows = if let Some(file) = meta["file"].as_str() {
        let bytes = std::fs::read(reference_dir().join(file)).expect("set file is committed");
        bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect()
    } else {
        let rows = generated_set(&meta["generator"]);
        let digest = format!("{:016x}", fnv1a64(&rows));
        assert_eq!(
            Some(digest.as_str()),
            meta["fnv1a64"].as_str(),
            "{name}: the Rust generator must rebuild the Python set bit for bit"
        );
        rows
    };
    assert_eq!(rows.len(), n * dim, "{name}: shape");
    Set { rows, n, dim }
}

/// The integer-only generator of make_reference.py (`generated_set`), step for step.
fn generated_set(spec: &Value) -> Vec<f32> {
    let field = |k: &str| spec[k].as_i64().expect("integer generator parameter");
    let (n, dim, k) = (
        field("n") as usize,
        field("dim") as usize,
        field("factors") as usize,
    );
    let (period, shift) = (field("period"), field("shift"));
    let mut rng = SplitMix64(field("seed") as u64);
    let loadings: Vec<i64> = (0..k * dim).map(|_| rng.int(-4, 5)).collect();
    let mut out = Vec::with_capacity(n * dim);
    for _ in 0..n {
        let factors: Vec<i64> = (0..k).map(|_| rng.int(-512, 512)).collect();
        for j in 0..dim {
            let noise: i64 = (0..3).map(|_| rng.int(-512, 512)).sum();
            let shared: i64 = (0..k).map(|f| loadings[f * dim + j] * factors[f]).sum();
            let x = (1 + j as i64 % period) * noise + shared + shift * (j as i64 % 5);
            out.push((x as f64 / 1024.0) as f32);
        }
    }
    out
}

struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn int(&mut self, lo: i64, hi: i64) -> i64 {
        ((self.next() >> 32) as i64) % (hi - lo) + lo
    }
}

fn fnv1a64(values: &[f32]) -> u64 {
    values
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .fold(0xCBF2_9CE4_8422_2325, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01B3)
        })
}

fn relative(a: f64, b: f64) -> f64 {
    (a - b).abs() / b.abs().max(f64::MIN_POSITIVE)
}

#[test]
fn matches_scipy_sqrtm_route() {
    let reference = reference();
    let mut worst = (0.0f64, String::new());
    let cases = reference["fid"].as_array().expect("fid cases");
    assert!(!cases.is_empty());
    for case in cases {
        let name = case["name"].as_str().expect("case name");
        let a = load_set(&reference, case["a"].as_str().expect("set a"));
        let b = load_set(&reference, case["b"].as_str().expect("set b"));
        let ours = frechet_distance(&a.stats(), &b.stats()).expect("valid sets");
        let eigh = case["eigh_float64"].as_f64().expect("eigh value");
        println!("{name}: gantry {ours:.9}, numpy eigh {eigh:.9}");
        for (version, result) in case["scipy"].as_object().expect("scipy results") {
            let fid = result["fid"].as_f64().expect("fid value");
            let note = match (
                result["eps_fallback"].as_bool(),
                result["rejected"].as_bool(),
            ) {
                (_, Some(true)) => " (rejected by pytorch-fid: imaginary part too large)",
                (Some(true), _) => " (eps offset fallback)",
                _ => "",
            };
            if fid.abs() < 1e-6 {
                // Identical sets: only the absolute error means anything.
                println!("  scipy {version}: {fid:.3e}{note}");
                assert!(ours.abs() < 1e-6, "{name}: {ours} for identical sets");
                continue;
            }
            let rel = relative(ours, fid);
            println!("  scipy {version}: {fid:.9}, relative difference {rel:.2e}{note}");
            if result["rejected"].as_bool() == Some(true) {
                // pytorch-fid raises here; scipy's value is not a reference.
                continue;
            }
            assert!(
                rel <= PARITY_TOLERANCE,
                "{name}: gantry {ours} vs scipy {version} {fid} (relative {rel:.2e})"
            );
            if rel > worst.0 {
                worst = (rel, format!("{name} (scipy {version})"));
            }
        }
    }
    println!("worst relative difference: {:.2e} on {}", worst.0, worst.1);
}

#[test]
fn identical_sets_give_zero() {
    let reference = reference();
    for name in ["d64_a", "d256_a", "d32_dead_a"] {
        let s = load_set(&reference, name).stats();
        let fid = frechet_distance(&s, &s).expect("valid set");
        println!("FID({name}, {name}) = {fid:.3e}");
        assert!((-1e-6..1e-6).contains(&fid), "{name}: {fid} should vanish");
    }
}

#[test]
fn symmetric_in_its_arguments() {
    let reference = reference();
    for (a, b) in [("d64_a", "d64_b"), ("d256_a", "d256_b")] {
        let (a, b) = (
            load_set(&reference, a).stats(),
            load_set(&reference, b).stats(),
        );
        let ab = frechet_distance(&a, &b).expect("valid sets");
        let ba = frechet_distance(&b, &a).expect("valid sets");
        assert_eq!(ab, ba);
    }
    // Equal counts: the order is still canonical.
    let d = load_set(&reference, "d256_dead_a");
    let e = load_set(&reference, "d256_dead_b");
    let (d, e) = (d.stats(), e.stats());
    assert_eq!(
        frechet_distance(&d, &e).expect("valid"),
        frechet_distance(&e, &d).expect("valid")
    );
}

fn assert_close_stats(a: &FeatureStats, b: &FeatureStats, what: &str) {
    assert_eq!(a.count(), b.count(), "{what}: count");
    let scale = b
        .mean()
        .iter()
        .fold(0.0f64, |m, v| m.max(v.abs()))
        .max(1e-300);
    for (x, y) in a.mean().iter().zip(b.mean()) {
        assert!((x - y).abs() <= 1e-9 * scale, "{what}: mean {x} vs {y}");
    }
    let (ca, cb) = (a.covariance(), b.covariance());
    let scale = cb.amax().max(1e-300);
    let diff = (&ca - &cb).amax();
    assert!(
        diff <= 1e-9 * scale,
        "{what}: covariance off by {diff:.2e} of {scale:.2e}"
    );
}

#[test]
fn batches_and_merges_give_the_same_statistics() {
    let reference = reference();
    let set = load_set(&reference, "d64_b");
    let whole = set.stats();

    // The two-pass covariance straight from the definition, as numpy.cov does.
    let n = set.n as f64;
    let mean: Vec<f64> = (0..set.dim)
        .map(|j| {
            set.rows[j..]
                .iter()
                .step_by(set.dim)
                .map(|&v| f64::from(v))
                .sum::<f64>()
                / n
        })
        .collect();
    let mut direct = nalgebra::DMatrix::<f64>::zeros(set.dim, set.dim);
    for row in set.rows.chunks_exact(set.dim) {
        for i in 0..set.dim {
            for j in 0..set.dim {
                direct[(i, j)] += (f64::from(row[i]) - mean[i]) * (f64::from(row[j]) - mean[j]);
            }
        }
    }
    direct /= n - 1.0;
    let cov = whole.covariance();
    assert!((&cov - &direct).amax() <= 1e-12 * direct.amax());
    for (x, y) in whole.mean().iter().zip(&mean) {
        assert!((x - y).abs() <= 1e-12);
    }

    for batch_rows in [1, 7, 100, 333, 999] {
        let mut streamed = FeatureStats::new(set.dim);
        for batch in set.rows.chunks(batch_rows * set.dim) {
            streamed
                .add_batch(batch, batch.len() / set.dim)
                .expect("valid batch");
        }
        assert_close_stats(&streamed, &whole, &format!("batches of {batch_rows}"));
    }

    // Merging parts of uneven size, as parallel workers would, in a scrambled order.
    let cuts = [0, 13, 400, 401, 870, set.n];
    let parts: Vec<FeatureStats> = cuts
        .windows(2)
        .map(|w| {
            let mut s = FeatureStats::new(set.dim);
            s.add_batch(&set.rows[w[0] * set.dim..w[1] * set.dim], w[1] - w[0])
                .expect("valid part");
            s
        })
        .collect();
    let mut merged = FeatureStats::new(set.dim);
    for i in [3, 0, 4, 2, 1] {
        merged.merge(&parts[i]).expect("same dimension");
    }
    assert_close_stats(&merged, &whole, "merged parts");
    merged
        .merge(&FeatureStats::new(set.dim))
        .expect("empty merge");
    assert_close_stats(&merged, &whole, "merged with empty");
}

#[test]
fn far_from_zero_features_keep_their_precision() {
    // A shift of 10⁴ with unit spread: E[x²] − E[x]² would lose ~8 digits here.
    let reference = reference();
    let set = load_set(&reference, "d64_a");
    let shifted = set.transformed(|_, v| v + 1.0e4);
    let (a, b) = (set.stats(), shifted.stats());
    let diff = (&a.covariance() - &b.covariance()).amax();
    // Only the f32 rounding of the shifted inputs (ulp 1e-3 at 1e4) may differ.
    assert!(diff < 2e-3, "covariance moved by {diff}");
}

#[test]
fn grows_as_one_set_moves_away() {
    let reference = reference();
    let set = load_set(&reference, "d64_a");
    let base = set.stats();
    let mut last = 0.0;
    for step in 1..=6 {
        let shift = 0.2 * step as f32;
        let moved = set.transformed(|j, v| v + if j % 2 == 0 { shift } else { 0.0 });
        let fid = frechet_distance(&base, &moved.stats()).expect("valid sets");
        assert!(fid > last, "shift {shift}: {fid} after {last}");
        last = fid;
    }
    let mut last = 0.0;
    for step in 1..=6 {
        let scale = 1.0 + 0.25 * step as f32;
        let scaled = set.transformed(|_, v| v * scale);
        let fid = frechet_distance(&base, &scaled.stats()).expect("valid sets");
        assert!(fid > last, "scale {scale}: {fid} after {last}");
        last = fid;
    }
}

#[test]
fn incompatible_sets_are_errors() {
    let reference = reference();
    let a = load_set(&reference, "d64_a").stats();
    let b = load_set(&reference, "d256_a").stats();
    assert_eq!(
        frechet_distance(&a, &b),
        Err(FrechetError::DimensionMismatch {
            left: 64,
            right: 256
        })
    );
    let mut c = a.clone();
    assert!(c.merge(&b).is_err());
    assert_eq!(c.count(), a.count(), "a failed merge changes nothing");
    assert_eq!(
        frechet_distance(&a, &FeatureStats::new(64)),
        Err(FrechetError::TooFewSamples { count: 0 })
    );
}

const TIMING_DIM: usize = 2048;

/// Correlated features: a few shared factors plus per-feature noise, like pooled CNN
/// activations; the covariance is full rank once n > TIMING_DIM.
fn timing_features(rng: &mut ChaCha8Rng, n: usize, shift: f32) -> Vec<f32> {
    let factors = 16;
    let loadings: Vec<f32> = (0..factors * TIMING_DIM)
        .map(|_| rng.random_range(-1.0..1.0))
        .collect();
    let mut out = Vec::with_capacity(n * TIMING_DIM);
    for _ in 0..n {
        let z: Vec<f32> = (0..factors).map(|_| rng.random_range(-1.0..1.0)).collect();
        for j in 0..TIMING_DIM {
            let shared: f32 = (0..factors)
                .map(|k| z[k] * loadings[k * TIMING_DIM + j])
                .sum();
            out.push(shared + rng.random_range(-0.5..0.5) + shift);
        }
    }
    out
}

/// Wall-clock timing at Inception-v3 size. Ignored by default; in release:
/// `cargo test --release -p gantry-stages --test fid_parity -- --ignored --nocapture`.
#[test]
#[ignore = "timing; run in release"]
fn time_frechet_distance_at_2048() {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    for &(n_a, n_b) in &[(500, 500), (5000, 5000)] {
        let a_rows = timing_features(&mut rng, n_a, 0.0);
        let b_rows = timing_features(&mut rng, n_b, 0.1);
        let start = Instant::now();
        let mut a = FeatureStats::new(TIMING_DIM);
        for batch in a_rows.chunks(100 * TIMING_DIM) {
            a.add_batch(batch, batch.len() / TIMING_DIM)
                .expect("valid batch");
        }
        let mut b = FeatureStats::new(TIMING_DIM);
        b.add_batch(&b_rows, n_b).expect("valid batch");
        let stats_time = start.elapsed();
        let start = Instant::now();
        let fid = frechet_distance(&a, &b).expect("valid sets");
        println!(
            "d={TIMING_DIM} n={n_a}+{n_b}: stats {:.2?}, frechet_distance {:.2?} (FID {fid:.4})",
            stats_time,
            start.elapsed()
        );
    }
}
