//! Training checkpoints: every N steps, atomically, in a directory the runner ties to the
//! stage's key with the extendable params (`epochs`) left out, so that a killed run and a
//! run asked for more epochs both find the state to go on from.
//!
//! A checkpoint is a folder `step-<N>` holding the files a stage saves (weights,
//! optimizer state, the loss log so far) and a `manifest.json` with their blake3 hashes.
//! It is written under a temporary name, synced, and renamed into place, so a folder with
//! a `step-` name is always complete; one whose files no longer match the manifest is
//! skipped with a warning and the next older one is used.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::StageError;

/// How many periodic checkpoints to keep besides the final ones.
const KEEP_PERIODIC: usize = 2;

#[derive(Debug, Serialize, Deserialize)]
struct Manifest {
    step: usize,
    /// Written when a run finished: kept so that a longer run can start from it.
    #[serde(rename = "final")]
    is_final: bool,
    files: BTreeMap<String, String>,
}

/// A checkpoint read back.
pub struct Loaded {
    pub step: usize,
    pub path: PathBuf,
    pub files: BTreeMap<String, Vec<u8>>,
}

impl Loaded {
    pub fn take(&mut self, name: &str) -> Result<Vec<u8>, StageError> {
        self.files.remove(name).ok_or_else(|| {
            StageError::Failed(format!(
                "checkpoint {}: missing `{name}`",
                self.path.display()
            ))
        })
    }
}

pub struct Checkpoints {
    dir: PathBuf,
}

fn step_dir_name(step: usize) -> String {
    format!("step-{step:010}")
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StageError + '_ {
    move |e| StageError::io(path, e)
}

impl Checkpoints {
    pub fn new(dir: PathBuf) -> Checkpoints {
        Checkpoints { dir }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Complete checkpoints, as (step, path), oldest first.
    fn list(&self) -> Vec<(usize, PathBuf)> {
        let Ok(rd) = fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut v: Vec<(usize, PathBuf)> = rd
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                let step = name.strip_prefix("step-")?.parse().ok()?;
                Some((step, e.path()))
            })
            .collect();
        v.sort();
        v
    }

    /// Save a checkpoint at `step`. Older periodic checkpoints beyond the newest few are
    /// removed; final ones stay.
    pub fn save(
        &self,
        step: usize,
        is_final: bool,
        files: &[(&str, Vec<u8>)],
    ) -> Result<PathBuf, StageError> {
        fs::create_dir_all(&self.dir).map_err(io(&self.dir))?;
        let target = self.dir.join(step_dir_name(step));
        let tmp = self.dir.join(format!(".tmp-{}-{step}", std::process::id()));
        if tmp.exists() {
            fs::remove_dir_all(&tmp).map_err(io(&tmp))?;
        }
        fs::create_dir(&tmp).map_err(io(&tmp))?;
        let mut hashes = BTreeMap::new();
        for (name, bytes) in files {
            let p = tmp.join(name);
            write_synced(&p, bytes)?;
            hashes.insert(name.to_string(), blake3::hash(bytes).to_hex().to_string());
        }
        let manifest = Manifest {
            step,
            is_final,
            files: hashes,
        };
        let json = serde_json::to_vec_pretty(&manifest)
            .map_err(|e| StageError::Failed(format!("checkpoint manifest: {e}")))?;
        write_synced(&tmp.join("manifest.json"), &json)?;
        if target.exists() {
            // The same step saved before (a rerun reached it again): the new one replaces it.
            let old = self.dir.join(format!(".old-{}-{step}", std::process::id()));
            fs::rename(&target, &old).map_err(io(&target))?;
            fs::rename(&tmp, &target).map_err(io(&target))?;
            let _ = fs::remove_dir_all(&old);
        } else {
            fs::rename(&tmp, &target).map_err(io(&target))?;
        }
        if let Ok(d) = fs::File::open(&self.dir) {
            let _ = d.sync_all();
        }
        self.prune();
        Ok(target)
    }

    fn is_final(path: &Path) -> bool {
        fs::read(path.join("manifest.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<Manifest>(&b).ok())
            .is_some_and(|m| m.is_final)
    }

    fn prune(&self) {
        let periodic: Vec<PathBuf> = self
            .list()
            .into_iter()
            .map(|(_, p)| p)
            .filter(|p| !Self::is_final(p))
            .collect();
        if periodic.len() > KEEP_PERIODIC {
            for p in &periodic[..periodic.len() - KEEP_PERIODIC] {
                let _ = fs::remove_dir_all(p);
            }
        }
        // Leftovers of runs killed while writing.
        if let Ok(rd) = fs::read_dir(&self.dir) {
            for e in rd.filter_map(|e| e.ok()) {
                let name = e.file_name();
                let name = name.to_string_lossy();
                let leftover = name.starts_with(".tmp-") || name.starts_with(".old-");
                // Another live process (a concurrent run of the same stage) may be
                // writing it: only a dead writer's folders go.
                let writer_alive = name
                    .split('-')
                    .nth(1)
                    .is_some_and(|pid| Path::new("/proc").join(pid).exists());
                if leftover && !writer_alive {
                    let _ = fs::remove_dir_all(e.path());
                }
            }
        }
    }

    /// The newest intact checkpoint at or before `max_step`.
    pub fn newest_at_or_before(&self, max_step: usize) -> Option<Loaded> {
        for (step, path) in self.list().into_iter().rev() {
            if step > max_step {
                continue;
            }
            match read_checked(&path) {
                Ok(files) => return Some(Loaded { step, path, files }),
                Err(why) => {
                    tracing::warn!("skipping checkpoint {}: {why}", path.display());
                }
            }
        }
        None
    }
}

fn read_checked(path: &Path) -> Result<BTreeMap<String, Vec<u8>>, String> {
    let m: Manifest = serde_json::from_slice(
        &fs::read(path.join("manifest.json")).map_err(|e| format!("manifest: {e}"))?,
    )
    .map_err(|e| format!("manifest: {e}"))?;
    let mut files = BTreeMap::new();
    for (name, hash) in m.files {
        let bytes = fs::read(path.join(&name)).map_err(|e| format!("{name}: {e}"))?;
        if blake3::hash(&bytes).to_hex().as_str() != hash {
            return Err(format!("{name} does not match its hash (corrupt)"));
        }
        files.insert(name, bytes);
    }
    Ok(files)
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), StageError> {
    let mut f = fs::File::create(path).map_err(io(path))?;
    f.write_all(bytes).map_err(io(path))?;
    f.sync_all().map_err(io(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newest_intact_checkpoint_wins_and_corrupt_ones_are_skipped() {
        let t = tempfile::tempdir().unwrap();
        let c = Checkpoints::new(t.path().join("ck"));
        assert!(c.newest_at_or_before(100).is_none());
        c.save(10, false, &[("w", vec![1])]).unwrap();
        c.save(20, true, &[("w", vec![2])]).unwrap();
        c.save(30, false, &[("w", vec![3])]).unwrap();
        c.save(40, false, &[("w", vec![4])]).unwrap();
        // Periodic 10 pruned (two newest periodic kept), final 20 kept.
        let steps: Vec<usize> = c.list().into_iter().map(|(s, _)| s).collect();
        assert_eq!(steps, vec![20, 30, 40]);
        assert_eq!(c.newest_at_or_before(100).unwrap().step, 40);
        assert_eq!(c.newest_at_or_before(35).unwrap().step, 30);
        let mut l = c.newest_at_or_before(25).unwrap();
        assert_eq!(l.take("w").unwrap(), vec![2]);
        // Corrupt the newest: the one before is used.
        fs::write(t.path().join("ck").join(step_dir_name(40)).join("w"), [9]).unwrap();
        assert_eq!(c.newest_at_or_before(100).unwrap().step, 30);
    }
}
