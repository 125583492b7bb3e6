use std::fs::{File, OpenOptions};
use std::path::Path;

use crate::{CacheError, Result};

/// An exclusive advisory lock on one stage key, across processes. Dropped = released,
/// and the OS releases it when a process dies, so a killed run never wedges the cache.
pub struct KeyLock {
    _file: File,
}

impl KeyLock {
    /// Take the lock, calling `on_wait` once if another process holds it.
    pub fn acquire(path: &Path, on_wait: impl FnOnce()) -> Result<KeyLock> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| CacheError::io(dir, e))?;
        }
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map_err(|e| CacheError::io(path, e))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                on_wait();
                file.lock().map_err(|e| CacheError::io(path, e))?;
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(CacheError::io(path, e)),
        }
        Ok(KeyLock { _file: file })
    }
}
