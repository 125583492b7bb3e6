//! What a running stage gets from the runner, and the errors it can return.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use indicatif::ProgressBar;

use crate::ArtifactType;

/// The outputs of an upstream stage, materialised as a read-only directory.
#[derive(Debug, Clone)]
pub struct Artifact {
    /// The upstream stage instance, e.g. `train[lr=0.01]`.
    pub stage: String,
    pub ty: ArtifactType,
    pub dir: PathBuf,
}

impl Artifact {
    /// The canonical dataset file of a `dataset`-typed artifact.
    pub fn dataset_file(&self) -> PathBuf {
        self.dir.join(gantry_datasets::DATASET_FILE)
    }
}

/// Everything a stage may use while it runs.
pub struct StageContext {
    /// The stage instance name, e.g. `small` or `train[lr=0.01]`.
    pub name: String,
    /// The checked, canonical params (as returned by [`crate::StageKind::check`]).
    pub params: serde_json::Value,
    /// Input artifacts by slot key.
    pub inputs: BTreeMap<String, Vec<Artifact>>,
    /// Where the stage writes its outputs; moved into the cache only on success.
    pub out_dir: PathBuf,
    /// A directory tied to the stage key that survives interruption.
    pub work_dir: PathBuf,
    /// Training checkpoints: tied to the stage key without the kind's
    /// [`crate::StageKind::extendable`] params, so that a killed run and a run asked for
    /// more epochs both find the state to continue from.
    pub checkpoint_dir: PathBuf,
    /// The pipeline's (or `--backend`'s) backend: `cpu`, `cuda`, `wgpu` or `auto`.
    pub backend: String,
    /// GPU devices given to this stage by the executor.
    pub gpus: Vec<usize>,
    /// The backend and device a training stage actually ran on, for its provenance.
    pub backend_used: std::sync::Mutex<Option<String>>,
    /// The folder of the pipeline file: relative paths in params are relative to it.
    pub base_dir: PathBuf,
    /// The pipeline seed mixed with the stage name: stable across runs.
    pub seed: u64,
    /// Threads the stage may use (its `resources.cpu`).
    pub threads: usize,
    pub progress: ProgressBar,
    pub cancel: Arc<AtomicBool>,
}

impl StageContext {
    /// The one artifact of a single-input slot.
    pub fn input(&self, key: &str) -> Result<&Artifact, StageError> {
        self.inputs
            .get(key)
            .and_then(|v| v.first())
            .ok_or_else(|| StageError::Failed(format!("missing input `{key}`")))
    }

    pub fn inputs(&self, key: &str) -> &[Artifact] {
        self.inputs.get(key).map(Vec::as_slice).unwrap_or(&[])
    }

    /// Returns `Err(Cancelled)` once the user pressed Ctrl-C; call between units of work.
    pub fn check_cancelled(&self) -> Result<(), StageError> {
        if self.cancel.load(Ordering::Relaxed) {
            Err(StageError::Cancelled)
        } else {
            Ok(())
        }
    }

    /// Record the backend and device the stage runs on (for `gantry show`).
    pub fn set_backend_used(&self, label: &str) {
        if let Ok(mut b) = self.backend_used.lock() {
            *b = Some(label.to_string());
        }
    }

    /// A path from params, resolved against the pipeline file's folder.
    pub fn resolve(&self, p: &Path) -> PathBuf {
        self.base_dir.join(p)
    }

    /// Typed params.
    pub fn params<P: serde::de::DeserializeOwned>(&self) -> Result<P, StageError> {
        serde_json::from_value(self.params.clone())
            .map_err(|e| StageError::Failed(format!("params: {e}")))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StageError {
    #[error(transparent)]
    Dataset(#[from] gantry_datasets::DatasetError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Failed(String),
    #[error("cancelled")]
    Cancelled,
}

impl StageError {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        StageError::Io {
            path: path.into(),
            source,
        }
    }
}
