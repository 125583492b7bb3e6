use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use rayon::prelude::*;

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
        let root = abs.to_string_lossy();
        let store_path = self
            .dir
            .join(format!("{}.bin", Hash::of(root.as_bytes()).to_hex()));
        // Reading the previous stats overlaps the walk: on a no-op run over a big folder
        // the walk is all that should be left.
        let (listing, previous) = rayon::join(
            || {
                if meta.is_dir() {
                    list_folder(&abs)
                } else {
                    Ok(vec![seen(String::new(), &meta)])
                }
            },
            || {
                std::fs::read(&store_path)
                    .ok()
                    .and_then(|b| SavedStats::parse(b, &root))
            },
        );
        let listing = listing?;
        let path_of = |s: &Seen| {
            if s.rel.is_empty() {
                abs.clone()
            } else {
                abs.join(&s.rel)
            }
        };

        // Both lists are sorted by `rel`: a merge finds each file's previous entry.
        let mut cached: Vec<Option<[u8; 32]>> = vec![None; listing.len()];
        if let Some(prev) = &previous {
            let mut j = 0;
            for (s, slot) in listing.iter().zip(cached.iter_mut()) {
                let rel = s.rel.as_bytes();
                while j < prev.len() && prev.rel(j) < rel {
                    j += 1;
                }
                if j < prev.len() && prev.rel(j) == rel {
                    let e = prev.record(j);
                    if e.size == s.size && e.mtime_ns == s.mtime_ns && e.ino == s.ino {
                        *slot = Some(e.hash);
                    }
                }
            }
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
        let hashes: Vec<[u8; 32]> = cached.into_iter().map(Option::unwrap_or_default).collect();

        // One buffer hashed at once: the same bytes as feeding the hasher entry by entry,
        // but blake3 gets whole chunks to work on instead of 200,000 tiny updates.
        let mut tree = Vec::with_capacity(16 + listing.len() * 64);
        tree.extend_from_slice(if meta.is_dir() {
            b"gantry-tree-v1"
        } else {
            b"gantry-file-v1"
        });
        let mut bytes = 0u64;
        for (s, h) in listing.iter().zip(&hashes) {
            tree.extend_from_slice(&(s.rel.len() as u64).to_le_bytes());
            tree.extend_from_slice(s.rel.as_bytes());
            tree.extend_from_slice(h);
            bytes += s.size;
        }
        let hash: Hash = blake3::hash(&tree).into();
        if meta.is_dir() {
            self.save_tree(&hash, &listing, &hashes);
        }
        let unchanged = total == 0 && previous.is_some_and(|p| p.len() == listing.len());
        if !unchanged {
            let now = now_ns();
            let buf = SavedStats::encode(
                &root,
                listing
                    .iter()
                    .zip(&hashes)
                    .filter(|(s, _)| now - s.mtime_ns > RACY_WINDOW_NS),
            );
            // The stat cache is only a speed-up: failing to save it is not an error.
            if let Err(e) = write_atomic(&store_path, &buf) {
                tracing::debug!("stat cache not saved: {e}");
            }
        }
        Ok(PathHash {
            hash,
            files: listing.len(),
            bytes,
            rehashed: total,
        })
    }
}

/// The stats saved for one root, kept as the bytes read from disk. A flat layout rather
/// than serde: at 200,000 files, decoding one `String` per entry cost as much as the
/// merge it feeds. Layout: magic, root (u32 length + bytes), entry count (u32), names
/// (u32 length + bytes), then one fixed-size record per entry, sorted by name.
struct SavedStats {
    buf: Vec<u8>,
    names_at: usize,
    records_at: usize,
    count: usize,
}

struct SavedRecord {
    size: u64,
    mtime_ns: i128,
    ino: u64,
    hash: [u8; 32],
}

const STATS_MAGIC: &[u8; 16] = b"gantry-stats-v2\n";
/// name offset u32, name length u32, size u64, mtime_ns i128, inode u64, hash.
const RECORD_LEN: usize = 4 + 4 + 8 + 16 + 8 + 32;

impl SavedStats {
    fn encode<'a>(root: &str, entries: impl Iterator<Item = (&'a Seen, &'a [u8; 32])>) -> Vec<u8> {
        let entries: Vec<_> = entries.collect();
        let names_len: usize = entries.iter().map(|(s, _)| s.rel.len()).sum();
        let mut out = Vec::with_capacity(32 + root.len() + names_len + entries.len() * RECORD_LEN);
        out.extend_from_slice(STATS_MAGIC);
        out.extend_from_slice(&(root.len() as u32).to_le_bytes());
        out.extend_from_slice(root.as_bytes());
        out.extend_from_slice(&(entries.len() as u32).to_le_bytes());
        out.extend_from_slice(&(names_len as u32).to_le_bytes());
        for (s, _) in &entries {
            out.extend_from_slice(s.rel.as_bytes());
        }
        let mut offset = 0u32;
        for (s, h) in &entries {
            out.extend_from_slice(&offset.to_le_bytes());
            out.extend_from_slice(&(s.rel.len() as u32).to_le_bytes());
            out.extend_from_slice(&s.size.to_le_bytes());
            out.extend_from_slice(&s.mtime_ns.to_le_bytes());
            out.extend_from_slice(&s.ino.to_le_bytes());
            out.extend_from_slice(*h);
            offset += s.rel.len() as u32;
        }
        out
    }

    /// `None` for anything but a complete file of this root: a damaged or foreign stat
    /// file only costs a rehash.
    fn parse(buf: Vec<u8>, root: &str) -> Option<SavedStats> {
        let u32_at = |at: usize| -> Option<usize> {
            Some(u32::from_le_bytes(buf.get(at..at + 4)?.try_into().ok()?) as usize)
        };
        if buf.get(..16)? != STATS_MAGIC {
            return None;
        }
        let root_len = u32_at(16)?;
        if buf.get(20..20 + root_len)? != root.as_bytes() {
            return None;
        }
        let count = u32_at(20 + root_len)?;
        let names_len = u32_at(24 + root_len)?;
        let names_at = 28 + root_len;
        let records_at = names_at + names_len;
        if buf.len() != records_at + count * RECORD_LEN {
            return None;
        }
        let saved = SavedStats {
            buf,
            names_at,
            records_at,
            count,
        };
        let names_ok = (0..count).all(|i| {
            let (off, len) = saved.name_range(i);
            off + len <= names_len && std::str::from_utf8(saved.rel(i)).is_ok()
        });
        names_ok.then_some(saved)
    }

    fn len(&self) -> usize {
        self.count
    }

    fn name_range(&self, i: usize) -> (usize, usize) {
        let r = self.records_at + i * RECORD_LEN;
        let field = |at: usize| {
            u32::from_le_bytes([
                self.buf[at],
                self.buf[at + 1],
                self.buf[at + 2],
                self.buf[at + 3],
            ]) as usize
        };
        (field(r), field(r + 4))
    }

    fn rel(&self, i: usize) -> &[u8] {
        let (off, len) = self.name_range(i);
        &self.buf[self.names_at + off..self.names_at + off + len]
    }

    fn record(&self, i: usize) -> SavedRecord {
        let r = &self.buf[self.records_at + i * RECORD_LEN + 8..][..RECORD_LEN - 8];
        let mut hash = [0u8; 32];
        hash.copy_from_slice(&r[32..64]);
        SavedRecord {
            size: u64::from_le_bytes(r[0..8].try_into().unwrap_or_default()),
            mtime_ns: i128::from_le_bytes(r[8..24].try_into().unwrap_or_default()),
            ino: u64::from_le_bytes(r[24..32].try_into().unwrap_or_default()),
            hash,
        }
    }
}

impl StatCache {
    fn tree_path(&self, h: &Hash) -> PathBuf {
        self.dir.join("trees").join(format!("{}.bin", h.to_hex()))
    }

    /// Remember which files made up a folder with this hash, so that `status` can name
    /// the files that changed between two versions of it.
    fn save_tree(&self, h: &Hash, listing: &[Seen], hashes: &[[u8; 32]]) {
        let p = self.tree_path(h);
        if p.exists() {
            return;
        }
        let listing: Vec<(&str, [u8; 32])> = listing
            .iter()
            .zip(hashes)
            .map(|(s, h)| (s.rel.as_str(), *h))
            .collect();
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
    walk_dir(root, "", &[(meta.dev(), meta.ino())])
}

/// Orders a folder's children so that concatenating their listings is sorted by relative
/// path: every path below folder `d` starts with `d/`, so a folder sorts as its name
/// followed by '/'. Sorting each folder's few children replaces one sort of every path.
fn child_order(a: (&str, bool), b: (&str, bool)) -> std::cmp::Ordering {
    let (x, y) = (a.0.as_bytes(), b.0.as_bytes());
    let n = x.len().min(y.len());
    x[..n].cmp(&y[..n]).then_with(|| {
        // Names hold no '/', so past the common prefix one byte decides (or both end).
        let next = |name: &[u8], is_dir: bool| name.get(n).copied().or(is_dir.then_some(b'/'));
        next(x, a.1).cmp(&next(y, b.1))
    })
}

fn walk_dir(dir: &Path, rel: &str, ancestors: &[(u64, u64)]) -> Result<Vec<Seen>> {
    use std::os::unix::fs::MetadataExt;
    let rd = std::fs::read_dir(dir).map_err(|e| CacheError::io(dir, e))?;
    // (name, metadata, (device, inode)) of every child; folders are listed in parallel.
    let mut children: Vec<(String, std::fs::Metadata)> = Vec::new();
    for entry in rd {
        let entry = entry.map_err(|e| CacheError::io(dir, e))?;
        let ft = entry
            .file_type()
            .map_err(|e| CacheError::io(entry.path(), e))?;
        let meta = if ft.is_symlink() {
            std::fs::metadata(entry.path())
        } else {
            entry.metadata()
        }
        .map_err(|e| CacheError::io(entry.path(), e))?;
        if meta.is_dir() && ancestors.contains(&(meta.dev(), meta.ino())) {
            // A link back to an enclosing folder would never end.
            continue;
        }
        children.push((entry.file_name().to_string_lossy().into_owned(), meta));
    }
    children.sort_unstable_by(|a, b| child_order((&a.0, a.1.is_dir()), (&b.0, b.1.is_dir())));
    let child_rel = |name: &str| {
        let mut r = String::with_capacity(rel.len() + 1 + name.len());
        if !rel.is_empty() {
            r.push_str(rel);
            r.push('/');
        }
        r.push_str(name);
        r
    };
    let mut nested: Vec<Vec<Seen>> = children
        .par_iter()
        .filter(|(_, m)| m.is_dir())
        .map(|(name, m)| {
            let mut chain = ancestors.to_vec();
            chain.push((m.dev(), m.ino()));
            walk_dir(&dir.join(name), &child_rel(name), &chain)
        })
        .collect::<Result<_>>()?;
    let mut files = Vec::with_capacity(children.len() + nested.iter().map(Vec::len).sum::<usize>());
    let mut nested = nested.drain(..);
    for (name, meta) in &children {
        if meta.is_dir() {
            if let Some(mut below) = nested.next() {
                files.append(&mut below);
            }
        } else {
            files.push(seen(child_rel(name), meta));
        }
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

    #[test]
    fn listing_is_sorted_by_relative_path_without_a_global_sort() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        // Names where a folder and a file share a prefix and the next byte sorts on
        // either side of '/' (0x2f): '-' and '.' before it, '0' and 'a' after it.
        for p in [
            "a/x", "a-b", "a.txt", "a0", "ab/c/d", "ab/c.d", "ab/c-d/e", "ab/c0", "b", "a/-",
        ] {
            let f = root.join(p);
            std::fs::create_dir_all(f.parent().unwrap()).unwrap();
            std::fs::write(&f, p).unwrap();
        }
        let rels: Vec<String> = list_folder(&root)
            .unwrap()
            .into_iter()
            .map(|s| s.rel)
            .collect();
        let mut sorted = rels.clone();
        sorted.sort();
        assert_eq!(rels, sorted);
        assert_eq!(rels.len(), 10);
    }

    #[test]
    fn a_damaged_stat_file_costs_a_rehash_not_a_wrong_hash() {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        std::fs::create_dir_all(data.join("d")).unwrap();
        for p in ["f1", "d/f2"] {
            std::fs::write(data.join(p), p).unwrap();
            filetime::set_file_mtime(
                data.join(p),
                filetime::FileTime::from_unix_time(1_600_000_000, 0),
            )
            .unwrap();
        }
        let stat = tmp.path().join("stat");
        let cache = StatCache::new(&stat);
        let none = |_: usize, _: usize| {};
        let first = cache.hash_path(&data, &none).unwrap();
        let saved = std::fs::read_dir(&stat)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|e| e == "bin"))
            .unwrap();
        let mut bytes = std::fs::read(&saved).unwrap();
        for cut in [bytes.len() - 1, 40, 3] {
            std::fs::write(&saved, &bytes[..cut]).unwrap();
            let again = cache.hash_path(&data, &none).unwrap();
            assert_eq!(
                (again.hash, again.rehashed),
                (first.hash, 2),
                "cut at {cut}"
            );
        }
        // A name offset pointing outside the names: rejected, not a panic.
        bytes = std::fs::read(&saved).unwrap();
        let last = bytes.len() - RECORD_LEN;
        bytes[last..last + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        std::fs::write(&saved, &bytes).unwrap();
        let again = cache.hash_path(&data, &none).unwrap();
        assert_eq!((again.hash, again.rehashed), (first.hash, 2));
        assert_eq!(cache.hash_path(&data, &none).unwrap().rehashed, 0);
    }
}
