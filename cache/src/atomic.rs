use std::fs::File;
use std::io::Write;
use std::path::Path;

use crate::{CacheError, Result};

/// Write `bytes` to `path` so that readers see either the old file or the whole new one:
/// a temporary file in the same folder, fsync, rename, fsync of the folder.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| CacheError::io(dir, e))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(
        ".{name}.tmp-{}-{}",
        std::process::id(),
        unique_suffix()
    ));
    let result = (|| {
        let mut f = File::create(&tmp).map_err(|e| CacheError::io(&tmp, e))?;
        f.write_all(bytes).map_err(|e| CacheError::io(&tmp, e))?;
        f.sync_all().map_err(|e| CacheError::io(&tmp, e))?;
        std::fs::rename(&tmp, path).map_err(|e| CacheError::io(path, e))?;
        fsync_dir(dir)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Make a rename or creation inside `dir` durable.
pub fn fsync_dir(dir: &Path) -> Result<()> {
    let f = File::open(dir).map_err(|e| CacheError::io(dir, e))?;
    f.sync_all().map_err(|e| CacheError::io(dir, e))
}

/// Unique within this process, so that threads never share a temporary name.
pub(crate) fn unique_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}
