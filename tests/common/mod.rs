//! Helpers for end-to-end tests: each test gets its own folder, cache and outputs, and
//! runs the real `gantry` binary.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub struct Project {
    pub dir: tempfile::TempDir,
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// The outcome of each stage from `run --json`, e.g. `("small", "executed")`.
    pub fn outcomes(&self) -> Vec<(String, String)> {
        let v: serde_json::Value = serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}):\n{}\n{}", self.stdout, self.stderr));
        v["stages"]
            .as_array()
            .expect("stages")
            .iter()
            .map(|pair| {
                (
                    pair[0].as_str().unwrap().to_string(),
                    pair[1]["outcome"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    }

    /// Names of the stages that executed in this run.
    pub fn executed(&self) -> Vec<String> {
        self.with_outcome("executed")
    }

    pub fn with_outcome(&self, outcome: &str) -> Vec<String> {
        self.outcomes()
            .into_iter()
            .filter(|(_, o)| o == outcome)
            .map(|(n, _)| n)
            .collect()
    }
}

impl Project {
    pub fn new() -> Project {
        Project {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn write(&self, rel: &str, text: &str) -> PathBuf {
        let p = self.path(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, text).unwrap();
        p
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_gantry"));
        c.current_dir(self.dir.path())
            .env("GANTRY_CACHE_DIR", self.path(".gantry"))
            .env("GANTRY_OUT_DIR", self.path("out"))
            .env_remove("GANTRY_LOG")
            .args(args);
        c
    }

    pub fn gantry(&self, args: &[&str]) -> Run {
        let out: Output = self.command(args).output().expect("run gantry");
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// `gantry run --json PIPELINE`, which must succeed.
    pub fn run_ok(&self, pipeline: &str) -> Run {
        let r = self.gantry(&["run", "--json", pipeline]);
        assert_eq!(r.code, 0, "gantry run failed:\n{}", r.stderr);
        r
    }

    pub fn out(&self, pipeline: &str, stage: &str) -> PathBuf {
        self.path("out").join(pipeline).join(stage)
    }
}

/// Every file under `dir` with its bytes, for comparing two runs' outputs.
pub fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = walkdir::WalkDir::new(dir)
        .into_iter()
        .flatten()
        .filter(|e| e.file_type().is_file())
        .filter(|e| {
            let n = e.file_name().to_string_lossy();
            n != "gantry.log" && n != ".gantry-manifest"
        })
        .map(|e| {
            (
                e.path().strip_prefix(dir).unwrap().display().to_string(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    out.sort();
    out
}
