//! The pipelines shipped in `pipelines/` are valid, and the quickstart and the
//! reproduction pipelines run end to end (the long ones shortened with `-S`).

mod common;

use std::path::Path;

use common::Project;

fn shipped() -> Vec<std::path::PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines");
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    v.sort();
    v
}

#[test]
fn every_shipped_pipeline_is_valid() {
    let p = Project::new();
    let all = shipped();
    assert!(all.len() >= 5, "{all:?}");
    for file in all {
        let r = p.gantry(&["status", file.to_str().unwrap()]);
        assert_eq!(r.code, 0, "{}: {}", file.display(), r.stderr);
        let d = p.gantry(&["dag", file.to_str().unwrap()]);
        assert_eq!(d.code, 0, "{}: {}", file.display(), d.stderr);
    }
}

fn pipeline(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("pipelines")
        .join(name)
        .display()
        .to_string()
}

/// `gantry run --json -S key=value... file`, which must succeed: a shipped pipeline
/// shortened for a test.
fn run_shortened(p: &Project, file: &str, overrides: &[&str]) {
    let mut args = vec!["run", "--json"];
    for o in overrides {
        args.extend(["-S", o]);
    }
    args.push(file);
    let r = p.gantry(&args);
    assert_eq!(r.code, 0, "{}", r.stderr);
}

fn metrics(p: &Project, pipeline: &str, stage: &str) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(p.out(pipeline, stage).join("metrics.json")).unwrap())
        .unwrap()
}

#[test]
fn quickstart_runs_end_to_end_and_a_rerun_does_nothing() {
    let p = Project::new();
    let file = pipeline("quickstart.yaml");
    p.run_ok(&file);
    for f in [
        "samples.png",
        "losses.csv",
        "loss_ratio.svg",
        "generator.safetensors",
    ] {
        assert!(p.out("quickstart", "dcgan").join(f).is_file(), "dcgan/{f}");
    }
    let m = metrics(&p, "quickstart", "evaluate");
    assert!(
        m["sets"]["dcgan"]["swd"]["average"].as_f64().unwrap() > 0.0,
        "{m}"
    );
    let again = p.run_ok(&file);
    assert!(again.executed().is_empty(), "{:?}", again.outcomes());
}

#[test]
fn seed003_sweep_draws_figure1_with_one_curve_per_ratio() {
    let p = Project::new();
    let file = pipeline("seed003_g_advantage.yaml");
    // 64 images in one batch of 64: 2 epochs are 2 iterations instead of 400.
    run_shortened(
        &p,
        &file,
        &[
            "epochs=2",
            "source={synthetic: {count: 64, size: 32, channels: 3}}",
        ],
    );
    let fig = std::fs::read_to_string(p.out("seed003-g-advantage", "figure1").join("figure.csv"))
        .unwrap();
    for ratio in [1, 2, 4, 50] {
        let stage = format!("dcgan[g_advantage={ratio}]");
        assert_eq!(
            fig.lines()
                .filter(|l| l.starts_with(&format!("\"{stage}\"")) || l.starts_with(&stage))
                .count(),
            2,
            "two epochs of {stage} in figure.csv:\n{fig}"
        );
    }
    assert!(
        p.out("seed003-g-advantage", "figure1")
            .join("figure.svg")
            .is_file()
    );
}

#[test]
fn seed004_plots_both_wgan_variants_and_scores_all_three_generators() {
    let p = Project::new();
    let file = pipeline("seed004_wgan.yaml");
    // 32 images of 32x32 in one batch: 3 epochs are 3 critic steps per variant.
    run_shortened(
        &p,
        &file,
        &[
            "epochs=3",
            "source={synthetic: {count: 32, size: 32, channels: 3}}",
        ],
    );
    let fig =
        std::fs::read_to_string(p.out("seed004-wgan", "wasserstein").join("figure.csv")).unwrap();
    for variant in ["clip", "gp"] {
        let stage = format!("wgan[variant={variant}]");
        let points: Vec<f64> = fig
            .lines()
            .filter(|l| l.trim_start_matches('"').starts_with(&stage))
            .map(|l| l.rsplit(',').next().unwrap().parse().unwrap())
            .collect();
        assert_eq!(points.len(), 3, "one point per step of {stage}:\n{fig}");
        assert!(points.iter().all(|v| v.is_finite()), "{stage}: {points:?}");
    }
    let m = metrics(&p, "seed004-wgan", "evaluate");
    for set in ["wgan[variant=clip]", "wgan[variant=gp]", "dcgan"] {
        let swd = m["sets"][set]["swd"]["average"].as_f64();
        assert!(swd.is_some_and(|v| v > 0.0), "{set}: {m}");
    }
}

#[test]
fn seed002_writes_table3_beside_the_published_row() {
    let p = Project::new();
    let file = pipeline("seed002_table3_digits.yaml");
    run_shortened(
        &p,
        &file,
        &[
            "epochs=1",
            "digits={synthetic: {count: 256, size: 28, channels: 1, variant: digits}}",
        ],
    );
    let t =
        std::fs::read_to_string(p.out("seed002-table3-digits", "cgan").join("table3.md")).unwrap();
    assert!(t.contains("0.819696") && t.contains("95.31%"), "{t}");
    let m = metrics(&p, "seed002-table3-digits", "cgan");
    for k in ["d_loss_last", "accuracy_last", "g_loss_last"] {
        assert!(m[k].as_f64().is_some(), "{k} in {m}");
    }
}

#[path = "../stages/tests/support/inception_weights.rs"]
#[allow(dead_code)]
mod inception_weights;

#[test]
fn seed001_table2_scores_with_inception_v3_weights_from_a_local_file() {
    let p = Project::new();
    let file = pipeline("seed001_table2.yaml");
    let small =
        |seed: u32| format!("{{synthetic: {{count: 4, size: 256, channels: 3, seed: {seed}}}}}");
    let (source, other) = (small(1), small(2));
    let base = [
        "-S",
        &format!("source={source}"),
        "-S",
        &format!("other={other}"),
        "-S",
        "ms_ssim_pairs=20",
    ];

    // Without weights the Inception Score row is left out, and said so.
    let mut args = vec!["run", "--json"];
    args.extend(base);
    args.push(&file);
    let r = p.gantry(&args);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let t = std::fs::read_to_string(p.out("seed001-table2", "table2").join("table.md")).unwrap();
    assert!(!t.contains("Inception Score"), "{t}");
    assert!(
        r.stderr.contains("row `Inception Score` left out"),
        "{}",
        r.stderr
    );

    // With a weights file (pytorch-fid's network, formula weights: the plumbing, not the
    // numbers, is under test here; tests/inception_reference.rs checks the numbers).
    let weights = p.path("pt_inception.safetensors");
    inception_weights::write_weights(&inception_weights::reference(), "fid", &weights);
    let inception = format!("inception={{weights: {}}}", weights.display());
    let mut args = vec!["run", "--json"];
    args.extend(base);
    args.extend([
        "-S",
        &inception,
        "-S",
        "metrics=[swd, ms_ssim, inception_score, fid]",
        &file,
    ]);
    let r = p.gantry(&args);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let m = metrics(&p, "seed001-table2", "evaluate");
    for set in ["progan_standin", "srgan_standin", "real", "real64"] {
        let is = &m["sets"][set]["inception_score"];
        let mean = is["mean"].as_f64().unwrap();
        assert!((1.0..=1008.0).contains(&mean), "{set}: {is}");
    }
    for set in ["progan_standin", "srgan_standin"] {
        assert!(m["sets"][set]["fid"].as_f64().unwrap() >= 0.0, "{m}");
    }
    let t = std::fs::read_to_string(p.out("seed001-table2", "table2").join("table.md")).unwrap();
    assert!(t.contains("Inception Score") && t.contains("2.127"), "{t}");

    // The weights file is an input: changing its bytes makes evaluate stale, naming it.
    let mut bytes = std::fs::read(&weights).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&weights, bytes).unwrap();
    args[0] = "status";
    args.retain(|a| *a != "--json");
    let r = p.gantry(&args);
    let line = r
        .stdout
        .lines()
        .find(|l| l.starts_with("evaluate"))
        .unwrap_or_default();
    assert!(
        line.contains("stale") && line.contains("pt_inception.safetensors"),
        "{}",
        r.stdout
    );
}
