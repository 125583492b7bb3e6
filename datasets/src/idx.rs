//! IDX files, the format of MNIST and its relatives (Fashion-MNIST, KMNIST, EMNIST).
//!
//! A file is a big-endian header: two zero bytes, a type byte (0x08 = unsigned byte), the
//! number of dimensions, then one u32 per dimension, followed by the data.

use std::io::Read;
use std::path::Path;

use crate::source::{IdxSource, resolve};
use crate::{Dataset, DatasetError, ImageSet, ImportReport};

const TYPE_U8: u8 = 0x08;

fn idx_error(path: &Path, reason: impl Into<String>) -> DatasetError {
    DatasetError::Idx {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// The file's bytes, gunzipped when they start with the gzip magic (names lie: MNIST
/// mirrors serve both `.gz` files and already-extracted files with `.gz` names).
fn read_maybe_gzip(path: &Path) -> Result<Vec<u8>, DatasetError> {
    let raw = std::fs::read(path).map_err(|e| DatasetError::io(path, e))?;
    if !raw.starts_with(&[0x1f, 0x8b]) {
        return Ok(raw);
    }
    let mut out = Vec::with_capacity(raw.len() * 4);
    flate2::read::MultiGzDecoder::new(raw.as_slice())
        .read_to_end(&mut out)
        .map_err(|e| idx_error(path, format!("gzip data is corrupt or truncated: {e}")))?;
    Ok(out)
}

/// Parses the header; returns the dimensions and the data that follows, checked to hold
/// exactly the bytes the dimensions promise.
fn parse<'a>(
    path: &Path,
    bytes: &'a [u8],
    ndims: u8,
    what: &str,
) -> Result<(Vec<usize>, &'a [u8]), DatasetError> {
    let expected_magic = u32::from_be_bytes([0, 0, TYPE_U8, ndims]);
    let magic = match bytes.get(..4) {
        Some(m) => u32::from_be_bytes([m[0], m[1], m[2], m[3]]),
        None => {
            return Err(idx_error(
                path,
                format!("file of {} bytes is too short for a header", bytes.len()),
            ));
        }
    };
    if magic != expected_magic {
        return Err(idx_error(
            path,
            format!(
                "magic number 0x{magic:08x}, expected 0x{expected_magic:08x} ({what}: unsigned \
                 bytes, {ndims} dimension{})",
                if ndims == 1 { "" } else { "s" }
            ),
        ));
    }
    let header_len = 4 + 4 * ndims as usize;
    let Some(dim_bytes) = bytes.get(4..header_len) else {
        return Err(idx_error(
            path,
            format!(
                "truncated header: expected {header_len} bytes, found {}",
                bytes.len()
            ),
        ));
    };
    let dims: Vec<usize> = dim_bytes
        .chunks_exact(4)
        .map(|d| u32::from_be_bytes([d[0], d[1], d[2], d[3]]) as usize)
        .collect();
    let data_len = dims
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| idx_error(path, format!("dimensions {dims:?} are too large")))?;
    let expected = header_len.saturating_add(data_len);
    if bytes.len() < expected {
        return Err(idx_error(
            path,
            format!(
                "truncated: dimensions {dims:?} need {expected} bytes, found {}",
                bytes.len()
            ),
        ));
    }
    if bytes.len() > expected {
        return Err(idx_error(
            path,
            format!(
                "{} bytes after the data that dimensions {dims:?} describe",
                bytes.len() - expected
            ),
        ));
    }
    Ok((dims, &bytes[header_len..]))
}

/// The class names of digit-style labels: "0".."9", or up to the largest label when that
/// is larger (EMNIST letters go to 26), so that a subset missing a class still has the
/// class count of the full set.
pub(crate) fn numeric_classes(labels: &[u32]) -> Vec<String> {
    let max = labels.iter().copied().max().unwrap_or(0);
    (0..=max.max(9)).map(|c| c.to_string()).collect()
}

pub(crate) fn import_idx(
    src: &IdxSource,
    base_dir: &Path,
    progress: &indicatif::ProgressBar,
) -> Result<(Dataset, ImportReport), DatasetError> {
    let images_path = resolve(base_dir, &src.images);
    let labels_path = src.labels.as_ref().map(|l| resolve(base_dir, l));
    progress.set_length(1 + labels_path.is_some() as u64);

    let bytes = read_maybe_gzip(&images_path)?;
    let (dims, data) = parse(&images_path, &bytes, 3, "images")?;
    let (n, h, w) = (dims[0], dims[1], dims[2]);
    let (Ok(height), Ok(width)) = (u32::try_from(h), u32::try_from(w)) else {
        return Err(idx_error(&images_path, "image dimensions exceed u32"));
    };
    if n == 0 || height == 0 || width == 0 {
        return Err(idx_error(
            &images_path,
            format!("holds {n} images of {height}x{width}: nothing to import"),
        ));
    }
    let images = ImageSet {
        width,
        height,
        channels: 1,
        pixels: data.to_vec(),
    };
    drop(bytes);
    progress.inc(1);

    let mut dataset = Dataset::single(images);
    let mut report = ImportReport {
        files_read: 1,
        skipped: Vec::new(),
    };
    if let Some(labels_path) = labels_path {
        let bytes = read_maybe_gzip(&labels_path)?;
        let (dims, data) = parse(&labels_path, &bytes, 1, "labels")?;
        if dims[0] != n {
            return Err(idx_error(
                &labels_path,
                format!(
                    "holds {} labels but {} holds {n} images",
                    dims[0],
                    images_path.display()
                ),
            ));
        }
        let labels: Vec<u32> = data.iter().map(|&l| u32::from(l)).collect();
        dataset.classes = numeric_classes(&labels);
        dataset.labels = Some(labels);
        report.files_read += 1;
        progress.inc(1);
    }
    Ok((dataset, report))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trailing_bytes_and_short_headers_are_errors() {
        let path = Path::new("/x/labels");
        let ok = [0, 0, 8, 1, 0, 0, 0, 2, 5, 6];
        let (dims, data) = parse(path, &ok, 1, "labels").unwrap();
        assert_eq!((dims, data), (vec![2], &[5u8, 6][..]));
        let msg = parse(path, &[0, 0, 8, 1, 0, 0, 0, 2, 5, 6, 7], 1, "labels")
            .unwrap_err()
            .to_string();
        assert!(msg.contains("1 bytes after the data"), "{msg}");
        let msg = parse(path, &[0, 0, 8, 1, 0], 1, "labels")
            .unwrap_err()
            .to_string();
        assert!(msg.contains("truncated header"), "{msg}");
        let msg = parse(path, &[0, 0], 1, "labels").unwrap_err().to_string();
        assert_eq!(
            msg,
            "/x/labels: not a valid IDX file: file of 2 bytes is too short for a header"
        );
    }

    #[test]
    fn classes_are_digits_or_up_to_the_largest_label() {
        assert_eq!(numeric_classes(&[0, 3]).len(), 10);
        assert_eq!(numeric_classes(&[]).len(), 10);
        assert_eq!(
            numeric_classes(&[26]).last().map(String::as_str),
            Some("26")
        );
    }
}
