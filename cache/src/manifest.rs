use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::Hash;

/// The files a stage produced: relative path (with `/`) to content hash and size.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub files: BTreeMap<String, ManifestEntry>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestEntry {
    pub hash: Hash,
    pub size: u64,
}

impl Manifest {
    /// The content hash of the whole output: what downstream keys depend on. Two runs
    /// that write the same files with the same bytes have the same output hash, which is
    /// what lets an upstream rerun leave downstream stages alone (early cutoff).
    pub fn content_hash(&self) -> Hash {
        let mut h = blake3::Hasher::new();
        h.update(b"gantry-manifest-v1");
        for (path, e) in &self.files {
            h.update(&(path.len() as u64).to_le_bytes());
            h.update(path.as_bytes());
            h.update(&e.hash.0);
            h.update(&e.size.to_le_bytes());
        }
        h.finalize().into()
    }

    pub fn total_size(&self) -> u64 {
        self.files.values().map(|e| e.size).sum()
    }
}
