use std::fmt;
use std::io::Read;
use std::path::Path;
use std::str::FromStr;

use crate::{CacheError, Result};

/// A blake3 digest, shown as 64 hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Hash(pub [u8; 32]);

impl Hash {
    pub fn of(bytes: &[u8]) -> Hash {
        Hash(*blake3::hash(bytes).as_bytes())
    }

    pub fn to_hex(&self) -> String {
        blake3::Hash::from_bytes(self.0).to_hex().to_string()
    }

    /// The first 12 hex digits, for people.
    pub fn short(&self) -> String {
        self.to_hex()[..12].to_string()
    }
}

impl From<blake3::Hash> for Hash {
    fn from(h: blake3::Hash) -> Self {
        Hash(*h.as_bytes())
    }
}

impl fmt::Display for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hash({})", self.short())
    }
}

impl FromStr for Hash {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        blake3::Hash::from_hex(s)
            .map(Hash::from)
            .map_err(|e| format!("not a blake3 hash: {e}"))
    }
}

impl serde::Serialize for Hash {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> serde::Deserialize<'de> for Hash {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Files at least this large are hashed with several threads; below it the thread
/// hand-off costs more than it saves.
const PARALLEL_HASH_THRESHOLD: u64 = 4 << 20;

/// Hash a file's contents.
pub fn hash_file(path: &Path) -> Result<(Hash, u64)> {
    let file = std::fs::File::open(path).map_err(|e| CacheError::io(path, e))?;
    let len = file.metadata().map_err(|e| CacheError::io(path, e))?.len();
    let mut hasher = blake3::Hasher::new();
    if len >= PARALLEL_HASH_THRESHOLD {
        hasher
            .update_mmap_rayon(path)
            .map_err(|e| CacheError::io(path, e))?;
    } else {
        let mut buf = vec![0u8; (len as usize).clamp(1, 1 << 20)];
        let mut file = file;
        loop {
            let n = file.read(&mut buf).map_err(|e| CacheError::io(path, e))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
    }
    Ok((hasher.finalize().into(), len))
}
