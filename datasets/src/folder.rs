//! Image folders: plain (optionally labelled by subfolder), paired A|B, unpaired A/B.
//!
//! Files are listed and sorted first, decoded in parallel, then checked in sorted order,
//! so that which file is reported (or which size is the reference) never depends on
//! thread timing.

use std::collections::BTreeMap;
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use image::ColorType;
use rayon::prelude::*;

use crate::error::skip_or_fail;
use crate::imageset::{gray_to_rgb, rgb_to_gray};
use crate::source::{FolderLabels, FolderSource, PairedSource, UnpairedSource, resolve};
use crate::{Channels, Dataset, DatasetError, ImageSet, ImportReport, Layout, OnError};

/// One decoded image in its native channel count: 1 when the file is gray, else 3.
pub(crate) struct Decoded {
    width: u32,
    height: u32,
    gray: bool,
    pixels: Vec<u8>,
}

struct Listed {
    path: PathBuf,
    rel: PathBuf,
}

fn is_image(path: &Path) -> bool {
    path.extension().and_then(|e| e.to_str()).is_some_and(|e| {
        e.eq_ignore_ascii_case("png")
            || e.eq_ignore_ascii_case("jpg")
            || e.eq_ignore_ascii_case("jpeg")
    })
}

fn check_dir(root: &Path) -> Result<(), DatasetError> {
    match std::fs::metadata(root) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(DatasetError::io(
            root,
            std::io::Error::other("not a folder"),
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(DatasetError::io(
            root,
            std::io::Error::new(e.kind(), "folder not found"),
        )),
        Err(e) => Err(DatasetError::io(root, e)),
    }
}

/// The image files under `root`, sorted by relative path bytes.
fn list_images(
    root: &Path,
    recursive: bool,
    on_error: OnError,
    report: &mut ImportReport,
) -> Result<Vec<Listed>, DatasetError> {
    check_dir(root)?;
    let walker = walkdir::WalkDir::new(root)
        .follow_links(true)
        .max_depth(if recursive { usize::MAX } else { 1 })
        // Hidden entries are never data: macOS `._x.png` resource forks would otherwise
        // fail as corrupt images.
        .into_iter()
        .filter_entry(|e| e.depth() == 0 || !e.file_name().to_string_lossy().starts_with('.'));
    let mut files = Vec::new();
    for entry in walker {
        let entry = match entry {
            Ok(e) => e,
            Err(e) => {
                let path = e.path().unwrap_or(root).to_path_buf();
                let err = DatasetError::io(&path, e.into());
                skip_or_fail(&path, err, on_error, report)?;
                continue;
            }
        };
        if !entry.file_type().is_file() || !is_image(entry.path()) {
            continue;
        }
        let path = entry.into_path();
        let rel = path.strip_prefix(root).unwrap_or(&path).to_path_buf();
        files.push(Listed { path, rel });
    }
    files.sort_by(|a, b| {
        a.rel
            .as_os_str()
            .as_encoded_bytes()
            .cmp(b.rel.as_os_str().as_encoded_bytes())
    });
    Ok(files)
}

fn decode_image(path: &Path) -> Result<Decoded, DatasetError> {
    let bytes = std::fs::read(path).map_err(|e| DatasetError::io(path, e))?;
    let decode_err = |e: &dyn std::fmt::Display| DatasetError::Decode {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    // Guessing from the content lets a JPEG saved as .png still load.
    let img = image::ImageReader::new(Cursor::new(&bytes))
        .with_guessed_format()
        .map_err(|e| decode_err(&e))?
        .decode()
        .map_err(|e| decode_err(&e))?;
    let gray = matches!(
        img.color(),
        ColorType::L8 | ColorType::La8 | ColorType::L16 | ColorType::La16
    );
    let (width, height) = (img.width(), img.height());
    let pixels = if gray {
        img.into_luma8().into_raw()
    } else {
        img.into_rgb8().into_raw()
    };
    Ok(Decoded {
        width,
        height,
        gray,
        pixels,
    })
}

/// Decodes `files` in parallel, in order. With `Fail`, files after the first failure are
/// not decoded (their slot is `None`), since the import stops there anyway.
fn decode_all(
    files: &[PathBuf],
    on_error: OnError,
    progress: &indicatif::ProgressBar,
    check: impl Fn(&Path, &Decoded) -> Result<(), DatasetError> + Sync,
) -> Vec<Option<Result<Decoded, DatasetError>>> {
    progress.set_length(files.len() as u64);
    let first_failure = AtomicUsize::new(usize::MAX);
    files
        .par_iter()
        .enumerate()
        .map(|(i, path)| {
            if on_error == OnError::Fail && i > first_failure.load(Ordering::Relaxed) {
                progress.inc(1);
                return None;
            }
            let result = decode_image(path).and_then(|d| check(path, &d).map(|()| d));
            if result.is_err() {
                first_failure.fetch_min(i, Ordering::Relaxed);
            }
            progress.inc(1);
            Some(result)
        })
        .collect()
}

struct Reference {
    width: u32,
    height: u32,
    path: PathBuf,
}

/// Walks decode results in file order, applying `on_error` and the same-size rule (the
/// first decoded image sets the size). Returns the kept images with their file index.
fn keep_in_order(
    files: &[PathBuf],
    results: Vec<Option<Result<Decoded, DatasetError>>>,
    on_error: OnError,
    report: &mut ImportReport,
) -> Result<Vec<(usize, Decoded)>, DatasetError> {
    let mut reference: Option<Reference> = None;
    let mut kept = Vec::with_capacity(results.len());
    for (i, (path, result)) in files.iter().zip(results).enumerate() {
        let decoded = match result {
            // Only reachable after an earlier failure under `Fail`, which returned already.
            None => continue,
            Some(Ok(d)) => d,
            Some(Err(e)) => {
                skip_or_fail(path, e, on_error, report)?;
                continue;
            }
        };
        match &reference {
            None => {
                reference = Some(Reference {
                    width: decoded.width,
                    height: decoded.height,
                    path: path.clone(),
                })
            }
            Some(r) if (r.width, r.height) != (decoded.width, decoded.height) => {
                let err = DatasetError::MixedSizes {
                    path: path.clone(),
                    width: decoded.width,
                    height: decoded.height,
                    expected_width: r.width,
                    expected_height: r.height,
                    first: r.path.clone(),
                };
                skip_or_fail(path, err, on_error, report)?;
                continue;
            }
            Some(_) => {}
        }
        kept.push((i, decoded));
    }
    Ok(kept)
}

fn target_channels<'a>(
    wanted: Option<Channels>,
    mut images: impl Iterator<Item = &'a Decoded>,
) -> u8 {
    match wanted {
        Some(c) => c.count(),
        None if images.all(|d| d.gray) => 1,
        None => 3,
    }
}

/// Converts `images` (all of one size) into an [`ImageSet`] of `channels` channels,
/// freeing each decoded image as soon as it is copied.
fn to_image_set(images: impl ExactSizeIterator<Item = Decoded>, channels: u8) -> ImageSet {
    let mut set: Option<ImageSet> = None;
    let n = images.len();
    for d in images {
        let set = set.get_or_insert_with(|| {
            let mut s = ImageSet::new(d.width, d.height, channels);
            s.pixels.reserve_exact(n * s.image_len());
            s
        });
        match (d.gray, channels) {
            (true, 3) => set.push(&gray_to_rgb(&d.pixels)),
            (false, 1) => set.push(&rgb_to_gray(&d.pixels)),
            _ => set.push(&d.pixels),
        }
    }
    set.unwrap_or_else(|| ImageSet::new(1, 1, channels))
}

pub(crate) fn import_folder(
    src: &FolderSource,
    base_dir: &Path,
    on_error: OnError,
    progress: &indicatif::ProgressBar,
) -> Result<(Dataset, ImportReport), DatasetError> {
    let root = resolve(base_dir, &src.path);
    let mut report = ImportReport::default();
    let listed = list_images(&root, src.recursive, on_error, &mut report)?;
    if listed.is_empty() {
        return Err(DatasetError::NoImages { path: root });
    }
    let labelled = src.labels == FolderLabels::Subfolders && subfolder_labels(&root, &listed)?;
    let files: Vec<PathBuf> = listed.iter().map(|l| l.path.clone()).collect();
    report.files_read = files.len();
    let results = decode_all(&files, on_error, progress, |_, _| Ok(()));
    let kept = keep_in_order(&files, results, on_error, &mut report)?;
    if kept.is_empty() {
        return Err(DatasetError::AllSkipped {
            path: root,
            count: files.len(),
        });
    }

    let (labels, classes) = if labelled {
        let class_of = |i: usize| {
            listed[i]
                .rel
                .components()
                .next()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .unwrap_or_default()
        };
        let names: Vec<String> = kept.iter().map(|(i, _)| class_of(*i)).collect();
        let mut classes = names.clone();
        classes.sort_unstable();
        classes.dedup();
        // Every name is in `classes`, so the search always hits.
        let labels = names
            .iter()
            .map(|n| classes.binary_search(n).map_or(0, |i| i as u32))
            .collect();
        (Some(labels), classes)
    } else {
        (None, Vec::new())
    };

    let channels = target_channels(src.channels, kept.iter().map(|(_, d)| d));
    let images = to_image_set(kept.into_iter().map(|(_, d)| d), channels);
    let mut dataset = Dataset::single(images);
    dataset.labels = labels;
    dataset.classes = classes;
    Ok((dataset, report))
}

/// Whether every image lies in a subfolder (labels) or none does (no labels); a mix is an
/// error because silently dropping the labels would surprise whoever laid out the classes.
fn subfolder_labels(root: &Path, listed: &[Listed]) -> Result<bool, DatasetError> {
    let nested = |l: &&Listed| l.rel.components().count() > 1;
    let first_nested = listed.iter().find(nested);
    let first_loose = listed.iter().find(|l| !nested(l));
    match (first_nested, first_loose) {
        (Some(n), Some(l)) => Err(DatasetError::MixedLabelLayout {
            path: root.to_path_buf(),
            loose: l.path.clone(),
            nested: n.path.clone(),
        }),
        (Some(_), None) => Ok(true),
        _ => Ok(false),
    }
}

pub(crate) fn import_paired(
    src: &PairedSource,
    base_dir: &Path,
    on_error: OnError,
    progress: &indicatif::ProgressBar,
) -> Result<(Dataset, ImportReport), DatasetError> {
    let root = resolve(base_dir, &src.path);
    let mut report = ImportReport::default();
    let listed = list_images(&root, src.recursive, on_error, &mut report)?;
    if listed.is_empty() {
        return Err(DatasetError::NoImages { path: root });
    }
    let files: Vec<PathBuf> = listed.into_iter().map(|l| l.path).collect();
    report.files_read = files.len();
    let results = decode_all(&files, on_error, progress, |path, d| {
        if d.width % 2 == 1 {
            return Err(DatasetError::OddWidth {
                path: path.to_path_buf(),
                width: d.width,
            });
        }
        Ok(())
    });
    let kept = keep_in_order(&files, results, on_error, &mut report)?;
    if kept.is_empty() {
        return Err(DatasetError::AllSkipped {
            path: root,
            count: files.len(),
        });
    }
    let channels = target_channels(src.channels, kept.iter().map(|(_, d)| d));
    let (a, b): (Vec<Decoded>, Vec<Decoded>) = kept.into_iter().map(|(_, d)| split(d)).unzip();
    let dataset = Dataset {
        layout: Layout::Paired,
        parts: BTreeMap::from([
            ("a".to_string(), to_image_set(a.into_iter(), channels)),
            ("b".to_string(), to_image_set(b.into_iter(), channels)),
        ]),
        labels: None,
        classes: Vec::new(),
        meta: BTreeMap::new(),
    };
    Ok((dataset, report))
}

/// Splits a side-by-side image at half its (even) width into left and right.
fn split(d: Decoded) -> (Decoded, Decoded) {
    let c = if d.gray { 1 } else { 3 };
    let half = d.width as usize / 2;
    let row = d.width as usize * c;
    let mut left = Vec::with_capacity(d.pixels.len() / 2);
    let mut right = Vec::with_capacity(d.pixels.len() / 2);
    for r in d.pixels.chunks_exact(row) {
        left.extend_from_slice(&r[..half * c]);
        right.extend_from_slice(&r[half * c..]);
    }
    let part = |pixels| Decoded {
        width: half as u32,
        height: d.height,
        gray: d.gray,
        pixels,
    };
    (part(left), part(right))
}

/// `{root}/{split}A` and `{root}/{split}B`.
pub(crate) fn domain_dirs(root: &Path, split: &str) -> [PathBuf; 2] {
    [
        root.join(format!("{split}A")),
        root.join(format!("{split}B")),
    ]
}

pub(crate) fn import_unpaired(
    src: &UnpairedSource,
    base_dir: &Path,
    on_error: OnError,
    progress: &indicatif::ProgressBar,
) -> Result<(Dataset, ImportReport), DatasetError> {
    let root = resolve(base_dir, &src.path);
    check_dir(&root)?;
    let dirs = domain_dirs(&root, &src.split);
    for dir in &dirs {
        if !dir.is_dir() {
            return Err(DatasetError::MissingDomain {
                path: dir.clone(),
                split: src.split.clone(),
            });
        }
    }
    let mut report = ImportReport::default();
    let mut files = Vec::new();
    let mut domain_len = Vec::new();
    for dir in &dirs {
        let listed = list_images(dir, true, on_error, &mut report)?;
        if listed.is_empty() {
            return Err(DatasetError::NoImages { path: dir.clone() });
        }
        domain_len.push(listed.len());
        files.extend(listed.into_iter().map(|l| l.path));
    }
    report.files_read = files.len();
    // Both domains are decoded and size-checked as one list: a translator needs A and B
    // at one size, and the first image of A is the reference for both.
    let results = decode_all(&files, on_error, progress, |_, _| Ok(()));
    let kept = keep_in_order(&files, results, on_error, &mut report)?;
    let (a, b): (Vec<_>, Vec<_>) = kept.into_iter().partition(|(i, _)| *i < domain_len[0]);
    for (dir, images, count) in [(&dirs[0], &a, domain_len[0]), (&dirs[1], &b, domain_len[1])] {
        if images.is_empty() {
            return Err(DatasetError::AllSkipped {
                path: dir.clone(),
                count,
            });
        }
    }
    let channels = target_channels(src.channels, a.iter().chain(&b).map(|(_, d)| d));
    let dataset = Dataset {
        layout: Layout::Unpaired,
        parts: BTreeMap::from([
            (
                "a".to_string(),
                to_image_set(a.into_iter().map(|(_, d)| d), channels),
            ),
            (
                "b".to_string(),
                to_image_set(b.into_iter().map(|(_, d)| d), channels),
            ),
        ]),
        labels: None,
        classes: Vec::new(),
        meta: BTreeMap::from([("split".to_string(), src.split.clone())]),
    };
    Ok((dataset, report))
}
