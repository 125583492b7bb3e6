use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{Hash, Manifest};

/// What ran under a stage key, from what, and what it produced. A record exists only
/// for a run that finished and whose outputs are all in the store.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunRecord {
    pub key: Hash,
    /// The stage instance that produced it first (another pipeline may reuse it).
    pub stage: String,
    pub pipeline: String,
    pub kind: String,
    pub kind_version: u32,
    pub params: serde_json::Value,
    #[serde(default)]
    pub pipeline_seed: u64,
    /// Upstream outputs by input slot.
    pub inputs: BTreeMap<String, Vec<StageRef>>,
    /// Files and folders read from disk, with their content hashes.
    pub files: BTreeMap<String, Hash>,
    pub outputs: Manifest,
    pub output_hash: Hash,
    /// Metrics the stage reported (`metrics.json` in its outputs), for `gantry metrics`.
    #[serde(default)]
    pub metrics: Option<serde_json::Value>,
    pub started_at: String,
    /// The same instant in seconds since the Unix epoch.
    #[serde(default)]
    pub started_unix_s: f64,
    pub duration_s: f64,
    pub gantry_version: String,
    pub host: String,
    #[serde(default)]
    pub backend: Option<String>,
}

/// One upstream stage output as seen by a downstream key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StageRef {
    pub stage: String,
    pub output_hash: Hash,
}
