//! evaluate → table → `gantry metrics`, end to end, with a matrix sweep collected by a
//! downstream stage.

mod common;

use common::Project;

const PIPE: &str = r#"
name: ev
params: { blur: box }
stages:
  real: { kind: dataset, from: { synthetic: { count: 48, size: 64, seed: 1 } } }
  other: { kind: dataset, from: { synthetic: { count: 48, size: 64, seed: 2 } } }
  real32: { kind: downsample, input: real, size: 32 }
  small:
    kind: downsample
    input: other
    size: 32
    matrix: { filter: [nearest, bicubic] }
  evaluate:
    kind: evaluate
    real: real32
    fake: small
    metrics: [swd, ms_ssim]
    ms_ssim_pairs: 50
    swd: { nhoods_per_image: 32, dirs_per_repeat: 32 }
  table:
    kind: table
    from: evaluate
    title: Filters
    rows:
      - { label: SWD, metric: swd.average }
      - { label: MS-SSIM, metric: ms_ssim }
    columns:
      - { label: nearest, set: "small[filter=nearest]" }
      - { label: bicubic, set: "small[filter=bicubic]" }
    published:
      SWD: [100, 100]
"#;

#[test]
fn evaluate_collects_every_instance_and_the_table_compares_with_published_values() {
    let p = Project::new();
    p.write("ev.yaml", PIPE);
    let r = p.run_ok("ev.yaml");
    assert!(
        r.executed().contains(&"table".to_string()),
        "{:?}",
        r.outcomes()
    );

    let m: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(p.out("ev", "evaluate").join("metrics.json")).unwrap(),
    )
    .unwrap();
    let sets = m["sets"].as_object().unwrap();
    for set in ["small[filter=nearest]", "small[filter=bicubic]"] {
        let swd = sets[set]["swd"]["average"].as_f64().unwrap();
        assert!(swd.is_finite() && swd > 0.0, "{set}: {swd}");
        let ms = sets[set]["ms_ssim"]["mean"].as_f64().unwrap();
        assert!((0.0..1.0).contains(&ms), "{set}: {ms}");
        assert_eq!(sets[set]["real"], "real32");
    }
    // The real set's own diversity is the baseline.
    assert!(sets["real32"]["ms_ssim"]["mean"].is_f64());
    assert!(p.out("ev", "evaluate").join("samples/real32.png").is_file());

    let table = std::fs::read_to_string(p.out("ev", "table").join("table.md")).unwrap();
    assert!(table.starts_with("Filters\n"), "{table}");
    assert!(
        table.contains("| Metric | nearest (ours) | nearest (published) | Δ |"),
        "{table}"
    );
    let swd_nearest = sets["small[filter=nearest]"]["swd"]["average"]
        .as_f64()
        .unwrap();
    assert!(
        table.contains(&format!(
            "| SWD | {swd_nearest:.4} | 100 | {:+.4} |",
            swd_nearest - 100.0
        )),
        "{table}"
    );
    let html = std::fs::read_to_string(p.out("ev", "table").join("table.html")).unwrap();
    assert!(
        html.contains("<img src=\"images/evaluate/samples_real32.png\">"),
        "{html}"
    );
    assert!(
        p.out("ev", "table")
            .join("images/evaluate/samples_real32.png")
            .is_file()
    );

    // gantry metrics shows the latest values, and --diff the change after a rerun.
    let metrics = p.gantry(&["metrics", "ev.yaml"]);
    assert_eq!(metrics.code, 0, "{}", metrics.stderr);
    assert!(
        metrics.stdout.contains("table     table.SWD.nearest"),
        "{}",
        metrics.stdout
    );
    let changed = PIPE.replace("nhoods_per_image: 32", "nhoods_per_image: 16");
    p.write("ev.yaml", &changed);
    let r = p.run_ok("ev.yaml");
    assert_eq!(r.executed(), ["evaluate", "table"]);
    let diff = p.gantry(&["metrics", "ev.yaml", "--diff", "--json"]);
    let rows: Vec<serde_json::Value> = serde_json::from_str(&diff.stdout).unwrap();
    let swd_row = rows
        .iter()
        .find(|r| {
            r["stage"] == "evaluate" && r["metric"] == "sets.small[filter=nearest].swd.average"
        })
        .expect("swd row");
    assert!(swd_row["previous"].as_f64().is_some(), "{swd_row}");
    assert!(swd_row["change"].as_f64().unwrap() != 0.0, "{swd_row}");
}

#[test]
fn a_generated_set_without_a_real_set_of_its_size_is_a_clear_failure() {
    let p = Project::new();
    p.write(
        "bad.yaml",
        r#"
stages:
  real: { kind: dataset, from: { synthetic: { count: 8, size: 32 } } }
  big: { kind: dataset, from: { synthetic: { count: 8, size: 64 } } }
  evaluate: { kind: evaluate, real: real, fake: big, metrics: [swd] }
"#,
    );
    let r = p.gantry(&["run", "bad.yaml"]);
    assert_eq!(r.code, 1);
    assert!(
        r.stderr
            .contains("no real set matches `big` (64x64x3); real sets: real (32x32x3)"),
        "{}",
        r.stderr
    );
}
