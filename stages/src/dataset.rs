//! `dataset`: import images into the canonical dataset artifact.
//!
//! ```yaml
//! digits:
//!   kind: dataset
//!   from: { idx: { images: mnist/train-images-idx3-ubyte.gz, labels: mnist/train-labels-idx1-ubyte.gz } }
//! photos:
//!   kind: dataset
//!   from: { folder: { path: photos/ } }   # labels from subfolder names
//!   on_error: skip                        # skip unreadable or odd-sized images, and list them
//! shapes:
//!   kind: dataset
//!   from: { synthetic: { count: 256, size: 64, channels: 3 } }
//! ```
//!
//! Writes `dataset.safetensors` (u8 NHWC per part, labels, metadata), `summary.json`,
//! `samples.png`, and `skipped.json` when `on_error: skip` skipped anything.

use gantry_datasets::{OnError, Source};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{ArtifactType, Checked, InputSlot, ParamsError, StageContext, StageError, StageKind};

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct DatasetParams {
    /// Where the images come from: `folder`, `idx`, `csv`, `paired`, `unpaired` or
    /// `synthetic` (built in, needs no files).
    pub from: Source,
    /// What to do with an unreadable, truncated or odd-sized image: `fail` (default)
    /// stops with an error naming the file; `skip` leaves it out and lists it in
    /// `skipped.json` and the log.
    #[serde(default)]
    pub on_error: OnError,
}

pub struct DatasetKind;

impl StageKind for DatasetKind {
    fn name(&self) -> &'static str {
        "dataset"
    }
    fn version(&self) -> u32 {
        1
    }
    fn summary(&self) -> &'static str {
        "import images (folder, IDX, CSV, paired A|B, unpaired A/B) or generate synthetic ones"
    }
    fn inputs(&self) -> &'static [InputSlot] {
        &[]
    }
    fn output(&self) -> ArtifactType {
        ArtifactType::Dataset
    }
    fn params_schema(&self) -> schemars::Schema {
        schemars::schema_for!(DatasetParams)
    }
    fn check(
        &self,
        params: serde_json::Value,
        base_dir: &std::path::Path,
    ) -> Result<Checked, ParamsError> {
        let (p, canonical) = crate::params::from_value::<DatasetParams>(params)?;
        if let Source::Synthetic(syn) = &p.from {
            let at = |key: &'static str| ["from", "synthetic", key];
            if syn.channels != 1 && syn.channels != 3 {
                return Err(ParamsError::invalid(
                    &at("channels"),
                    format!("channels must be 1 (gray) or 3 (RGB), not {}", syn.channels),
                ));
            }
            if syn.size < 8 {
                return Err(ParamsError::invalid(
                    &at("size"),
                    format!("size must be at least 8, not {}", syn.size),
                ));
            }
            if syn.count == 0 {
                return Err(ParamsError::invalid(
                    &at("count"),
                    "count must be at least 1",
                ));
            }
        }
        Ok(Checked {
            canonical,
            files: gantry_datasets::source_paths(&p.from, base_dir),
        })
    }
    fn run(&self, ctx: &StageContext) -> Result<(), StageError> {
        let p: DatasetParams = ctx.params()?;
        let (dataset, report) =
            gantry_datasets::import(&p.from, &ctx.base_dir, p.on_error, &ctx.progress)?;
        ctx.check_cancelled()?;
        for (path, why) in &report.skipped {
            tracing::warn!("skipped {}: {why}", path.display());
        }
        if !report.skipped.is_empty() {
            let list: Vec<_> = report
                .skipped
                .iter()
                .map(|(p, why)| serde_json::json!({"file": p, "reason": why}))
                .collect();
            crate::write_json(&ctx.out_dir.join("skipped.json"), &serde_json::json!(list))?;
        }
        dataset.save(&ctx.out_dir.join(gantry_datasets::DATASET_FILE))?;
        crate::write_json(
            &ctx.out_dir.join("summary.json"),
            &crate::dataset_summary(&dataset),
        )?;
        if let Some(first) = dataset.parts.values().next() {
            crate::grid::save_grid(first, 64, &ctx.out_dir.join("samples.png"))?;
        }
        tracing::info!(
            "imported {} files ({} skipped)",
            report.files_read,
            report.skipped.len()
        );
        Ok(())
    }
}
