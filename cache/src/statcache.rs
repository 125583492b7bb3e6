use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::{CacheError, Hash, Result, hash_file, write_atomic};

/// Hashes files and folders on disk, remembering (path, size, mtime, inode) → hash so
/// that an unchanged file is never read twice. Touching a file without changing its bytes
/// costs one rehash and changes nothing downstream; changing one byte deep inside a folder
/// changes the folder's hash.
pub struct StatCache {
    dir: PathBuf,
}

/// The content hash of a file or folder, with what it took.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PathHash {
    pub hash: Hash,
    pub files: usize,
    pub bytes: u64,
    /// Files whose stat changed and that had to be read again.
    pub rehashed: usize,
}

#[derive(Serialize, Deserialize, Clone)]
struct Entry {
    rel: String,
    size: u64,
    mtime_ns: i128,
    ino: u64,
    hash: [u8; 32],
}

#[derive(Serialize, Deserialize, Default)]
struct StatFile {
    root: String,
    entries: Vec<Entry>,
}

/// A file modified within this window of "now" may be modified again within the same
/// mtime tick without its stat changing (git's "racy" entries): never trust those.
const RACY_WINDOW_NS: i128 = 2_000_000_000;

struct Seen {
    rel: String,
    size: u64,
    mtime_ns: i128,
    ino: u64,
}

impl StatCache {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        StatCache { dir: dir.into() }
    }

    /// Hash a file or a folder (recursively, following links). A folder's hash covers the
    /// relative path and content of every file in it, not timestamps.
    pub fn hash_path(
        &self,
        path: &Path,
        on_progress: &(dyn Fn(usize, usize) + Sync),
    ) -> Result<PathHash> {
        let abs = std::path::absolute(path).map_err(|e| CacheError::io(path, e))?;
        let meta = std::fs::metadata(&abs).map_err(|e| CacheError::io(&abs, e))?;
        let listing = if meta.is_dir() {
            list_folder(&abs)?
        } else {
            vec![seen(String::new(), &meta)]
        };
        let path_of = |s: &Seen| {
            if s.rel.is_empty() {
                abs.clone()
            } else {
                abs.join(&s.rel)
            }
        };

        let store_path = self.dir.join(format!(
            "{}.bin",
            Hash::of(abs.to_string_lossy().as_bytes()).to_hex()
        ));
        let previous: StatFile = std::fs::read(&store_path)
            .ok()
            .and_then(|b| postcard::from_bytes(&b).ok())
            .filter(|f: &StatFile| f.root == abs.to_string_lossy())
            .unwrap_or_default();

        // Both lists are sorted by `rel`: a merge finds each file's previous entry.
        let mut cached: Vec<Option<[u8; 32]>> = Vec::with_capacity(listing.len());
        let mut j = 0;
        for s in &listing {
            while j < previous.entries.len() && previous.entries[j].rel < s.rel {
                j += 1;
            }
            let hit = previous.entries.get(j).and_then(|e| {
                (e.rel == s.rel && e.size == s.size && e.mtime_ns == s.mtime_ns && e.ino == s.ino)
                    .then_some(e.hash)
            });
            cached.push(hit);
        }

        let misses: Vec<usize> = (0..listing.len())
            .filter(|&i| cached[i].is_none())
            .collect();
        let total = misses.len();
        let done = std::sync::atomic::AtomicUsize::new(0);
        let fresh: Vec<(usize, Hash)> = misses
            .par_iter()
            .map(|&i| {
                let (h, _) = hash_file(&path_of(&listing[i]))?;
                let n = done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                on_progress(n, total);
                Ok((i, h))
            })
            .collect::<Result<_>>()?;
        for (i, h) in fresh {
            cached[i] = Some(h.0);
        }

        let now = now_ns();
        let mut tree = blake3::Hasher::new();
        tree.update(if meta.is_dir() {
            b"gantry-tree-v1"
        } else {
            b"gantry-file-v1"
        });
        let files = listing.len();
        let mut entries = Vec::with_capacity(listing.len());
        let mut bytes = 0u64;
        for (s, h) in listing.into_iter().zip(cached) {
            let h = h.unwrap_or_default();
            tree.update(&(s.rel.len() as u64).to_le_bytes());
            tree.update(s.rel.as_bytes());
            tree.update(&h);
            bytes += s.size;
            entries.push(Entry {
                rel: s.rel,
                size: s.size,
                mtime_ns: s.mtime_ns,
                ino: s.ino,
                hash: h,
            });
        }
        let hash: Hash = tree.finalize().into();
        if meta.is_dir() {
            self.save_tree(&hash, &entries);
        }
        let before = entries.len();
        entries.retain(|e| now - e.mtime_ns > RACY_WINDOW_NS);
        let racy = before - entries.len();
        let result = PathHash {
            hash,
            files,
            bytes,
            rehashed: total,
        };
        let unchanged = total == 0 && racy == 0 && entries.len() == previous.entries.len();
        if !unchanged {
            let file = StatFile {
                root: abs.to_string_lossy().into_owned(),
                entries,
            };
            if let Ok(buf) = postcard::to_allocvec(&file) {
                // The stat cache is only a speed-up: failing to save it is not an error.
                if let Err(e) = write_atomic(&store_path, &buf) {
                    tracing::debug!("stat cache not saved: {e}");
                }
            }
        }
        Ok(result)
    }
}

impl StatCache {
    fn tree_path(&self, h: &Hash) -> PathBuf {
        self.dir.join("trees").join(format!("{}.bin", h.to_hex()))
    }

    /// Remember which files made up a folder with this hash, so that `status` can name
    /// the files that changed between two versions of it.
    fn save_tree(&self, h: &Hash, entries: &[Entry]) {
        let p = self.tree_path(h);
        if p.exists() {
            return;
        }
        let listing: Vec<(&str, [u8; 32])> =
            entries.iter().map(|e| (e.rel.as_str(), e.hash)).collect();
        if let Ok(buf) = postcard::to_allocvec(&listing) {
            let _ = write_atomic(&p, &buf);
        }
    }

    /// What changed between two versions of a folder, if both are known: added, removed
    /// and modified relative paths.
    pub fn tree_diff(&self, old: &Hash, new: &Hash) -> Option<TreeDiff> {
        let load = |h: &Hash| -> Option<Vec<(String, [u8; 32])>> {
            postcard::from_bytes(&std::fs::read(self.tree_path(h)).ok()?).ok()
        };
        let (a, b) = (load(old)?, load(new)?);
        let mut d = TreeDiff::default();
        let (mut i, mut j) = (0, 0);
        while i < a.len() || j < b.len() {
            match (a.get(i), b.get(j)) {
                (Some(x), Some(y)) if x.0 == y.0 => {
                    if x.1 != y.1 {
                        d.modified.push(x.0.clone());
                    }
                    i += 1;
                    j += 1;
                }
                (Some(x), Some(y)) if x.0 < y.0 => {
                    d.removed.push(x.0.clone());
                    i += 1;
                }
                (Some(_), Some(y)) => {
                    d.added.push(y.0.clone());
                    j += 1;
                }
                (Some(x), None) => {
                    d.removed.push(x.0.clone());
                    i += 1;
                }
                (None, Some(y)) => {
                    d.added.push(y.0.clone());
                    j += 1;
                }
                (None, None) => break,
            }
        }
        Some(d)
    }
}

/// Files that differ between two versions of a folder.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TreeDiff {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub modified: Vec<String>,
}

impl std::fmt::Display for TreeDiff {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut parts = Vec::new();
        for (what, list) in [
            ("modified", &self.modified),
            ("added", &self.added),
            ("removed", &self.removed),
        ] {
            if list.is_empty() {
                continue;
            }
            let shown: Vec<&str> = list.iter().take(3).map(String::as_str).collect();
            let more = if list.len() > 3 {
                format!(", … {} more", list.len() - 3)
            } else {
                String::new()
            };
            parts.push(format!("{} {what}: {}{more}", list.len(), shown.join(", ")));
        }
        f.write_str(&parts.join("; "))
    }
}

/// Every file under `root` (following links), sorted by relative path.
///
/// A hand-written walk rather than walkdir because of what it costs at scale: stats
/// through the open directory (`DirEntry::metadata` is `fstatat` on the directory's fd)
/// instead of resolving a long absolute path per file, and subfolders in parallel. At
/// 200,000 files, path resolution in `statx` was most of a no-op run.
fn list_folder(root: &Path) -> Result<Vec<Seen>> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(root).map_err(|e| CacheError::io(root, e))?;
    let mut out = walk_dir(root, String::new(), &[(meta.dev(), meta.ino())])?;
    out.par_sort_unstable_by(|a, b| a.rel.cmp(&b.rel));
    Ok(out)
}

fn walk_dir(dir: &Path, rel: String, ancestors: &[(u64, u64)]) -> Result<Vec<Seen>> {
    use std::os::unix::fs::MetadataExt;
    let rd = std::fs::read_dir(dir).map_err(|e| CacheError::io(dir, e))?;
    let mut files = Vec::new();
    // (path, relative name, (device, inode)) of each folder to descend into.
    let mut subdirs: Vec<(PathBuf, String, (u64, u64))> = Vec::new();
    for entry in rd {
        let entry = entry.map_err(|e| CacheError::io(dir, e))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let child_rel = if rel.is_empty() {
            name.into_owned()
        } else {
            format!("{rel}/{name}")
        };
        let ft = entry
            .file_type()
            .map_err(|e| CacheError::io(entry.path(), e))?;
        let meta = if ft.is_symlink() {
            std::fs::metadata(entry.path()).map_err(|e| CacheError::io(entry.path(), e))?
        } else if ft.is_dir() {
            entry
                .metadata()
                .map_err(|e| CacheError::io(entry.path(), e))?
        } else {
            entry
                .metadata()
                .map_err(|e| CacheError::io(entry.path(), e))?
        };
        if meta.is_dir() {
            let id = (meta.dev(), meta.ino());
            // A link back to an enclosing folder would never end.
            if !ancestors.contains(&id) {
                subdirs.push((entry.path(), child_rel, id));
            }
        } else {
            files.push(seen(child_rel, &meta));
        }
    }
    let nested: Vec<Vec<Seen>> = subdirs
        .into_par_iter()
        .map(|(path, rel, id)| {
            let mut chain = ancestors.to_vec();
            chain.push(id);
            walk_dir(&path, rel, &chain)
        })
        .collect::<Result<_>>()?;
    for mut n in nested {
        files.append(&mut n);
    }
    Ok(files)
}

fn seen(rel: String, meta: &std::fs::Metadata) -> Seen {
    use std::os::unix::fs::MetadataExt;
    Seen {
        rel,
        size: meta.len(),
        mtime_ns: meta.mtime() as i128 * 1_000_000_000 + meta.mtime_nsec() as i128,
        ino: meta.ino(),
    }
}

fn now_ns() -> i128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i128)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn old(path: &Path) {
        let t = filetime::FileTime::from_unix_time(1_600_000_000, 0);
        filetime::set_file_mtime(path, t).unwrap();
    }

    #[test]
    fn folder_hash_tracks_content_not_mtime() {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        std::fs::create_dir_all(data.join("a/b/c")).unwrap();
        for (p, c) in [("x.txt", "1"), ("a/y.txt", "2"), ("a/b/c/deep.txt", "3")] {
            std::fs::write(data.join(p), c).unwrap();
            old(&data.join(p));
        }
        let cache = StatCache::new(tmp.path().join("stat"));
        let none = |_: usize, _: usize| {};
        let first = cache.hash_path(&data, &none).unwrap();
        assert_eq!(first.rehashed, 3);
        let again = cache.hash_path(&data, &none).unwrap();
        assert_eq!(again.hash, first.hash);
        assert_eq!(
            again.rehashed, 0,
            "unchanged files must come from the stat cache"
        );

        // mtime only: rehashed once, same hash.
        filetime::set_file_mtime(
            data.join("a/y.txt"),
            filetime::FileTime::from_unix_time(1_600_000_100, 0),
        )
        .unwrap();
        let touched = cache.hash_path(&data, &none).unwrap();
        assert_eq!(touched.rehashed, 1);
        assert_eq!(touched.hash, first.hash);

        // One byte deep inside, same size, same mtime as before: the inode/size/mtime
        // triple is what we trust, so give it a new mtime like any editor would.
        std::fs::write(data.join("a/b/c/deep.txt"), "4").unwrap();
        old(&data.join("a/b/c/deep.txt"));
        filetime::set_file_mtime(
            data.join("a/b/c/deep.txt"),
            filetime::FileTime::from_unix_time(1_600_000_200, 0),
        )
        .unwrap();
        let changed = cache.hash_path(&data, &none).unwrap();
        assert_ne!(changed.hash, first.hash);

        // Renaming a file changes the folder hash even though no content changed.
        std::fs::rename(data.join("x.txt"), data.join("z.txt")).unwrap();
        let renamed = cache.hash_path(&data, &none).unwrap();
        assert_ne!(renamed.hash, changed.hash);
    }

    #[test]
    fn recently_modified_files_are_always_rehashed() {
        let tmp = tempfile::tempdir().unwrap();
        let f = tmp.path().join("f");
        std::fs::write(&f, "x").unwrap();
        let cache = StatCache::new(tmp.path().join("stat"));
        let none = |_: usize, _: usize| {};
        cache.hash_path(&f, &none).unwrap();
        assert_eq!(cache.hash_path(&f, &none).unwrap().rehashed, 1);
    }
}

#[cfg(test)]
mod walk_tests {
    use super::*;

    #[test]
    fn links_are_followed_and_loops_end() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        std::fs::write(root.join("a/b/f.txt"), "x").unwrap();
        std::fs::create_dir_all(tmp.path().join("elsewhere")).unwrap();
        std::fs::write(tmp.path().join("elsewhere/g.txt"), "y").unwrap();
        std::os::unix::fs::symlink(tmp.path().join("elsewhere"), root.join("linked")).unwrap();
        std::os::unix::fs::symlink(&root, root.join("a/back")).unwrap();
        let rels: Vec<String> = list_folder(&root)
            .unwrap()
            .into_iter()
            .map(|s| s.rel)
            .collect();
        assert_eq!(rels, ["a/b/f.txt", "linked/g.txt"]);
    }
}
