use std::path::{Path, PathBuf};

use crate::{ImportReport, OnError};

/// Everything that can go wrong while importing, saving or loading a dataset. Every
/// message starts with the file or folder it is about, so that a user can act on it
/// without a backtrace.
#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: cannot decode image: {reason}")]
    Decode { path: PathBuf, reason: String },
    #[error(
        "{path}: image is {width}x{height} but earlier images are \
         {expected_width}x{expected_height} (first: {first})"
    )]
    MixedSizes {
        path: PathBuf,
        width: u32,
        height: u32,
        expected_width: u32,
        expected_height: u32,
        first: PathBuf,
    },
    #[error("{path}: no PNG or JPEG images found")]
    NoImages { path: PathBuf },
    #[error("{path}: none of the {count} images could be read (see the skipped files)")]
    AllSkipped { path: PathBuf, count: usize },
    #[error(
        "{path}: images lie both directly in this folder (e.g. {loose}) and in subfolders \
         (e.g. {nested}); with `labels: subfolders` every image must be in a class \
         subfolder (set `labels: none` to import them without labels)"
    )]
    MixedLabelLayout {
        path: PathBuf,
        loose: PathBuf,
        nested: PathBuf,
    },
    #[error(
        "{path}: image width {width} is odd; a paired image holds A (left) and B (right) \
         side by side, so its width must be even"
    )]
    OddWidth { path: PathBuf, width: u32 },
    #[error(
        "{path}: folder not found; an unpaired dataset needs the folders `{split}A` and \
         `{split}B` side by side"
    )]
    MissingDomain { path: PathBuf, split: String },
    #[error("{path}: not a valid IDX file: {reason}")]
    Idx { path: PathBuf, reason: String },
    #[error("{path}: row {row} (line {line}), column '{column}': {reason}")]
    CsvValue {
        path: PathBuf,
        row: u64,
        line: u64,
        column: String,
        reason: String,
    },
    #[error("{path}: {reason}")]
    Csv { path: PathBuf, reason: String },
    #[error("{path}: not a valid gantry dataset: {reason}")]
    BadDataset { path: PathBuf, reason: String },
    #[error("invalid synthetic dataset: {reason}")]
    Synthetic { reason: String },
}

impl DatasetError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        DatasetError::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn bad_dataset(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        DatasetError::BadDataset {
            path: path.into(),
            reason: reason.into(),
        }
    }
}

/// Records `err` as skipped (without the path prefix it already starts with) or returns
/// it, depending on `on_error`.
pub(crate) fn skip_or_fail(
    path: &Path,
    err: DatasetError,
    on_error: OnError,
    report: &mut ImportReport,
) -> Result<(), DatasetError> {
    match on_error {
        OnError::Fail => Err(err),
        OnError::Skip => {
            let msg = err.to_string();
            let prefix = format!("{}: ", path.display());
            let reason = msg.strip_prefix(&prefix).unwrap_or(&msg).to_string();
            report.skipped.push((path.to_path_buf(), reason));
            Ok(())
        }
    }
}
