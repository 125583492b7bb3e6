//! The `from:` key of a `dataset` stage and the entry point that imports it.

use std::path::{Path, PathBuf};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{Dataset, DatasetError, csvfile, folder, idx, synthetic};

/// Where a dataset comes from: the `from:` key of a `dataset` stage. Externally tagged,
/// e.g. YAML `from: { folder: { path: photos, recursive: true } }`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
#[schemars(deny_unknown_fields)]
pub enum Source {
    /// A folder of PNG/JPEG images, labelled by subfolder.
    Folder(FolderSource),
    /// MNIST-style IDX files (raw or gzip-compressed).
    Idx(IdxSource),
    /// A CSV table with one image per row (Kaggle MNIST style: label column + pixel columns).
    Csv(CsvSource),
    /// A folder of images that each hold A (left half) and B (right half) side by side,
    /// as in the pix2pix datasets.
    Paired(PairedSource),
    /// Two folders of images from two domains, `trainA/` and `trainB/`, as in the CycleGAN
    /// datasets.
    Unpaired(UnpairedSource),
    /// Built-in generated images of shapes on textured backgrounds; needs no files.
    Synthetic(SyntheticSource),
}

/// Where a folder import takes its labels from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum FolderLabels {
    /// The first subfolder under the root names the class (`cats/1.png` is class `cats`);
    /// images directly in the root make an unlabelled dataset.
    #[default]
    Subfolders,
    /// No labels.
    None,
}

/// The channel count to convert every image to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Channels {
    /// One channel (luma, ITU-R BT.601).
    Gray,
    /// Three channels; gray images are replicated, alpha is dropped.
    Rgb,
}

impl Channels {
    pub fn count(self) -> u8 {
        match self {
            Channels::Gray => 1,
            Channels::Rgb => 3,
        }
    }
}

fn default_true() -> bool {
    true
}

fn default_split() -> String {
    "train".to_string()
}

/// A folder of PNG/JPEG images (extensions .png, .jpg, .jpeg in any case; other files and
/// names starting with '.' are ignored), read in sorted path order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct FolderSource {
    /// The folder, relative to the pipeline file.
    pub path: PathBuf,
    /// Read subfolders too. Default: true.
    #[serde(default = "default_true")]
    pub recursive: bool,
    /// Where labels come from: `subfolders` (default) or `none`.
    #[serde(default)]
    pub labels: FolderLabels,
    /// Convert to `gray` or `rgb`. Default: gray when every image is gray, else rgb.
    #[serde(default)]
    pub channels: Option<Channels>,
}

/// MNIST-style IDX files: images (magic 0x00000803) and optionally labels (0x00000801).
/// Gzip-compressed files are recognised by their content, whatever their name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct IdxSource {
    /// The image file (e.g. train-images-idx3-ubyte.gz), relative to the pipeline file.
    pub images: PathBuf,
    /// The label file (e.g. train-labels-idx1-ubyte.gz). Default: none (no labels).
    #[serde(default)]
    pub labels: Option<PathBuf>,
}

/// A CSV table with a header row and one gray image per row: a label column and one
/// column per pixel (values 0 to 255, row-major).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct CsvSource {
    /// The CSV file, relative to the pipeline file.
    pub path: PathBuf,
    /// The label column. Default: `label`, and when the file has no such column (like
    /// Kaggle's test.csv) the images are imported without labels. A column named here
    /// explicitly must exist.
    #[serde(default)]
    pub label_column: Option<String>,
    /// Image width. Default: the square root of the number of pixel columns.
    #[serde(default)]
    pub width: Option<u32>,
    /// Image height. Default: the number of pixel columns divided by the width.
    #[serde(default)]
    pub height: Option<u32>,
}

/// A folder of images that each hold A (left half) and B (right half) side by side.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct PairedSource {
    /// The folder, relative to the pipeline file.
    pub path: PathBuf,
    /// Read subfolders too. Default: true.
    #[serde(default = "default_true")]
    pub recursive: bool,
    /// Convert to `gray` or `rgb`. Default: gray when every image is gray, else rgb.
    #[serde(default)]
    pub channels: Option<Channels>,
}

/// A folder holding `{split}A/` and `{split}B/`, one image domain each.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct UnpairedSource {
    /// The folder that holds `trainA/` and `trainB/`, relative to the pipeline file.
    pub path: PathBuf,
    /// Which split to read: `train` (default) reads `trainA/` and `trainB/`, `test` reads
    /// `testA/` and `testB/`.
    #[serde(default = "default_split")]
    pub split: String,
    /// Convert to `gray` or `rgb`. Default: gray when every image of both domains is
    /// gray, else rgb.
    #[serde(default)]
    pub channels: Option<Channels>,
}

fn default_count() -> usize {
    256
}
fn default_size() -> u32 {
    64
}
fn default_channels() -> u8 {
    3
}

/// Generated images: one shape (circle, square, triangle or cross) on a textured
/// background. The same parameters always give the same bytes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct SyntheticSource {
    /// Number of images (per domain for `unpaired`). Default: 256.
    #[serde(default = "default_count")]
    pub count: usize,
    /// Width and height in pixels, at least 8. Default: 64.
    #[serde(default = "default_size")]
    pub size: u32,
    /// 1 (gray) or 3 (RGB). Default: 3.
    #[serde(default = "default_channels")]
    pub channels: u8,
    /// `single` (default): labelled images. `paired`: flat label maps (a) and the matching
    /// textured images (b). `unpaired`: two domains with identical backgrounds and
    /// differently styled shapes, plus foreground masks. `digits`: labelled digits 0–9.
    #[serde(default)]
    pub variant: SyntheticVariant,
    /// Random seed. Default: 0.
    #[serde(default)]
    pub seed: u64,
}

impl Default for SyntheticSource {
    fn default() -> Self {
        SyntheticSource {
            count: default_count(),
            size: default_size(),
            channels: default_channels(),
            variant: SyntheticVariant::default(),
            seed: 0,
        }
    }
}

/// Which kind of synthetic dataset to generate.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SyntheticVariant {
    /// Layout `single`, labelled by shape.
    #[default]
    Single,
    /// Layout `paired`: `a` is a flat label map, `b` the textured image of the same scene.
    Paired,
    /// Layout `unpaired`: parts `a`, `b`, `mask_a`, `mask_b`.
    Unpaired,
    /// Layout `single`: handwriting-like digits 0–9, light strokes on black (MNIST's
    /// look), labelled by digit; use `size: 28, channels: 1` for MNIST's shape.
    Digits,
}

/// What to do with an image that cannot be read, is corrupt, or has a different size
/// from the first one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OnError {
    /// Stop the import with an error naming the file (default).
    #[default]
    Fail,
    /// Leave the file out and list it in the import report.
    Skip,
}

/// What an import read and what it left out.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ImportReport {
    /// Files opened (images, or the IDX/CSV files).
    pub files_read: usize,
    /// Files (or CSV rows, named by the CSV file) left out with `on_error: skip`, with the
    /// reason.
    pub skipped: Vec<(PathBuf, String)>,
}

/// Relative paths are taken against `base_dir` and the result made absolute (without
/// touching the file system), so error messages name the full path.
pub(crate) fn resolve(base_dir: &Path, path: &Path) -> PathBuf {
    let joined = base_dir.join(path);
    std::path::absolute(&joined).unwrap_or(joined)
}

/// Imports `source`. Relative paths in `source` are resolved against `base_dir`.
/// `progress` gets its length set and is advanced per file (or per image).
pub fn import(
    source: &Source,
    base_dir: &Path,
    on_error: OnError,
    progress: &indicatif::ProgressBar,
) -> Result<(Dataset, ImportReport), DatasetError> {
    let (mut dataset, report) = match source {
        Source::Folder(s) => folder::import_folder(s, base_dir, on_error, progress)?,
        Source::Idx(s) => idx::import_idx(s, base_dir, progress)?,
        Source::Csv(s) => csvfile::import_csv(s, base_dir, on_error, progress)?,
        Source::Paired(s) => folder::import_paired(s, base_dir, on_error, progress)?,
        Source::Unpaired(s) => folder::import_unpaired(s, base_dir, on_error, progress)?,
        Source::Synthetic(s) => (synthetic::generate(s, progress)?, ImportReport::default()),
    };
    dataset
        .meta
        .insert("source".to_string(), source.kind().to_string());
    // The path as the user wrote it, not as resolved: the dataset's bytes (and so the
    // cache keys downstream) must not change when the project folder moves.
    for (key, path) in source.written_paths() {
        dataset
            .meta
            .insert(key.to_string(), path.to_string_lossy().into_owned());
    }
    for (path, reason) in &report.skipped {
        tracing::warn!(path = %path.display(), "skipped: {reason}");
    }
    tracing::info!(
        source = source.kind(),
        layout = dataset.layout.as_str(),
        images = dataset.len(),
        skipped = report.skipped.len(),
        "imported dataset"
    );
    Ok((dataset, report))
}

/// The files or folders on disk that `source` reads (resolved against `base_dir`), so that
/// the caller can hash them. Empty for synthetic.
pub fn source_paths(source: &Source, base_dir: &Path) -> Vec<PathBuf> {
    match source {
        Source::Unpaired(s) => {
            let root = resolve(base_dir, &s.path);
            folder::domain_dirs(&root, &s.split).into()
        }
        _ => source
            .written_paths()
            .into_iter()
            .map(|(_, p)| resolve(base_dir, p))
            .collect(),
    }
}

impl Source {
    /// The name of the source kind, as written in YAML.
    pub fn kind(&self) -> &'static str {
        match self {
            Source::Folder(_) => "folder",
            Source::Idx(_) => "idx",
            Source::Csv(_) => "csv",
            Source::Paired(_) => "paired",
            Source::Unpaired(_) => "unpaired",
            Source::Synthetic(_) => "synthetic",
        }
    }

    fn written_paths(&self) -> Vec<(&'static str, &Path)> {
        match self {
            Source::Folder(s) => vec![("path", &s.path)],
            Source::Idx(s) => {
                let mut v = vec![("images", s.images.as_path())];
                if let Some(l) = &s.labels {
                    v.push(("labels", l.as_path()));
                }
                v
            }
            Source::Csv(s) => vec![("path", &s.path)],
            Source::Paired(s) => vec![("path", &s.path)],
            Source::Unpaired(s) => vec![("path", &s.path)],
            Source::Synthetic(_) => Vec::new(),
        }
    }
}
