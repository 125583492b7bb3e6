//! Training stages, end to end through the `gantry` binary: they learn (SWD against the
//! untrained generator), a killed run resumes to the same weights, raising `epochs`
//! trains only the extra epochs, a NaN stops the stage with a clear message, and a
//! backend the build lacks is one error.

mod common;

use std::time::{Duration, Instant};

use common::{Project, snapshot};

/// Tiny networks on the built-in shapes at 16x16: a few hundred steps in seconds.
const DATA: &str = r#"
  shapes:
    kind: dataset
    from: { synthetic: { count: 256, size: 16, channels: 3 } }
"#;

fn swd_of(p: &Project, pipeline: &str, set: &str) -> f64 {
    let m: serde_json::Value = serde_json::from_slice(
        &std::fs::read(p.out(pipeline, "eval").join("metrics.json")).unwrap(),
    )
    .unwrap();
    m["sets"][set]["swd"]["average"]
        .as_f64()
        .unwrap_or_else(|| panic!("no SWD for `{set}` in {m}"))
}

#[test]
fn every_gan_stage_lowers_swd_against_its_untrained_generator() {
    let p = Project::new();
    p.write(
        "learn.yaml",
        &format!(
            r#"name: learn
seed: 1
stages:{DATA}
  dcgan:
    kind: dcgan
    input: shapes
    batch_size: 32
    features: 16
    latent_dim: 32
    matrix: {{ epochs: [0, 40] }}
  clip:
    kind: wgan
    input: shapes
    variant: clip
    n_critic: 2
    batch_size: 32
    features: 16
    latent_dim: 32
    d_optimizer: {{ lr: 0.0005 }}
    g_optimizer: {{ lr: 0.0005 }}
    matrix: {{ epochs: [0, 40] }}
  gp:
    kind: wgan
    input: shapes
    variant: gp
    n_critic: 5
    batch_size: 32
    features: 16
    latent_dim: 32
    d_optimizer: {{ lr: 0.0005 }}
    g_optimizer: {{ lr: 0.0005 }}
    matrix: {{ epochs: [0, 40] }}
  eval:
    kind: evaluate
    real: shapes
    fake: [dcgan, clip, gp]
    metrics: [swd]
"#
        ),
    );
    p.run_ok("learn.yaml");
    for stage in ["dcgan", "clip", "gp"] {
        let untrained = swd_of(&p, "learn", &format!("{stage}[epochs=0]"));
        let trained = swd_of(&p, "learn", &format!("{stage}[epochs=40]"));
        eprintln!("{stage}: SWD untrained {untrained:.1}, after 320 steps {trained:.1}");
        assert!(
            trained < 0.85 * untrained,
            "{stage}: SWD {trained} after training vs {untrained} untrained"
        );
    }
}

fn dcgan_pipeline(epochs: usize) -> String {
    format!(
        r#"name: resume
seed: 3
stages:
  shapes:
    kind: dataset
    from: {{ synthetic: {{ count: 128, size: 16, channels: 3 }} }}
  gan:
    kind: dcgan
    input: shapes
    epochs: {epochs}
    batch_size: 16
    features: 8
    latent_dim: 16
    checkpoint_every: 20
    sample_every: 5
"#
    )
}

fn training_json(p: &Project) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(p.out("resume", "gan").join("training.json")).unwrap())
        .unwrap()
}

/// Outputs that must be identical between runs (grids, weights, logs, samples), without
/// the provenance that says how the run went.
fn results(p: &Project) -> Vec<(String, Vec<u8>)> {
    snapshot(&p.out("resume", "gan"))
        .into_iter()
        .filter(|(name, _)| name != "training.json" && name != "report.md")
        .collect()
}

/// Names of the files that differ (or exist on one side only).
fn differing(a: &[(String, Vec<u8>)], b: &[(String, Vec<u8>)]) -> Vec<String> {
    let mut names: Vec<String> = a.iter().chain(b).map(|(n, _)| n.clone()).collect();
    names.sort();
    names.dedup();
    names
        .into_iter()
        .filter(|n| {
            let x = a.iter().find(|(m, _)| m == n);
            let y = b.iter().find(|(m, _)| m == n);
            x.map(|v| &v.1) != y.map(|v| &v.1)
        })
        .collect()
}

fn checkpoints(p: &Project) -> Vec<usize> {
    let mut steps = Vec::new();
    for d in std::fs::read_dir(p.path(".gantry/checkpoints"))
        .into_iter()
        .flatten()
    {
        for e in std::fs::read_dir(d.unwrap().path()).unwrap() {
            let name = e.unwrap().file_name().to_string_lossy().to_string();
            if let Some(s) = name.strip_prefix("step-") {
                steps.push(s.parse().unwrap());
            }
        }
    }
    steps
}

#[test]
fn a_killed_run_resumes_from_its_checkpoint_to_the_same_weights() {
    // 128 images / batch 16 = 8 steps per epoch; 30 epochs = 240 steps.
    let whole = Project::new();
    whole.write("resume.yaml", &dcgan_pipeline(30));
    whole.run_ok("resume.yaml");
    assert_eq!(
        training_json(&whole)["resumed_from_step"],
        serde_json::Value::Null
    );

    let killed = Project::new();
    killed.write("resume.yaml", &dcgan_pipeline(30));
    let mut child = killed.command(&["run", "resume.yaml"]).spawn().unwrap();
    let t0 = Instant::now();
    loop {
        if checkpoints(&killed).iter().any(|&s| s >= 60) {
            break;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "training finished before it was killed"
        );
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "no checkpoint appeared"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(
        !killed
            .out("resume", "gan")
            .join("generator.safetensors")
            .exists()
    );

    let r = killed.run_ok("resume.yaml");
    assert_eq!(r.executed(), vec!["gan"]);
    let from = training_json(&killed)["resumed_from_step"]
        .as_u64()
        .unwrap();
    assert!((60..240).contains(&from), "resumed from step {from}");
    let diff = differing(&results(&killed), &results(&whole));
    assert!(
        diff.is_empty(),
        "a resumed run must end bit-identical to an uninterrupted one; differing: {diff:?}"
    );
}

#[test]
fn raising_epochs_trains_only_the_extra_epochs() {
    let whole = Project::new();
    whole.write("resume.yaml", &dcgan_pipeline(4));
    whole.run_ok("resume.yaml");

    let p = Project::new();
    p.write("resume.yaml", &dcgan_pipeline(2));
    p.run_ok("resume.yaml");
    assert_eq!(training_json(&p)["steps"], 16);
    p.write("resume.yaml", &dcgan_pipeline(4));
    let st = p.gantry(&["status", "resume.yaml"]);
    assert!(
        st.stdout.contains("epochs"),
        "status should name the param:\n{}",
        st.stdout
    );
    let r = p.run_ok("resume.yaml");
    assert_eq!(r.executed(), vec!["gan"]);
    let t = training_json(&p);
    assert_eq!(t["resumed_from_step"], 16, "{t}");
    assert_eq!(t["steps"], 32);
    let log = std::fs::read_to_string(p.out("resume", "gan").join("losses.csv")).unwrap();
    assert_eq!(
        log.lines().count(),
        1 + 32,
        "the log covers all four epochs"
    );
    let diff = differing(&results(&p), &results(&whole));
    assert!(
        diff.is_empty(),
        "2 + 2 epochs must equal 4 epochs; differing: {diff:?}"
    );
    assert!(
        results(&p)
            .iter()
            .any(|(n, _)| n == "generator.safetensors")
    );

    // Back to 2: the shorter run's outputs come back from the cache, nothing trains.
    p.write("resume.yaml", &dcgan_pipeline(2));
    let r = p.run_ok("resume.yaml");
    assert!(r.executed().is_empty(), "{:?}", r.outcomes());
}

#[test]
fn a_nan_loss_stops_the_stage_with_a_clear_message_and_keeps_the_cache_sound() {
    let p = Project::new();
    p.write(
        "nan.yaml",
        &format!(
            r#"name: nan
stages:{DATA}
  gan:
    kind: dcgan
    input: shapes
    epochs: 5
    batch_size: 32
    features: 8
    latent_dim: 16
    checkpoint_every: 4
    d_optimizer: {{ lr: 1.0e+30 }}
    g_optimizer: {{ lr: 1.0e+30 }}
"#
        ),
    );
    let r = p.gantry(&["run", "nan.yaml"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr.contains("became NaN") || r.stderr.contains("became inf"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("gan"), "{}", r.stderr);
    assert!(r.stderr.contains("at step"), "{}", r.stderr);
    let v = p.gantry(&["cache", "verify"]);
    assert_eq!(v.code, 0, "{}", v.stderr);
}

#[test]
fn a_backend_this_build_lacks_is_one_clear_error() {
    let p = Project::new();
    p.write(
        "b.yaml",
        &format!(
            r#"name: b
stages:{DATA}
  gan:
    kind: dcgan
    input: shapes
    epochs: 1
"#
        ),
    );
    let r = p.gantry(&["run", "--backend", "cuda", "b.yaml"]);
    if cfg!(feature = "cuda") {
        return;
    }
    assert_eq!(r.code, 2, "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.stderr.contains("backend `cuda` is not in this build"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("--features cuda"), "{}", r.stderr);
    // Nothing ran.
    assert!(!p.out("b", "shapes").exists());
}

#[test]
fn cgan_learns_its_classes_as_an_independent_classifier_judges() {
    let p = Project::new();
    p.write(
        "cgan.yaml",
        r#"name: cgan
seed: 1
stages:
  digits:
    kind: dataset
    from: { synthetic: { count: 512, size: 16, channels: 1, variant: digits } }
  judge:
    kind: classifier
    input: digits
    epochs: 10
  cgan:
    kind: cgan
    input: digits
    batch_size: 32
    features: 32
    d_features: 16
    latent_dim: 32
    samples: 500
    g_optimizer: { lr: 0.0005 }
    d_optimizer: { lr: 0.0005 }
    matrix: { epochs: [0, 10] }
  eval:
    kind: evaluate
    real: digits
    fake: cgan
    classifier: judge
    metrics: [swd, inception_score, fid, class_accuracy]
"#,
    );
    p.run_ok("cgan.yaml");
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(p.out("cgan", "eval").join("metrics.json")).unwrap())
            .unwrap();
    let get = |set: &str, path: &[&str]| {
        let mut v = &m["sets"][set];
        for k in path {
            v = &v[*k];
        }
        v.as_f64()
            .unwrap_or_else(|| panic!("{set} {path:?} in {m}"))
    };
    let (u, t) = ("cgan[epochs=0]", "cgan[epochs=10]");
    eprintln!("{m:#}");
    // The judge itself must be good, or its verdicts mean nothing.
    assert!(get("digits", &["class_accuracy"]) > 0.9);
    assert!(get(t, &["class_accuracy"]) > get(u, &["class_accuracy"]) + 0.2);
    assert!(get(t, &["swd", "average"]) < 0.9 * get(u, &["swd", "average"]));
    assert!(get(t, &["fid"]) < 0.8 * get(u, &["fid"]));
    assert!(get(t, &["inception_score", "mean"]) > get(u, &["inception_score", "mean"]));
    // The stage's own verdict, from its discriminator's class head.
    let own: serde_json::Value =
        serde_json::from_slice(&std::fs::read(p.out("cgan", t).join("metrics.json")).unwrap())
            .unwrap();
    assert!(
        own["aux_accuracy_generated"].as_f64().unwrap()
            > own["aux_accuracy_untrained_generator"].as_f64().unwrap() + 0.2,
        "{own}"
    );
}

#[test]
fn cache_gc_keeps_the_checkpoints_of_referenced_stages_only() {
    let p = Project::new();
    p.write("resume.yaml", &dcgan_pipeline(1));
    p.run_ok("resume.yaml");
    let dirs = || {
        std::fs::read_dir(p.path(".gantry/checkpoints"))
            .map(|rd| rd.count())
            .unwrap_or(0)
    };
    assert_eq!(dirs(), 1);
    let gc = p.gantry(&["cache", "gc", "resume.yaml"]);
    assert_eq!(gc.code, 0, "{}", gc.stderr);
    assert_eq!(dirs(), 1, "a referenced stage's checkpoints stay");
    // A different seed trains different weights: the old checkpoints are unreferenced.
    p.write(
        "resume.yaml",
        &dcgan_pipeline(1).replace("seed: 3", "seed: 4"),
    );
    let gc = p.gantry(&["cache", "gc", "resume.yaml"]);
    assert_eq!(gc.code, 0, "{}", gc.stderr);
    assert!(gc.stdout.contains("1 checkpoint folders"), "{}", gc.stdout);
    assert_eq!(dirs(), 0);
}
