//! gantry's stage kinds.
//!
//! A stage kind is one module: its params struct (serde, unknown keys rejected, defaults
//! documented), the artifacts it reads and writes, and its `run`. The runner finds kinds
//! through [`registry`]; adding a kind is one module and one line there.
//!
//! This crate knows nothing about YAML, DAGs, caches or executors: a stage gets its typed
//! params, its input artifacts as directories, and a scratch directory to write into.

mod buffer;
pub mod cgan;
pub mod classifier;
pub mod context;
pub mod dataset;
pub mod dcgan;
pub mod downsample;
pub mod evaluate;
pub mod grid;
pub mod metrics;
pub mod params;
pub mod plot;
pub mod resize;
pub mod table;
pub mod train;
pub mod wgan;

/// The file a stage writes for people to read first; the CLI prints it after the stage
/// runs, and the `table` stage links it.
pub const REPORT_FILE: &str = "report.md";
/// Numbers a stage reports; `gantry metrics` reads them from the run record.
pub const METRICS_FILE: &str = "metrics.json";

use std::sync::Arc;

pub use context::{Artifact, StageContext, StageError};
pub use params::{Checked, ParamsError};

/// What a stage produces, so that the runner can refuse to feed a table to a stage that
/// wants images before anything runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ArtifactType {
    /// A `dataset.safetensors` (u8 NHWC images, optional labels) plus anything else.
    Dataset,
    /// `metrics.json` (and CSV) of an `evaluate` stage.
    Metrics,
    /// Tables (Markdown/CSV/HTML) and plots only.
    Report,
    /// A trained network other stages use (a `classifier` for `evaluate`).
    Model,
}

impl std::fmt::Display for ArtifactType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ArtifactType::Dataset => "dataset",
            ArtifactType::Metrics => "metrics",
            ArtifactType::Report => "report",
            ArtifactType::Model => "model",
        })
    }
}

/// A param that names other stages whose outputs this stage reads.
#[derive(Debug, Clone, Copy)]
pub struct InputSlot {
    /// The params key, e.g. `input`.
    pub key: &'static str,
    /// The artifact types accepted.
    pub accepts: &'static [ArtifactType],
    /// A list of stages (and a matrix stage's instances) rather than exactly one.
    pub many: bool,
    pub required: bool,
}

/// One kind of stage.
pub trait StageKind: Send + Sync + 'static {
    /// The `kind:` name in pipeline files.
    fn name(&self) -> &'static str;
    /// Bumped whenever the kind's code changes its results: part of every stage key.
    fn version(&self) -> u32;
    /// One line for `gantry schema` and error messages.
    fn summary(&self) -> &'static str;
    fn inputs(&self) -> &'static [InputSlot];
    fn output(&self) -> ArtifactType;
    /// Params that may change without throwing away training state: a run with a larger
    /// `epochs` continues from the finished shorter run's final checkpoint. The runner keys
    /// [`StageContext::checkpoint_dir`] on the params without these.
    fn extendable(&self) -> &'static [&'static str] {
        &[]
    }
    /// Whether the stage runs on a burn backend (and so needs the pipeline's `backend`).
    fn uses_backend(&self) -> bool {
        false
    }
    /// JSON Schema of the params (without the keys the runner owns).
    fn params_schema(&self) -> schemars::Schema;
    /// Deserialize and check params (input slot keys already removed by the runner).
    /// Relative paths in params are relative to `base_dir` (the pipeline file's folder).
    fn check(
        &self,
        params: serde_json::Value,
        base_dir: &std::path::Path,
    ) -> Result<Checked, ParamsError>;
    /// Do the work: read `ctx.inputs`, write into `ctx.out_dir`.
    fn run(&self, ctx: &StageContext) -> Result<(), StageError>;
}

/// Every stage kind this build knows.
pub fn registry() -> Vec<Arc<dyn StageKind>> {
    vec![
        Arc::new(cgan::CganKind),
        Arc::new(classifier::ClassifierKind),
        Arc::new(dataset::DatasetKind),
        Arc::new(dcgan::DcganKind),
        Arc::new(downsample::DownsampleKind),
        Arc::new(evaluate::EvaluateKind),
        Arc::new(plot::PlotKind),
        Arc::new(table::TableKind),
        Arc::new(wgan::WganKind),
    ]
}

/// Find a kind by name.
pub fn find_kind(name: &str) -> Option<Arc<dyn StageKind>> {
    registry().into_iter().find(|k| k.name() == name)
}

/// A stage or set name as a file name: letters, digits, `-` and `_` kept, anything
/// else (brackets, `=`, `/`, `.`) replaced by `_`.
pub fn file_name_safe(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Write a file of a stage's outputs.
pub fn write_file(path: &std::path::Path, bytes: &[u8]) -> Result<(), StageError> {
    std::fs::write(path, bytes).map_err(|e| StageError::io(path, e))
}

/// Write pretty JSON (stage outputs are for people too).
pub fn write_json(path: &std::path::Path, v: &serde_json::Value) -> Result<(), StageError> {
    let mut s = serde_json::to_string_pretty(v).map_err(|e| StageError::Failed(e.to_string()))?;
    s.push('\n');
    write_file(path, s.as_bytes())
}

/// Counts and shapes of a dataset, for `summary.json` and `gantry show`.
pub fn dataset_summary(d: &gantry_datasets::Dataset) -> serde_json::Value {
    let parts: serde_json::Map<String, serde_json::Value> = d
        .parts
        .iter()
        .map(|(name, s)| {
            (
                name.clone(),
                serde_json::json!({
                    "count": s.len(), "width": s.width, "height": s.height, "channels": s.channels
                }),
            )
        })
        .collect();
    serde_json::json!({
        "layout": d.layout,
        "parts": parts,
        "labels": d.labels.as_ref().map(Vec::len),
        "classes": d.classes,
    })
}
