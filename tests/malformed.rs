//! Every malformed pipeline under tests/malformed/ gives exactly its expected message and
//! exit code 2, and never a panic.

use std::path::Path;
use std::process::Command;

#[test]
fn every_malformed_pipeline_gives_its_exact_message() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/malformed");
    let mut cases: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    cases.sort();
    assert!(cases.len() >= 25, "only {} cases", cases.len());
    let cache = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    for case in &cases {
        let name = case.file_name().unwrap().to_string_lossy().into_owned();
        let expected = std::fs::read_to_string(case.with_extension("expected"))
            .unwrap_or_else(|_| panic!("{name}: no .expected file"))
            .replace("{dir}", &dir.display().to_string());
        for sub in ["status", "run", "dag"] {
            let out = Command::new(env!("CARGO_BIN_EXE_gantry"))
                .current_dir(&dir)
                .env("GANTRY_CACHE_DIR", cache.path())
                .env("GANTRY_OUT_DIR", cache.path().join("out"))
                .args([sub, &name])
                .output()
                .unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            if out.status.code() != Some(2) || stderr != expected || stderr.contains("panicked") {
                failures.push(format!(
                    "{name} ({sub}): exit {:?}\n  expected: {expected}  got:      {stderr}",
                    out.status.code()
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
