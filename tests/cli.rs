//! The inspection commands: dag, schema, show, status --json, cache gc and du.

mod common;

use common::Project;

const PIPE: &str = r#"
name: cli
params: { size: 16 }
stages:
  shapes: { kind: dataset, from: { synthetic: { count: 4, size: 32 } } }
  small:
    kind: downsample
    input: shapes
    size: ${params.size}
"#;

#[test]
fn dag_prints_dot_and_mermaid() {
    let p = Project::new();
    p.write("cli.yaml", PIPE);
    let dot = p.gantry(&["dag", "cli.yaml"]);
    assert_eq!(dot.code, 0);
    assert!(
        dot.stdout.starts_with("digraph \"cli\" {"),
        "{}",
        dot.stdout
    );
    assert!(
        dot.stdout.contains("n0 -> n1 [label=\"input\"];"),
        "{}",
        dot.stdout
    );
    let mm = p.gantry(&["dag", "cli.yaml", "--format", "mermaid"]);
    assert!(mm.stdout.starts_with("flowchart LR\n"), "{}", mm.stdout);
    assert!(mm.stdout.contains("n0 -->|input| n1"), "{}", mm.stdout);
}

#[test]
fn schema_describes_every_kind_and_rejects_unknown_keys() {
    let p = Project::new();
    let s = p.gantry(&["schema"]);
    assert_eq!(s.code, 0);
    let v: serde_json::Value = serde_json::from_str(&s.stdout).unwrap();
    assert_eq!(v["additionalProperties"], false);
    let down = &v["$defs"]["Stage_downsample"];
    assert_eq!(down["additionalProperties"], false);
    assert!(down["properties"]["filter"].is_object(), "{down}");
    assert!(
        down["required"]
            .as_array()
            .unwrap()
            .contains(&"input".into())
    );
    assert!(v["$defs"]["Stage_dataset"]["properties"]["from"].is_object());
}

#[test]
fn show_and_status_json_give_provenance() {
    let p = Project::new();
    p.write("cli.yaml", PIPE);
    let st: serde_json::Value =
        serde_json::from_str(&p.gantry(&["status", "--json", "cli.yaml"]).stdout).unwrap();
    assert_eq!(st[0]["stage"], "shapes");
    assert_eq!(st[0]["state"], "stale");
    assert_eq!(st[0]["reasons"][0], "never run");
    p.run_ok("cli.yaml");
    let st: serde_json::Value =
        serde_json::from_str(&p.gantry(&["status", "--json", "cli.yaml"]).stdout).unwrap();
    assert_eq!(st[1]["state"], "fresh");

    let show = p.gantry(&["show", "small", "-p", "cli.yaml", "--json"]);
    assert_eq!(show.code, 0, "{}", show.stderr);
    let rec: serde_json::Value = serde_json::from_str(&show.stdout).unwrap();
    assert_eq!(rec["kind"], "downsample");
    assert_eq!(rec["params"]["size"], serde_json::json!([16, 16]));
    assert_eq!(rec["inputs"]["input"][0]["stage"], "shapes");
    assert_eq!(rec["key"], st[1]["key"]);
    assert!(rec["outputs"]["files"]["dataset.safetensors"]["hash"].is_string());

    let human = p.gantry(&["show", "small"]);
    assert!(
        human.stdout.contains("input     input ← shapes"),
        "{}",
        human.stdout
    );
    let missing = p.gantry(&["show", "nope"]);
    assert_eq!(missing.code, 2);
    assert!(
        missing.stderr.contains("stage `nope` has not run yet"),
        "{}",
        missing.stderr
    );
}

#[test]
fn gc_keeps_what_the_pipeline_references_and_nothing_else() {
    let p = Project::new();
    p.write("cli.yaml", PIPE);
    p.run_ok("cli.yaml");
    let r = p.gantry(&["run", "--json", "cli.yaml", "-S", "size=8"]);
    assert_eq!(r.executed(), ["small"]);
    // Back to size 16 in the file: the size-8 run is garbage now.
    let gc = p.gantry(&["cache", "gc", "cli.yaml"]);
    assert_eq!(gc.code, 0, "{}", gc.stderr);
    assert!(
        gc.stdout.starts_with("removed 1 run records"),
        "{}",
        gc.stdout
    );
    let again = p.run_ok("cli.yaml");
    assert!(
        again.executed().is_empty(),
        "gc removed something still referenced"
    );
    let v = p.gantry(&["cache", "verify"]);
    assert_eq!(v.code, 0, "{}", v.stdout);
    // The collected configuration has to run again.
    let r = p.gantry(&["run", "--json", "cli.yaml", "-S", "size=8"]);
    assert_eq!(r.executed(), ["small"]);
    let du = p.gantry(&["cache", "du"]);
    assert!(du.stdout.contains("objects"), "{}", du.stdout);
}

#[test]
fn bad_arguments_are_bad_input() {
    let p = Project::new();
    p.write("cli.yaml", PIPE);
    let r = p.gantry(&["run", "cli.yaml", "-S", "nosuch=1"]);
    assert_eq!(r.code, 2);
    assert_eq!(
        r.stderr,
        "error: cli.yaml: -S nosuch=…: the pipeline has no param `nosuch`\n"
    );
    let r = p.gantry(&["run", "cli.yaml", "--only", "smal"]);
    assert_eq!(r.code, 2);
    assert!(
        r.stderr.contains("--only smal: no such stage"),
        "{}",
        r.stderr
    );
    let r = p.gantry(&["run", "missing.yaml"]);
    assert_eq!(r.code, 2);
    assert!(
        r.stderr.starts_with("error: missing.yaml: cannot read:"),
        "{}",
        r.stderr
    );
    let r = p.gantry(&["run", "cli.yaml", "--gpus", "0"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
}

#[test]
fn a_gpu_stage_on_a_machine_without_gpus_is_refused_before_running() {
    let p = Project::new();
    p.write(
        "g.yaml",
        "stages:\n  shapes:\n    kind: dataset\n    from: { synthetic: {} }\n    resources: { gpu: 1 }\n",
    );
    let r = p.gantry(&["run", "g.yaml", "--gpus", "0"]);
    assert_eq!(r.code, 2);
    assert_eq!(
        r.stderr,
        "error: g.yaml: stage `shapes` needs 1 GPU(s) but 0 are available (set --gpus if detection is wrong)\n"
    );
}
