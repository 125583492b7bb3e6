//! gantry's datasets: importers for the formats GAN papers use, a built-in synthetic
//! generator, and the one canonical artifact every stage reads and writes.
//!
//! A [`Dataset`] is a few named [`ImageSet`]s (u8, NHWC, one size per set) in a
//! [`Layout`] — `single` (optionally labelled), `paired` (a[i] goes with b[i]) or
//! `unpaired` (two domains) — stored as one safetensors file that opens anywhere:
//!
//! ```no_run
//! use gantry_datasets::{import, OnError, Source, SyntheticSource, DATASET_FILE};
//! # fn main() -> Result<(), gantry_datasets::DatasetError> {
//! let source = Source::Synthetic(SyntheticSource { count: 16, ..Default::default() });
//! let progress = indicatif::ProgressBar::hidden();
//! let (dataset, _report) = import(&source, ".".as_ref(), OnError::Fail, &progress)?;
//! dataset.save(DATASET_FILE.as_ref())?;
//! // In Python: safetensors.numpy.load_file("dataset.safetensors")["images"].shape
//! //            == (16, 64, 64, 3)
//! # Ok(()) }
//! ```
//!
//! Sources ([`Source`]): image folders (labels from subfolders), IDX (MNIST family, raw
//! or gzip), CSV (label + pixel columns), paired A|B images (pix2pix), unpaired
//! `trainA/`/`trainB/` folders (CycleGAN), and `synthetic` shapes on textured
//! backgrounds, deterministic for a seed. Every error names the file and what is wrong;
//! with [`OnError::Skip`] bad images are left out and listed instead.
//!
//! This crate does not resize, augment or batch for training (stages do that), and
//! knows nothing about the cache or pipelines: [`source_paths`] tells the caller what to
//! hash.

mod csvfile;
mod dataset;
mod error;
mod folder;
mod idx;
mod imageset;
mod source;
mod synthetic;

pub use dataset::{DATASET_FILE, Dataset, DatasetReader, Layout, MASK_PREFIX, PartInfo};
pub use error::DatasetError;
pub use imageset::{ImageSet, pixel_buffer};
pub use source::{
    Channels, CsvSource, FolderLabels, FolderSource, IdxSource, ImportReport, OnError,
    PairedSource, Source, SyntheticSource, SyntheticVariant, UnpairedSource, import, source_paths,
};
pub use synthetic::SHAPE_CLASSES;
