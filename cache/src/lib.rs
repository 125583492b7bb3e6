//! gantry's cache: a content-addressed object store (blake3), stage keys, run records,
//! a file-stat cache, per-key locks, `verify` and `gc`.
//!
//! ```text
//! <root>/objects/ab/cdef…   immutable file contents, named by their blake3, mtime pinned
//! <root>/runs/<key>.json    run records: what ran under a stage key and what it produced
//! <root>/refs/…             the latest run of each (pipeline, stage), for `show`/`metrics`
//! <root>/stat/…             stat cache for hashed input folders
//! <root>/locks/<key>.lock   one lock per stage key, held while that key is computed
//! <root>/tmp/               scratch space on the same filesystem, so publishing is a rename
//! <root>/work/<key>/        per-key working dirs that survive interruption (checkpoints)
//! <root>/logs/<key>.log     each run's log
//! ```
//!
//! Publishing is write-to-scratch, fsync, rename: a process killed at any moment leaves
//! either nothing or a complete entry under a key. The cache never trusts a corrupt
//! object: objects carry a pinned mtime, so a cheap stat shows any later write, and
//! [`Store::verify`] rehashes everything for the rest.
//!
//! This crate knows nothing about pipelines or stages: keys are built by the caller with
//! [`KeyBuilder`].

mod atomic;
mod hash;
mod key;
mod lock;
mod manifest;
mod record;
mod statcache;
mod store;

pub use atomic::{fsync_dir, write_atomic};
pub use hash::{Hash, hash_file};
pub use key::{KeyBuilder, canonical_json};
pub use lock::KeyLock;
pub use manifest::{Manifest, ManifestEntry};
pub use record::{RunRecord, StageRef};
pub use statcache::{PathHash, StatCache, TreeDiff};
pub use store::{Corrupt, GcReport, Store, VerifyReport};

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: corrupt cache entry: {message}")]
    Corrupt { path: PathBuf, message: String },
}

impl CacheError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        CacheError::Io {
            path: path.into(),
            source,
        }
    }
}

pub type Result<T, E = CacheError> = std::result::Result<T, E>;
