use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use rayon::prelude::*;

use crate::atomic::unique_suffix;
use crate::{
    CacheError, Hash, KeyLock, Manifest, ManifestEntry, Result, RunRecord, StatCache, fsync_dir,
    hash_file, write_atomic,
};

/// Objects carry this mtime. Any write to an object moves its mtime away from it, so a
/// stat is enough to notice a modified object before trusting it.
const PINNED_MTIME_S: u64 = 1_000_000_000;

/// Marker written into every materialised output folder.
const MARKER: &str = ".gantry-manifest";

/// The cache directory.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Corrupt {
    pub path: PathBuf,
    pub expected: Hash,
    pub actual: Option<Hash>,
    pub message: String,
}

#[derive(Debug, Default, serde::Serialize)]
pub struct VerifyReport {
    pub objects: usize,
    pub records: usize,
    pub corrupt: Vec<Corrupt>,
    /// Run records that name an object that is no longer there (they will be recomputed).
    pub incomplete_records: Vec<(Hash, String)>,
    pub unreadable_records: Vec<(PathBuf, String)>,
}

#[derive(Debug, Default, serde::Serialize)]
pub struct GcReport {
    pub records_removed: usize,
    pub objects_removed: usize,
    pub bytes_freed: u64,
    pub records_kept: usize,
    pub objects_kept: usize,
    pub checkpoints_removed: usize,
}

impl Store {
    /// Open (and create if needed) a cache at `root`.
    pub fn open(root: impl Into<PathBuf>) -> Result<Store> {
        let root = root.into();
        for d in [
            "objects", "runs", "refs", "stat", "locks", "tmp", "work", "logs",
        ] {
            let p = root.join(d);
            std::fs::create_dir_all(&p).map_err(|e| CacheError::io(&p, e))?;
        }
        Ok(Store { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn stat_cache(&self) -> StatCache {
        StatCache::new(self.root.join("stat"))
    }

    pub fn object_path(&self, h: &Hash) -> PathBuf {
        let hex = h.to_hex();
        self.root.join("objects").join(&hex[..2]).join(&hex[2..])
    }

    fn record_path(&self, key: &Hash) -> PathBuf {
        self.root
            .join("runs")
            .join(format!("{}.json", key.to_hex()))
    }

    /// A folder tied to a stage key that survives interruption (checkpoints).
    pub fn work_dir(&self, key: &Hash) -> PathBuf {
        self.root.join("work").join(key.to_hex())
    }

    /// Training checkpoints of one checkpoint key; kept after the stage finishes so that
    /// a longer run can continue from it (`cache gc` removes unreferenced ones).
    pub fn checkpoint_dir(&self, key: &Hash) -> PathBuf {
        self.root.join("checkpoints").join(key.to_hex())
    }

    /// Note that stage `key` trains into the checkpoint folder `dir`, so that `gc` keeps
    /// the folder while that stage is referenced.
    pub fn claim_checkpoints(&self, dir: &Path, key: &Hash) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| CacheError::io(dir, e))?;
        let path = dir.join(CHECKPOINT_OWNERS);
        let have = std::fs::read_to_string(&path).unwrap_or_default();
        let hex = key.to_hex();
        if !have.lines().any(|l| l.trim() == hex) {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(|e| CacheError::io(&path, e))?;
            writeln!(f, "{hex}").map_err(|e| CacheError::io(&path, e))?;
        }
        Ok(())
    }

    pub fn log_path(&self, key: &Hash) -> PathBuf {
        self.root.join("logs").join(format!("{}.log", key.to_hex()))
    }

    /// A new private scratch folder on the cache's filesystem.
    pub fn scratch_dir(&self, label: &str) -> Result<PathBuf> {
        let safe: String = label
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        let p = self.root.join("tmp").join(format!(
            "{safe}-{}-{}",
            std::process::id(),
            unique_suffix()
        ));
        std::fs::create_dir_all(&p).map_err(|e| CacheError::io(&p, e))?;
        Ok(p)
    }

    /// Remove scratch folders left by processes that are gone (a killed run).
    pub fn clean_scratch(&self) {
        let Ok(rd) = std::fs::read_dir(self.root.join("tmp")) else {
            return;
        };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            // Scratch names end in `-<pid>-<n>`.
            let pid = name.rsplit('-').nth(1).and_then(|p| p.parse::<u32>().ok());
            if let Some(pid) = pid
                && pid != std::process::id()
                && !Path::new(&format!("/proc/{pid}")).exists()
            {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }

    /// Hold the lock of one stage key.
    pub fn lock_key(&self, key: &Hash, on_wait: impl FnOnce()) -> Result<KeyLock> {
        KeyLock::acquire(
            &self
                .root
                .join("locks")
                .join(format!("{}.lock", key.to_hex())),
            on_wait,
        )
    }

    /// Held (shared) by runs, taken exclusively by `gc`, so that gc never deletes an
    /// object that a run has published but not yet recorded.
    pub fn gc_lock(&self, exclusive: bool) -> Result<File> {
        let p = self.root.join("locks").join("gc.lock");
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&p)
            .map_err(|e| CacheError::io(&p, e))?;
        let r = if exclusive { f.lock() } else { f.lock_shared() };
        r.map_err(|e| CacheError::io(&p, e))?;
        Ok(f)
    }

    /// Move every file under `scratch` into the object store and return the manifest.
    /// `scratch` must be on the cache's filesystem (see [`Store::scratch_dir`]).
    pub fn publish(&self, scratch: &Path) -> Result<Manifest> {
        let mut files = Vec::new();
        for entry in walkdir::WalkDir::new(scratch).follow_links(true) {
            let entry = entry.map_err(|e| {
                let p = e
                    .path()
                    .map(Path::to_path_buf)
                    .unwrap_or_else(|| scratch.into());
                CacheError::io(p, e.into())
            })?;
            if entry.file_type().is_dir() {
                continue;
            }
            let rel = rel_string(entry.path(), scratch);
            files.push((rel, entry.into_path()));
        }
        let entries: Vec<(String, ManifestEntry, PathBuf)> = files
            .into_par_iter()
            .map(|(rel, path)| {
                let (hash, size) = hash_file(&path)?;
                let dest = self.object_path(&hash);
                if !self.object_ok(&hash, size)? {
                    let f = File::options()
                        .write(true)
                        .open(&path)
                        .map_err(|e| CacheError::io(&path, e))?;
                    f.set_modified(UNIX_EPOCH + Duration::from_secs(PINNED_MTIME_S))
                        .map_err(|e| CacheError::io(&path, e))?;
                    f.sync_all().map_err(|e| CacheError::io(&path, e))?;
                    drop(f);
                    set_readonly(&path)?;
                    let parent = dest.parent().unwrap_or(&self.root);
                    std::fs::create_dir_all(parent).map_err(|e| CacheError::io(parent, e))?;
                    std::fs::rename(&path, &dest).map_err(|e| CacheError::io(&dest, e))?;
                }
                Ok((rel, ManifestEntry { hash, size }, dest))
            })
            .collect::<Result<_>>()?;
        let dirs: HashSet<PathBuf> = entries
            .iter()
            .filter_map(|(_, _, d)| d.parent().map(Path::to_path_buf))
            .collect();
        for d in dirs {
            fsync_dir(&d)?;
        }
        Ok(Manifest {
            files: entries.into_iter().map(|(r, e, _)| (r, e)).collect(),
        })
    }

    /// Is the object present and unmodified? Cheap (one stat) when it is; a modified one
    /// is rehashed, and moved to `quarantine/` if its bytes are no longer its name.
    pub fn object_ok(&self, h: &Hash, size: u64) -> Result<bool> {
        let p = self.object_path(h);
        let meta = match std::fs::metadata(&p) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(CacheError::io(&p, e)),
        };
        let pinned = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map(|d| d.as_secs() == PINNED_MTIME_S && d.subsec_nanos() == 0)
            .unwrap_or(false);
        if meta.len() == size && pinned {
            return Ok(true);
        }
        match hash_file(&p) {
            Ok((actual, _)) if actual == *h => {
                let f = File::options().write(true).open(&p);
                if let Ok(f) = f {
                    let _ = f.set_modified(UNIX_EPOCH + Duration::from_secs(PINNED_MTIME_S));
                }
                Ok(true)
            }
            _ => {
                tracing::warn!("object {} is corrupt; it will not be used", h.short());
                self.quarantine(&p);
                Ok(false)
            }
        }
    }

    fn quarantine(&self, p: &Path) {
        let q = self.root.join("quarantine");
        let _ = std::fs::create_dir_all(&q);
        let name = p
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let _ = std::fs::rename(
            p,
            q.join(format!("{name}-{}-{}", std::process::id(), unique_suffix())),
        );
    }

    /// The record of a key, if there is a usable one.
    pub fn record(&self, key: &Hash) -> Result<Option<RunRecord>> {
        let p = self.record_path(key);
        let bytes = match std::fs::read(&p) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(CacheError::io(&p, e)),
        };
        match serde_json::from_slice::<RunRecord>(&bytes) {
            Ok(r) if r.key == *key => Ok(Some(r)),
            Ok(_) | Err(_) => {
                tracing::warn!("{}: unreadable run record; recomputing", p.display());
                Ok(None)
            }
        }
    }

    /// A record whose outputs are all present and intact: a cache hit.
    pub fn usable_record(&self, key: &Hash) -> Result<Option<RunRecord>> {
        let Some(rec) = self.record(key)? else {
            return Ok(None);
        };
        for e in rec.outputs.files.values() {
            if !self.object_ok(&e.hash, e.size)? {
                return Ok(None);
            }
        }
        Ok(Some(rec))
    }

    pub fn write_record(&self, rec: &RunRecord) -> Result<()> {
        let bytes = serde_json::to_vec_pretty(rec).map_err(|e| CacheError::Corrupt {
            path: self.record_path(&rec.key),
            message: e.to_string(),
        })?;
        write_atomic(&self.record_path(&rec.key), &bytes)
    }

    /// Every run record in the cache (for `metrics`, `gc`, `show`).
    pub fn records(&self) -> Vec<RunRecord> {
        let Ok(rd) = std::fs::read_dir(self.root.join("runs")) else {
            return Vec::new();
        };
        rd.flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
            .filter_map(|e| std::fs::read(e.path()).ok())
            .filter_map(|b| serde_json::from_slice(&b).ok())
            .collect()
    }

    fn ref_path(&self, pipeline: &str, stage: &str) -> PathBuf {
        let id = Hash::of(format!("{pipeline}\0{stage}").as_bytes());
        self.root.join("refs").join(format!("{}.json", id.to_hex()))
    }

    /// Note that `key` is now the latest run of `stage` in `pipeline`; the previous latest
    /// is kept so that `metrics --diff` can compare.
    pub fn set_ref(&self, pipeline: &str, stage: &str, key: &Hash) -> Result<()> {
        let mut history = self.ref_history(pipeline, stage);
        if history.first() == Some(key) {
            return Ok(());
        }
        history.retain(|k| k != key);
        history.insert(0, *key);
        history.truncate(32);
        let doc = serde_json::json!({ "pipeline": pipeline, "stage": stage, "history": history });
        write_atomic(&self.ref_path(pipeline, stage), doc.to_string().as_bytes())
    }

    /// Keys of the runs of a stage, newest first.
    pub fn ref_history(&self, pipeline: &str, stage: &str) -> Vec<Hash> {
        std::fs::read(self.ref_path(pipeline, stage))
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .and_then(|v| serde_json::from_value(v["history"].clone()).ok())
            .unwrap_or_default()
    }

    /// Make `dest` hold exactly the files of `manifest`, as hard links to the objects
    /// (copies across filesystems). The swap is atomic: readers see the old folder or the
    /// new one. Does nothing when `dest` already matches.
    pub fn materialize(&self, manifest: &Manifest, dest: &Path) -> Result<()> {
        let id = manifest.content_hash().to_hex();
        if self.is_materialized(manifest, dest, &id) {
            return Ok(());
        }
        let parent = dest.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(parent).map_err(|e| CacheError::io(parent, e))?;
        let name = dest
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = parent.join(format!(
            ".{name}.tmp-{}-{}",
            std::process::id(),
            unique_suffix()
        ));
        std::fs::create_dir_all(&tmp).map_err(|e| CacheError::io(&tmp, e))?;
        for (rel, e) in &manifest.files {
            let to = tmp.join(rel);
            if let Some(d) = to.parent() {
                std::fs::create_dir_all(d).map_err(|e| CacheError::io(d, e))?;
            }
            let from = self.object_path(&e.hash);
            if std::fs::hard_link(&from, &to).is_err() {
                std::fs::copy(&from, &to).map_err(|e| CacheError::io(&from, e))?;
            }
        }
        std::fs::write(tmp.join(MARKER), &id).map_err(|e| CacheError::io(&tmp, e))?;
        // Another process may be swapping the same folder in: retry until our copy is in
        // place or theirs is already the same outputs.
        let mut last_err = None;
        for _ in 0..20 {
            let old = parent.join(format!(
                ".{name}.old-{}-{}",
                std::process::id(),
                unique_suffix()
            ));
            let had_old = std::fs::rename(dest, &old).is_ok();
            let placed = std::fs::rename(&tmp, dest);
            if had_old {
                let _ = std::fs::remove_dir_all(&old);
            }
            match placed {
                Ok(()) => return Ok(()),
                Err(e) => {
                    if self.is_materialized(manifest, dest, &id) {
                        let _ = std::fs::remove_dir_all(&tmp);
                        return Ok(());
                    }
                    last_err = Some(e);
                }
            }
        }
        let _ = std::fs::remove_dir_all(&tmp);
        Err(CacheError::io(
            dest,
            last_err.unwrap_or_else(|| std::io::Error::other("could not swap folder in")),
        ))
    }

    fn is_materialized(&self, manifest: &Manifest, dest: &Path, id: &str) -> bool {
        use std::os::unix::fs::MetadataExt;
        if std::fs::read_to_string(dest.join(MARKER)).ok().as_deref() != Some(id) {
            return false;
        }
        manifest.files.iter().all(|(rel, e)| {
            let (Ok(a), Ok(b)) = (
                std::fs::metadata(dest.join(rel)),
                std::fs::metadata(self.object_path(&e.hash)),
            ) else {
                return false;
            };
            // A copy (other filesystem) has its own inode: then compare size and content.
            (a.ino() == b.ino() && a.dev() == b.dev())
                || (a.len() == e.size
                    && hash_file(&dest.join(rel))
                        .map(|(h, _)| h == e.hash)
                        .unwrap_or(false))
        })
    }

    /// Rehash every object; move corrupt ones to `quarantine/` so they are never used, and
    /// name every one of them.
    pub fn verify(&self, on_progress: &(dyn Fn(usize, usize) + Sync)) -> Result<VerifyReport> {
        let objects = self.list_objects();
        let total = objects.len();
        let done = std::sync::atomic::AtomicUsize::new(0);
        let corrupt: Vec<Corrupt> = objects
            .par_iter()
            .filter_map(|(expected, path)| {
                let r = hash_file(path);
                let n = done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                on_progress(n, total);
                match r {
                    Ok((actual, _)) if actual == *expected => None,
                    Ok((actual, _)) => Some(Corrupt {
                        path: path.clone(),
                        expected: *expected,
                        actual: Some(actual),
                        message: format!("content hash is {}", actual.short()),
                    }),
                    Err(e) => Some(Corrupt {
                        path: path.clone(),
                        expected: *expected,
                        actual: None,
                        message: e.to_string(),
                    }),
                }
            })
            .collect();
        for c in &corrupt {
            self.quarantine(&c.path);
        }
        let mut report = VerifyReport {
            objects: total,
            corrupt,
            ..Default::default()
        };
        let rd = std::fs::read_dir(self.root.join("runs"))
            .map_err(|e| CacheError::io(self.root.join("runs"), e))?;
        for e in rd.flatten() {
            let p = e.path();
            if p.extension().is_none_or(|x| x != "json") {
                continue;
            }
            report.records += 1;
            match std::fs::read(&p)
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice::<RunRecord>(&b).map_err(|e| e.to_string()))
            {
                Ok(rec) => {
                    if rec
                        .outputs
                        .files
                        .values()
                        .any(|o| !self.object_path(&o.hash).exists())
                    {
                        report.incomplete_records.push((rec.key, rec.stage.clone()));
                    }
                }
                Err(msg) => report.unreadable_records.push((p, msg)),
            }
        }
        Ok(report)
    }

    fn list_objects(&self) -> Vec<(Hash, PathBuf)> {
        let mut out = Vec::new();
        for e in walkdir::WalkDir::new(self.root.join("objects"))
            .min_depth(2)
            .max_depth(2)
            .into_iter()
            .flatten()
        {
            let name = format!(
                "{}{}",
                e.path()
                    .parent()
                    .and_then(|p| p.file_name())
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                e.file_name().to_string_lossy()
            );
            if let Ok(h) = name.parse::<Hash>() {
                out.push((h, e.into_path()));
            }
        }
        out
    }

    /// Delete run records not in `live` and every object, log and work folder that no
    /// remaining record needs.
    pub fn gc(&self, live: &HashSet<Hash>) -> Result<GcReport> {
        let _guard = self.gc_lock(true)?;
        let mut report = GcReport::default();
        let mut keep_objects: HashSet<Hash> = HashSet::new();
        let mut keep_keys: HashSet<String> = HashSet::new();
        let mut keep_trees: HashSet<String> = HashSet::new();
        for rec in self.records() {
            if live.contains(&rec.key) {
                report.records_kept += 1;
                keep_trees.extend(rec.files.values().map(|h| format!("{}.bin", h.to_hex())));
                keep_keys.insert(rec.key.to_hex());
                keep_objects.extend(rec.outputs.files.values().map(|e| e.hash));
            } else {
                let _ = std::fs::remove_file(self.record_path(&rec.key));
                report.records_removed += 1;
            }
        }
        for k in live {
            keep_keys.insert(k.to_hex());
        }
        for (h, p) in self.list_objects() {
            if keep_objects.contains(&h) {
                report.objects_kept += 1;
            } else {
                let size = std::fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
                if std::fs::remove_file(&p).is_ok() {
                    report.objects_removed += 1;
                    report.bytes_freed += size;
                }
            }
        }
        if let Ok(rd) = std::fs::read_dir(self.root.join("stat").join("trees")) {
            for e in rd.flatten() {
                if !keep_trees.contains(&*e.file_name().to_string_lossy()) {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        for (dir, ext) in [("work", ""), ("logs", ".log")] {
            if let Ok(rd) = std::fs::read_dir(self.root.join(dir)) {
                for e in rd.flatten() {
                    let name = e.file_name().to_string_lossy().into_owned();
                    let stem = name.strip_suffix(ext).unwrap_or(&name);
                    if !keep_keys.contains(stem) {
                        let _ = std::fs::remove_dir_all(e.path());
                        let _ = std::fs::remove_file(e.path());
                    }
                }
            }
        }
        // A checkpoint folder lists the stage keys that trained into it; it stays while
        // one of them is live (a later run with more epochs continues from it).
        if let Ok(rd) = std::fs::read_dir(self.root.join("checkpoints")) {
            for e in rd.flatten() {
                let owners =
                    std::fs::read_to_string(e.path().join(CHECKPOINT_OWNERS)).unwrap_or_default();
                if !owners.lines().any(|k| keep_keys.contains(k.trim())) {
                    let _ = std::fs::remove_dir_all(e.path());
                    report.checkpoints_removed += 1;
                }
            }
        }
        let _ = std::fs::remove_dir_all(self.root.join("quarantine"));
        self.clean_scratch();
        Ok(report)
    }

    /// Sizes for `cache du`: bytes per kind of entry.
    pub fn disk_usage(&self) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        for d in [
            "objects",
            "checkpoints",
            "runs",
            "work",
            "logs",
            "stat",
            "tmp",
            "quarantine",
        ] {
            let bytes = walkdir::WalkDir::new(self.root.join(d))
                .into_iter()
                .flatten()
                .filter_map(|e| e.metadata().ok())
                .filter(|m| m.is_file())
                .map(|m| m.len())
                .sum();
            out.insert(d.to_string(), bytes);
        }
        out
    }
}

/// The file in a checkpoint folder that lists the stage keys using it, one per line.
const CHECKPOINT_OWNERS: &str = "stage-keys";

fn rel_string(path: &Path, base: &Path) -> String {
    path.strip_prefix(base)
        .unwrap_or(path)
        .components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}

fn set_readonly(p: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o444))
        .map_err(|e| CacheError::io(p, e))
}
