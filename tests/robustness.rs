//! A run killed at any moment, two runs at once, corrupt objects, failing stages:
//! the cache stays valid and nothing is computed twice or used when corrupt.

mod common;

use std::time::{Duration, Instant};

use common::{Project, snapshot};

/// Slow enough (about a second in a dev build) to be killed in every phase: importing,
/// resizing, hashing and publishing outputs.
const SLOW: &str = r#"
name: slow
stages:
  shapes: { kind: dataset, from: { synthetic: { count: 1500, size: 64 } } }
  small: { kind: downsample, input: shapes, size: 32, filter: lanczos }
  tiny: { kind: downsample, input: small, size: 16 }
"#;

fn verify_clean(p: &Project) {
    let v = p.gantry(&["cache", "verify"]);
    assert_eq!(
        v.code, 0,
        "cache verify after a kill:\n{}{}",
        v.stdout, v.stderr
    );
    assert!(v.stdout.contains(": 0 corrupt"), "{}", v.stdout);
}

#[test]
fn sigkill_at_any_moment_leaves_a_valid_cache_and_the_next_run_finishes_it() {
    let reference = Project::new();
    reference.write("slow.yaml", SLOW);
    let t0 = Instant::now();
    reference.run_ok("slow.yaml");
    let full = t0.elapsed();
    let expected = snapshot(&reference.path("out/slow"));

    let p = Project::new();
    p.write("slow.yaml", SLOW);
    let kills = 8;
    for k in 0..kills {
        let delay = full.mul_f64((k as f64 + 0.5) / kills as f64);
        let mut child = p
            .command(&["run", "slow.yaml"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(delay);
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        verify_clean(&p);
        let st = p.gantry(&["status", "slow.yaml"]);
        assert_eq!(st.code, 0, "{}", st.stderr);
    }
    let last = p.run_ok("slow.yaml");
    assert!(
        last.with_outcome("failed").is_empty(),
        "{:?}",
        last.outcomes()
    );
    verify_clean(&p);
    assert_eq!(
        snapshot(&p.path("out/slow")),
        expected,
        "outputs differ from an uninterrupted run"
    );
    // No scratch space is left behind by the killed runs.
    let tmp: Vec<_> = std::fs::read_dir(p.path(".gantry/tmp")).unwrap().collect();
    assert!(tmp.is_empty(), "{tmp:?}");
}

#[test]
fn ctrl_c_stops_cleanly_and_the_next_run_finishes() {
    let p = Project::new();
    p.write("slow.yaml", SLOW);
    let child = p
        .command(&["run", "slow.yaml"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(150));
    // SIGINT, as a terminal's Ctrl-C sends.
    let rc = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(rc.success());
    let out = child.wait_with_output().unwrap();
    let code = out.status.code();
    assert!(
        code == Some(130) || code == Some(0),
        "exit {code:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    verify_clean(&p);
    let r = p.run_ok("slow.yaml");
    assert!(r.with_outcome("failed").is_empty());
}

#[test]
fn two_concurrent_runs_compute_each_stage_once() {
    let p = Project::new();
    p.write("slow.yaml", SLOW);
    let spawn = || {
        p.command(&["run", "--json", "slow.yaml"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn(), spawn());
    let runs: Vec<common::Run> = [a, b]
        .into_iter()
        .map(|c| {
            let out = c.wait_with_output().unwrap();
            common::Run {
                code: out.status.code().unwrap_or(-1),
                stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            }
        })
        .collect();
    for r in &runs {
        assert_eq!(r.code, 0, "{}", r.stderr);
    }
    for stage in ["shapes", "small", "tiny"] {
        let executions = runs
            .iter()
            .filter(|r| r.executed().iter().any(|s| s == stage))
            .count();
        assert_eq!(executions, 1, "`{stage}` executed {executions} times");
    }
    verify_clean(&p);
}

fn object_of(p: &Project, stage: &str, file: &str) -> std::path::PathBuf {
    let show = p.gantry(&["show", stage, "--json"]);
    assert_eq!(show.code, 0, "{}", show.stderr);
    let rec: serde_json::Value = serde_json::from_str(&show.stdout).unwrap();
    let hash = rec["outputs"]["files"][file]["hash"]
        .as_str()
        .unwrap()
        .to_string();
    p.path(&format!(".gantry/objects/{}/{}", &hash[..2], &hash[2..]))
}

fn flip_byte(path: &std::path::Path, keep_mtime: bool) {
    let meta = std::fs::metadata(path).unwrap();
    let mtime = filetime::FileTime::from_last_modification_time(&meta);
    let mut perms = meta.permissions();
    #[allow(clippy::permissions_set_readonly_false)]
    perms.set_readonly(false);
    std::fs::set_permissions(path, perms).unwrap();
    let mut bytes = std::fs::read(path).unwrap();
    let i = bytes.len() / 2;
    bytes[i] ^= 0x40;
    std::fs::write(path, bytes).unwrap();
    if keep_mtime {
        filetime::set_file_mtime(path, mtime).unwrap();
    }
}

const SMALL: &str = r#"
name: small
stages:
  shapes: { kind: dataset, from: { synthetic: { count: 8, size: 32 } } }
  half: { kind: downsample, input: shapes, size: 16 }
  quarter: { kind: downsample, input: half, size: 8 }
"#;

#[test]
fn a_silently_flipped_byte_is_named_by_verify_and_never_used() {
    let p = Project::new();
    p.write("small.yaml", SMALL);
    p.run_ok("small.yaml");
    let expected = snapshot(&p.path("out/small"));
    let obj = object_of(&p, "half", "dataset.safetensors");
    // Bit rot: the bytes change, the stat does not.
    flip_byte(&obj, true);

    let v = p.gantry(&["cache", "verify"]);
    assert_eq!(v.code, 1, "{}{}", v.stdout, v.stderr);
    assert!(
        v.stdout.contains(&obj.display().to_string()),
        "{}",
        v.stdout
    );
    assert!(v.stdout.contains("1 corrupt"), "{}", v.stdout);

    let r = p.run_ok("small.yaml");
    assert_eq!(r.executed(), ["half"], "{:?}", r.outcomes());
    assert_eq!(snapshot(&p.path("out/small")), expected);
    verify_clean(&p);
}

#[test]
fn a_modified_object_is_noticed_without_verify_and_recomputed() {
    let p = Project::new();
    p.write("small.yaml", SMALL);
    p.run_ok("small.yaml");
    let expected = snapshot(&p.path("out/small"));
    // Someone edits an output file in place (it is a hard link to the object).
    flip_byte(
        &p.out("small", "quarter").join("dataset.safetensors"),
        false,
    );
    let r = p.run_ok("small.yaml");
    assert_eq!(r.executed(), ["quarter"], "{:?}", r.outcomes());
    assert_eq!(snapshot(&p.path("out/small")), expected);
    verify_clean(&p);
}

#[test]
fn a_failing_stage_stops_its_dependents_and_lets_other_branches_finish() {
    let p = Project::new();
    std::fs::create_dir_all(p.path("photos")).unwrap();
    image::RgbImage::new(8, 8)
        .save(p.path("photos/good.png"))
        .unwrap();
    std::fs::write(p.path("photos/broken.png"), b"\x89PNG\r\n\x1a\nnot really").unwrap();
    p.write(
        "f.yaml",
        r#"
name: f
stages:
  photos: { kind: dataset, from: { folder: { path: photos } } }
  photos_small: { kind: downsample, input: photos, size: 4 }
  shapes: { kind: dataset, from: { synthetic: { count: 4, size: 16 } } }
  shapes_small: { kind: downsample, input: shapes, size: 8 }
"#,
    );
    let r = p.gantry(&["run", "--json", "f.yaml"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert_eq!(r.with_outcome("failed"), ["photos"]);
    assert_eq!(r.with_outcome("skipped"), ["photos_small"]);
    let mut done = r.executed();
    done.sort();
    assert_eq!(done, ["shapes", "shapes_small"]);
    assert!(r.stderr.contains("FAILED"), "{}", r.stderr);
    assert!(r.stderr.contains("photos"), "{}", r.stderr);
    assert!(
        r.stderr.contains("broken.png"),
        "the error names the file: {}",
        r.stderr
    );

    // Documented way out: skip bad images and list them.
    p.write(
        "f.yaml",
        &std::fs::read_to_string(p.path("f.yaml"))
            .unwrap()
            .replace("path: photos } }", "path: photos } }, on_error: skip"),
    );
    let r = p.run_ok("f.yaml");
    assert_eq!(r.with_outcome("executed").len(), 2);
    let skipped = std::fs::read_to_string(p.out("f", "photos").join("skipped.json")).unwrap();
    assert!(skipped.contains("broken.png"), "{skipped}");
}
