//! Stage keys and freshness: what would run, and why.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use gantry_cache::{Hash, KeyBuilder, PathHash, RunRecord, StageRef, Store};

use crate::spec::{Instance, Pipeline};

/// Content hashes of the files and folders stages read, computed once per run.
#[derive(Default)]
pub struct FileHashes {
    pub hashes: HashMap<PathBuf, Result<PathHash, String>>,
}

impl FileHashes {
    /// Hash every path that the selected instances read, through the stat cache.
    pub fn compute(
        store: &Store,
        pipeline: &Pipeline,
        selected: &[bool],
        on_progress: &(dyn Fn(&Path, usize, usize) + Sync),
    ) -> FileHashes {
        let stat = store.stat_cache();
        let mut out = FileHashes::default();
        for (i, inst) in pipeline.instances.iter().enumerate() {
            if !selected[i] {
                continue;
            }
            for f in &inst.files {
                if out.hashes.contains_key(f) {
                    continue;
                }
                let r = stat
                    .hash_path(f, &|done, total| on_progress(f, done, total))
                    .map_err(|e| e.to_string());
                out.hashes.insert(f.clone(), r);
            }
        }
        out
    }
}

/// The outputs `inst` reads, by slot, given the output hash of each upstream instance
/// where it is known; otherwise the names of the upstream instances without one.
pub fn upstream_refs(
    pipeline: &Pipeline,
    inst: &Instance,
    output_of: impl Fn(usize) -> Option<Hash>,
) -> Result<BTreeMap<String, Vec<StageRef>>, Vec<String>> {
    let mut upstream = BTreeMap::new();
    let mut unknown = Vec::new();
    for (slot, ups) in &inst.inputs {
        let mut refs = Vec::new();
        for &u in ups {
            match output_of(u) {
                Some(h) => refs.push(StageRef {
                    stage: pipeline.instances[u].name.clone(),
                    output_hash: h,
                }),
                None => unknown.push(pipeline.instances[u].name.clone()),
            }
        }
        upstream.insert(slot.clone(), refs);
    }
    if unknown.is_empty() {
        Ok(upstream)
    } else {
        Err(unknown)
    }
}

/// The key of `inst`, given the output hashes of its upstream instances.
pub fn stage_key(
    pipeline: &Pipeline,
    inst: &Instance,
    upstream: &BTreeMap<String, Vec<StageRef>>,
    files: &BTreeMap<String, Hash>,
) -> Hash {
    let mut k = KeyBuilder::new("gantry-stage-v1");
    k.str("kind", inst.kind.name())
        .str("version", &inst.kind.version().to_string())
        .json("params", &inst.params)
        .str("seed", &pipeline.seed.to_string());
    for (slot, refs) in upstream {
        k.str("slot", slot);
        for r in refs {
            k.hash("input", &r.output_hash);
        }
    }
    for (path, h) in files {
        k.str("file", path).hash("content", h);
    }
    k.finish()
}

/// The key of a stage's checkpoint folder: its stage key without the params the kind
/// calls extendable (`epochs`), so that a run asked for more epochs, or rerun after a
/// crash, finds the state to go on from. Everything that changes what training computes
/// (other params, seed, inputs, kind version) still separates checkpoints.
pub fn checkpoint_key(
    pipeline: &Pipeline,
    inst: &Instance,
    upstream: &BTreeMap<String, Vec<StageRef>>,
    files: &BTreeMap<String, Hash>,
) -> Hash {
    let mut params = inst.params.clone();
    if let Some(map) = params.as_object_mut() {
        for k in inst.kind.extendable() {
            map.remove(*k);
        }
    }
    let mut k = KeyBuilder::new("gantry-checkpoint-v1");
    k.str("kind", inst.kind.name())
        .str("version", &inst.kind.version().to_string())
        .json("params", &params)
        .str("seed", &pipeline.seed.to_string());
    for (slot, refs) in upstream {
        k.str("slot", slot);
        for r in refs {
            k.hash("input", &r.output_hash);
        }
    }
    for (path, h) in files {
        k.str("file", path).hash("content", h);
    }
    k.finish()
}

/// Paths as the key and messages show them: relative to the pipeline folder.
pub fn file_label(pipeline: &Pipeline, p: &Path) -> String {
    p.strip_prefix(&pipeline.base_dir)
        .unwrap_or(p)
        .display()
        .to_string()
}

pub fn file_inputs(
    pipeline: &Pipeline,
    inst: &Instance,
    hashes: &FileHashes,
) -> Result<BTreeMap<String, Hash>, String> {
    let mut out = BTreeMap::new();
    for f in &inst.files {
        match hashes.hashes.get(f) {
            Some(Ok(h)) => {
                out.insert(file_label(pipeline, f), h.hash);
            }
            Some(Err(e)) => return Err(e.clone()),
            None => return Err(format!("{}: not hashed", f.display())),
        }
    }
    Ok(out)
}

#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum Freshness {
    /// Outputs for this exact configuration are in the cache.
    Fresh {
        key: Hash,
        /// This configuration is not the latest run of the stage: it will be restored from
        /// the run-cache without executing.
        restored: bool,
    },
    /// It will run, for these reasons.
    Stale {
        key: Option<Hash>,
        reasons: Vec<String>,
    },
    /// Its inputs cannot be read (a missing file): it cannot run.
    Broken { reason: String },
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct StageStatus {
    pub stage: String,
    pub kind: String,
    #[serde(flatten)]
    pub freshness: Freshness,
}

/// Decide, without running anything, which instances are fresh and why the others are
/// not. Downstream of a stale stage the key is unknown until it runs: then the reason is
/// the stale upstream (it may still turn out fresh, thanks to early cutoff).
pub fn status(store: &Store, pipeline: &Pipeline, hashes: &FileHashes) -> Vec<StageStatus> {
    let mut outputs: Vec<Option<Hash>> = vec![None; pipeline.instances.len()];
    let mut out = Vec::new();
    for (i, inst) in pipeline.instances.iter().enumerate() {
        let files = match file_inputs(pipeline, inst, hashes) {
            Ok(f) => f,
            Err(reason) => {
                out.push(StageStatus {
                    stage: inst.name.clone(),
                    kind: inst.kind.name().into(),
                    freshness: Freshness::Broken { reason },
                });
                continue;
            }
        };
        let (upstream, unknown) = match upstream_refs(pipeline, inst, |u| outputs[u]) {
            Ok(refs) => (refs, Vec::new()),
            Err(unknown) => (BTreeMap::new(), unknown),
        };
        let freshness = if !unknown.is_empty() {
            Freshness::Stale {
                key: None,
                reasons: unknown
                    .iter()
                    .map(|u| format!("upstream `{u}` will run"))
                    .collect(),
            }
        } else {
            let key = stage_key(pipeline, inst, &upstream, &files);
            let latest = store.ref_history(&pipeline.name, &inst.name);
            match store.usable_record(&key) {
                Ok(Some(rec)) => {
                    outputs[i] = Some(rec.output_hash);
                    Freshness::Fresh {
                        key,
                        restored: latest.first() != Some(&key),
                    }
                }
                _ => {
                    let previous = latest.iter().find_map(|k| store.record(k).ok().flatten());
                    let mut reasons = match &previous {
                        Some(prev) => explain(store, pipeline, inst, prev, &upstream, &files),
                        None => vec!["never run".to_string()],
                    };
                    if previous.as_ref().is_some_and(|p| p.key == key) || reasons.is_empty() {
                        reasons = vec!["outputs missing or corrupt in the cache".to_string()];
                    }
                    Freshness::Stale {
                        key: Some(key),
                        reasons,
                    }
                }
            }
        };
        out.push(StageStatus {
            stage: inst.name.clone(),
            kind: inst.kind.name().into(),
            freshness,
        });
    }
    out
}

/// What differs between the previous run of a stage and its configuration now.
pub fn explain(
    store: &Store,
    pipeline: &Pipeline,
    inst: &Instance,
    prev: &RunRecord,
    upstream: &BTreeMap<String, Vec<StageRef>>,
    files: &BTreeMap<String, Hash>,
) -> Vec<String> {
    let mut reasons = Vec::new();
    if prev.kind != inst.kind.name() {
        reasons.push(format!(
            "kind changed: {} → {}",
            prev.kind,
            inst.kind.name()
        ));
    } else if prev.kind_version != inst.kind.version() {
        reasons.push(format!(
            "`{}` code changed (version {} → {})",
            prev.kind,
            prev.kind_version,
            inst.kind.version()
        ));
    }
    diff_json("", &prev.params, &inst.params, &mut reasons);
    for (slot, refs) in upstream {
        let before = prev.inputs.get(slot).cloned().unwrap_or_default();
        let now: Vec<_> = refs.iter().map(|r| r.output_hash).collect();
        let then: Vec<_> = before.iter().map(|r| r.output_hash).collect();
        if now != then {
            let names: Vec<String> = refs.iter().map(|r| format!("`{}`", r.stage)).collect();
            reasons.push(format!(
                "input `{slot}` changed (output of {})",
                names.join(", ")
            ));
        }
    }
    for (path, h) in files {
        match prev.files.get(path) {
            Some(old) if old == h => {}
            Some(old) => match store.stat_cache().tree_diff(old, h) {
                Some(d) => reasons.push(format!("folder `{path}` changed ({d})")),
                None => reasons.push(format!("file `{path}` changed")),
            },
            None => reasons.push(format!("new file input `{path}`")),
        }
    }
    if prev.pipeline_seed != pipeline.seed {
        reasons.push(format!(
            "pipeline seed changed: {} → {}",
            prev.pipeline_seed, pipeline.seed
        ));
    }
    reasons
}

fn diff_json(
    prefix: &str,
    old: &serde_json::Value,
    new: &serde_json::Value,
    out: &mut Vec<String>,
) {
    use serde_json::Value;
    match (old, new) {
        (Value::Object(a), Value::Object(b)) => {
            let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for k in keys {
                let p = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                match (a.get(k), b.get(k)) {
                    (Some(x), Some(y)) => diff_json(&p, x, y, out),
                    (None, Some(y)) => out.push(format!("param `{p}` added: {}", short(y))),
                    (Some(x), None) => out.push(format!("param `{p}` removed (was {})", short(x))),
                    (None, None) => {}
                }
            }
        }
        (a, b) if a != b => out.push(format!("param `{prefix}`: {} → {}", short(a), short(b))),
        _ => {}
    }
}

fn short(v: &serde_json::Value) -> String {
    let s = crate::spec::render_json(v);
    if s.len() > 60 {
        format!(
            "{}…",
            &s[..s.char_indices().nth(57).map(|(i, _)| i).unwrap_or(s.len())]
        )
    } else {
        s
    }
}
