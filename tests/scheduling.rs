//! The executor's budgets: GPU slots are never shared unless a stage asks for a fraction
//! of one, and `-j` bounds how many stages run at once.

mod common;

use common::Project;

/// Four independent stages, each slow enough (a few hundred ms) to see overlaps.
fn pipeline(resources: &str) -> String {
    let mut s = String::from("name: sched\nstages:\n");
    for i in 0..4 {
        s.push_str(&format!(
            "  s{i}:\n    kind: dataset\n    from: {{ synthetic: {{ count: 600, size: 48, seed: {i} }} }}\n    resources: {resources}\n"
        ));
    }
    s
}

/// (start, end) of each stage's execution, from its run record.
fn intervals(p: &Project) -> Vec<(f64, f64)> {
    (0..4)
        .map(|i| {
            let show = p.gantry(&["show", &format!("s{i}"), "--json"]);
            let rec: serde_json::Value = serde_json::from_str(&show.stdout).unwrap();
            let start = rec["started_unix_s"].as_f64().unwrap();
            (start, start + rec["duration_s"].as_f64().unwrap())
        })
        .collect()
}

fn max_overlap(iv: &[(f64, f64)]) -> usize {
    iv.iter()
        .map(|&(s, _)| iv.iter().filter(|&&(a, b)| a <= s && s < b).count())
        .max()
        .unwrap_or(0)
}

#[test]
fn whole_gpu_stages_never_share_a_gpu() {
    let p = Project::new();
    p.write("sched.yaml", &pipeline("{ gpu: 1, cpu: 0.5 }"));
    let r = p.gantry(&["run", "--json", "sched.yaml", "--gpus", "1", "-j", "4"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(max_overlap(&intervals(&p)), 1);
}

#[test]
fn two_gpus_run_two_gpu_stages_at_once() {
    let p = Project::new();
    p.write("sched.yaml", &pipeline("{ gpu: 1, cpu: 0.5 }"));
    let r = p.gantry(&["run", "--json", "sched.yaml", "--gpus", "2", "-j", "4"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(max_overlap(&intervals(&p)), 2);
}

#[test]
fn gpu_fractions_share_one_gpu() {
    let p = Project::new();
    p.write("sched.yaml", &pipeline("{ gpu: 0.25, cpu: 0.5 }"));
    let r = p.gantry(&["run", "--json", "sched.yaml", "--gpus", "1", "-j", "4"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(max_overlap(&intervals(&p)) >= 3, "{:?}", intervals(&p));
}

#[test]
fn jobs_bounds_concurrency() {
    let p = Project::new();
    p.write("sched.yaml", &pipeline("{ cpu: 0.5 }"));
    let r = p.gantry(&["run", "--json", "sched.yaml", "-j", "1"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(max_overlap(&intervals(&p)), 1);
}

#[test]
fn stages_without_a_cpu_setting_share_the_free_cores() {
    let p = Project::new();
    p.write(
        "one.yaml",
        "name: one\nstages:\n  a: { kind: dataset, from: { synthetic: { count: 4 } } }\n",
    );
    let r = p.gantry(&["run", "one.yaml", "--cpus", "4"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let log = std::fs::read_to_string(p.out("one", "a").join("gantry.log")).unwrap();
    assert!(
        log.contains("on 4 thread(s)"),
        "a lone stage gets every core: {log}"
    );

    p.write(
        "two.yaml",
        "name: two\nstages:\n  a: { kind: dataset, from: { synthetic: { count: 4, seed: 2 } } }\n  b: { kind: dataset, from: { synthetic: { count: 4, seed: 3 } } }\n",
    );
    let r = p.gantry(&["run", "two.yaml", "--cpus", "4"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    for s in ["a", "b"] {
        let log = std::fs::read_to_string(p.out("two", s).join("gantry.log")).unwrap();
        assert!(
            log.contains("on 2 thread(s)"),
            "two ready stages split the cores: {log}"
        );
    }
}
