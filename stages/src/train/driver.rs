//! The training loop every GAN stage shares: resume from the newest checkpoint, step with
//! seeded batches, log losses, stop on NaN/Inf, checkpoint every N steps, sample grids from
//! a fixed latent batch, and write the outputs (generated dataset, weights, loss log and
//! plots, report).

use std::path::Path;
use std::time::Instant;

use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{ElementConversion as _, Tensor};
use gantry_datasets::{Dataset, ImageSet};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::checkpoint::{Checkpoints, Loaded};
use super::data::{Batch, Batcher, Stream, latents};
use super::log::LossLog;
use super::plot::{Series, line_plot};
use crate::grid::save_grid;
use crate::{StageContext, StageError, write_file, write_json};

/// What one network update step of a GAN stage needs from the shared loop.
pub trait Gan<B: AutodiffBackend>: Sized {
    /// The numbers logged every step (losses, ratios, accuracies).
    fn columns(&self) -> Vec<&'static str>;
    /// One iteration at global step `step` (0-based) on `batch`: every D and G update the
    /// stage does per batch. Returns the values of [`Gan::columns`].
    fn step(&mut self, step: usize, batch: Batch<B>) -> Vec<f64>;
    fn latent_dim(&self) -> usize;
    /// Classes the generator is conditioned on (0: unconditional).
    fn classes(&self) -> usize {
        0
    }
    /// Images in [-1, 1] from latents `z` (and `labels` for a conditional generator).
    /// BatchNorm uses the statistics of the batch, as the DCGAN and PyTorch example code
    /// sample: the running averages lag far behind a generator that changes every step,
    /// and early samples from them are noise. Batches are fixed chunks of 64, so samples
    /// stay deterministic.
    fn generate(&self, z: Tensor<B::InnerBackend, 2>, labels: &[u32])
    -> Tensor<B::InnerBackend, 4>;
    /// Everything a checkpoint needs to continue bit-exactly (weights, optimizer states).
    fn save(&self) -> Result<Vec<(&'static str, Vec<u8>)>, StageError>;
    fn load(self, ck: &mut Loaded, device: &B::Device) -> Result<Self, StageError>;
    /// The generator's weights as a file other tools can open.
    fn export(&self, dir: &Path) -> Result<(), StageError>;
}

/// Params of every training stage that change what it writes, not what it trains: a run
/// that differs from an earlier one only in these continues from its checkpoints.
pub const EXTENDABLE: &[&str] = &[
    "epochs",
    "sample_every",
    "sample_steps",
    "samples",
    "grid",
    "checkpoint_every",
];

/// Range checks shared by the training stages.
pub fn check_common(
    batch_size: usize,
    latent_dim: usize,
    features: usize,
    samples: usize,
    grid: usize,
) -> Result<(), crate::ParamsError> {
    for (key, v) in [
        ("batch_size", batch_size),
        ("latent_dim", latent_dim),
        ("features", features),
        ("grid", grid),
        ("samples", samples),
    ] {
        if v == 0 {
            return Err(crate::ParamsError::invalid(&[key], "must be at least 1"));
        }
    }
    Ok(())
}

/// The `images` part of a single-layout dataset, square.
pub fn training_images(ds: &Dataset, stage: &str) -> Result<ImageSet, StageError> {
    let images = ds.parts.get("images").ok_or_else(|| {
        StageError::Failed(format!(
            "input `{stage}` is a {} dataset; training needs a single set of images",
            ds.layout.as_str()
        ))
    })?;
    if images.is_empty() {
        return Err(StageError::Failed(format!("input `{stage}` has no images")));
    }
    if images.width != images.height {
        return Err(StageError::Failed(format!(
            "input `{stage}` has {}x{} images; training needs square ones (downsample first)",
            images.width, images.height
        )));
    }
    Ok(images.clone())
}

/// Params every training stage has.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct Schedule {
    pub epochs: usize,
    pub checkpoint_every: usize,
    pub sample_every: usize,
    pub sample_steps: Vec<usize>,
    pub samples: usize,
    pub grid: usize,
}

/// The [`Schedule`] of a training stage's params struct, which holds the same six
/// fields at its top level (params structs cannot flatten: unknown keys are found with
/// `serde_ignored`, which does not see through `#[serde(flatten)]`).
macro_rules! schedule_of {
    ($p:expr) => {
        $crate::train::driver::Schedule {
            epochs: $p.epochs,
            checkpoint_every: $p.checkpoint_every,
            sample_every: $p.sample_every,
            sample_steps: $p.sample_steps.clone(),
            samples: $p.samples,
            grid: $p.grid,
        }
    };
}
pub(crate) use schedule_of;

/// What the loop hands back for the stage's own outputs.
pub struct Outcome<T> {
    pub gan: T,
    pub log: LossLog,
    pub steps: usize,
    pub steps_per_epoch: usize,
    pub resumed_from: Option<usize>,
    pub backend: String,
}

fn fail(msg: String) -> StageError {
    StageError::Failed(msg)
}

/// Generate `n` images from latent stream `stream` in batches (labels cycle through the
/// classes for a conditional generator).
pub fn generate_set<B: AutodiffBackend, G: Gan<B>>(
    gan: &G,
    seed: u64,
    stream: Stream,
    n: usize,
    device: &B::Device,
) -> Result<(ImageSet, Vec<u32>), StageError> {
    let dim = gan.latent_dim();
    let classes = gan.classes();
    let labels: Vec<u32> = (0..n)
        .map(|i| if classes > 0 { (i % classes) as u32 } else { 0 })
        .collect();
    let mut out: Option<ImageSet> = None;
    const CHUNK: usize = 64;
    for (ci, start) in (0..n).step_by(CHUNK).enumerate() {
        let m = CHUNK.min(n - start);
        let z = latents::<B::InnerBackend>(seed, stream, ci as u64, m, dim, device);
        let imgs = gan.generate(z, &labels[start..start + m]);
        let set = super::data::to_image_set(imgs).map_err(fail)?;
        match &mut out {
            None => out = Some(set),
            Some(o) => {
                for i in 0..set.len() {
                    o.push(set.image(i));
                }
            }
        }
    }
    Ok((out.unwrap_or_else(|| ImageSet::new(1, 1, 1)), labels))
}

fn write_grid<B: AutodiffBackend, G: Gan<B>>(
    gan: &G,
    seed: u64,
    grid: usize,
    path: &Path,
    device: &B::Device,
) -> Result<(), StageError> {
    let (set, _) = generate_set(gan, seed, Stream::Fixed, grid, device)?;
    // Written under a temporary name: grids live beside the checkpoints and a killed run
    // must not leave half a PNG there.
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".tmp-{}-{name}", std::process::id()));
    save_grid(&set, grid, &tmp)?;
    std::fs::rename(&tmp, path).map_err(|e| StageError::io(path, e))
}

/// Run the loop. `gan` is freshly initialised; it is replaced by the newest checkpoint at
/// or before the last step when there is one.
pub fn train<B: AutodiffBackend, G: Gan<B>>(
    ctx: &StageContext,
    schedule: &Schedule,
    batcher: &Batcher,
    mut gan: G,
    device: &B::Device,
    backend: String,
) -> Result<Outcome<G>, StageError> {
    let spe = batcher.steps_per_epoch();
    let total = schedule.epochs * spe;
    let ckpts = Checkpoints::new(ctx.checkpoint_dir.clone());
    let grids_dir = ctx.checkpoint_dir.join("samples");
    std::fs::create_dir_all(&grids_dir).map_err(|e| StageError::io(&grids_dir, e))?;
    let mut log = LossLog::new(&gan.columns());
    let mut start = 0;
    let mut resumed_from = None;
    if let Some(mut ck) = ckpts.newest_at_or_before(total) {
        let text = String::from_utf8(ck.take("losses.csv")?)
            .map_err(|_| fail("loss log in checkpoint is not UTF-8".into()))?;
        log = LossLog::from_csv(&text)?;
        log.truncate_to(ck.step);
        gan = gan.load(&mut ck, device)?;
        start = ck.step;
        resumed_from = Some(ck.step);
        tracing::info!(
            "resuming from checkpoint at step {} ({})",
            ck.step,
            ck.path.display()
        );
    }
    tracing::info!(
        "training on {backend}: {} epochs x {spe} steps (batch {}), from step {start}",
        schedule.epochs,
        batcher.batch_size()
    );

    let bar = &ctx.progress;
    bar.set_length(total as u64);
    bar.set_position(start as u64);
    let sample_every_steps = schedule.sample_every.max(1) * spe;
    let grid_at = |step: usize| {
        (schedule.sample_every > 0 && step.is_multiple_of(sample_every_steps))
            || schedule.sample_steps.contains(&step)
    };
    if start == 0 && schedule.sample_steps.contains(&0) {
        write_grid(
            &gan,
            ctx.seed,
            schedule.grid,
            &grids_dir.join(grid_name(0)),
            device,
        )?;
    }
    let began = Instant::now();
    let mut last_good = resumed_from;
    for step in start..total {
        ctx.check_cancelled()?;
        let epoch = step / spe;
        let batch = batcher.batch::<B>(step, device);
        let values = gan.step(step, batch);
        if let Some((name, v)) = log
            .columns
            .iter()
            .zip(&values)
            .find(|(_, v)| !v.is_finite())
        {
            let kept = match last_good {
                Some(s) => format!(
                    "the last good checkpoint (step {s}) is kept in {}",
                    ckpts.dir().display()
                ),
                None => "no checkpoint was written before it".to_string(),
            };
            return Err(fail(format!(
                "`{name}` became {v} at step {} (epoch {}); training stopped, {kept}. \
                 Lower the learning rate or check the data.",
                step + 1,
                epoch + 1
            )));
        }
        let done = step + 1;
        log.push(done, epoch + 1, values);
        bar.set_position(done as u64);
        if done % 10 == 0 || done == total {
            let last = log.rows.last().map(|r| &r.2);
            let shown: Vec<String> = log
                .columns
                .iter()
                .zip(last.into_iter().flatten())
                .take(3)
                .map(|(c, v)| format!("{c} {v:.4}"))
                .collect();
            bar.set_message(format!(
                "epoch {}/{} {}",
                epoch + 1,
                schedule.epochs,
                shown.join(" ")
            ));
        }
        if grid_at(done) {
            write_grid(
                &gan,
                ctx.seed,
                schedule.grid,
                &grids_dir.join(grid_name(done)),
                device,
            )?;
        }
        if schedule.checkpoint_every > 0 && done % schedule.checkpoint_every == 0 && done < total {
            save_checkpoint(&ckpts, &gan, &log, done, false)?;
            last_good = Some(done);
        }
    }
    if total > 0 && resumed_from != Some(total) {
        save_checkpoint(&ckpts, &gan, &log, total, true)?;
    }
    let trained = total - start;
    if trained > 0 {
        tracing::info!(
            "{trained} steps in {:.1} s ({:.1} ms/step)",
            began.elapsed().as_secs_f64(),
            began.elapsed().as_secs_f64() * 1e3 / trained as f64
        );
    }
    Ok(Outcome {
        gan,
        log,
        steps: total,
        steps_per_epoch: spe,
        resumed_from,
        backend,
    })
}

fn grid_name(step: usize) -> String {
    format!("step-{step:07}.png")
}

fn save_checkpoint<B: AutodiffBackend, G: Gan<B>>(
    ckpts: &Checkpoints,
    gan: &G,
    log: &LossLog,
    step: usize,
    is_final: bool,
) -> Result<(), StageError> {
    let mut files = gan.save()?;
    files.push(("losses.csv", log.to_csv().into_bytes()));
    ckpts.save(step, is_final, &files)?;
    Ok(())
}

/// The outputs every training stage writes: the generated set (`dataset.safetensors`), the
/// final sample grid, the grids taken during training, the loss log as CSV and SVG, the
/// generator's weights and `training.json`. Returns the provenance written there.
pub fn write_outputs<B: AutodiffBackend, G: Gan<B>>(
    ctx: &StageContext,
    schedule: &Schedule,
    out: &Outcome<G>,
    device: &B::Device,
    class_names: &[String],
) -> Result<serde_json::Value, StageError> {
    let dir = &ctx.out_dir;
    let (set, labels) = generate_set(&out.gan, ctx.seed, Stream::Latent, schedule.samples, device)?;
    // A set for `evaluate` and any other stage that takes images.
    let mut ds = Dataset::single(set);
    if out.gan.classes() > 0 {
        ds.labels = Some(labels);
        ds.classes = class_names.to_vec();
    }
    ds.meta.insert("source".into(), "generated".into());
    ds.meta.insert("stage".into(), ctx.name.clone());
    ds.save(&dir.join(gantry_datasets::DATASET_FILE))?;

    let grid_path = dir.join("samples.png");
    write_grid(&out.gan, ctx.seed, schedule.grid, &grid_path, device)?;
    // Grids taken during training, at steps this run covers.
    let grids_src = ctx.checkpoint_dir.join("samples");
    let grids_dst = dir.join("samples");
    std::fs::create_dir_all(&grids_dst).map_err(|e| StageError::io(&grids_dst, e))?;
    if let Ok(rd) = std::fs::read_dir(&grids_src) {
        for e in rd.filter_map(|e| e.ok()) {
            let name = e.file_name().to_string_lossy().to_string();
            let step = name
                .strip_prefix("step-")
                .and_then(|s| s.strip_suffix(".png"))
                .and_then(|s| s.parse::<usize>().ok());
            if step.is_some_and(|s| s <= out.steps) {
                std::fs::copy(e.path(), grids_dst.join(&name))
                    .map_err(|err| StageError::io(e.path(), err))?;
            }
        }
    }

    write_file(&dir.join("losses.csv"), out.log.to_csv().as_bytes())?;
    let series: Vec<Series> = out
        .log
        .columns
        .iter()
        .enumerate()
        .map(|(i, c)| Series {
            name: c.clone(),
            points: out
                .log
                .rows
                .iter()
                .map(|(s, _, v)| (*s as f64, v[i]))
                .collect(),
        })
        .collect();
    line_plot(
        &dir.join("losses.svg"),
        &format!("{}: losses per step", ctx.name),
        "step",
        "value",
        &series,
    )?;
    out.gan.export(dir)?;
    let provenance = serde_json::json!({
        "backend": out.backend,
        "epochs": schedule.epochs,
        "steps": out.steps,
        "steps_per_epoch": out.steps_per_epoch,
        "resumed_from_step": out.resumed_from,
        "checkpoints": ctx.checkpoint_dir.display().to_string(),
    });
    write_json(&dir.join("training.json"), &provenance)?;
    Ok(provenance)
}

/// The mean of a scalar tensor read back as f64 (one sync with the device).
pub fn scalar<B: Backend>(t: Tensor<B, 1>) -> f64 {
    t.into_scalar().elem::<f64>()
}

/// `metrics.json` of a training stage: each logged value at the last step and averaged
/// over the last epoch, plus `extra`.
pub fn write_metrics(
    ctx: &StageContext,
    log: &LossLog,
    extra: serde_json::Map<String, serde_json::Value>,
) -> Result<(), StageError> {
    let mut m = serde_json::Map::new();
    if let Some(last) = log.last() {
        for (c, v) in last {
            m.insert(format!("{c}_last"), serde_json::json!(v));
        }
    }
    if let Some((_, means)) = log.epoch_means().last() {
        for (c, v) in log.columns.iter().zip(means) {
            m.insert(format!("{c}_last_epoch"), serde_json::json!(v));
        }
    }
    m.extend(extra);
    write_json(
        &ctx.out_dir.join(crate::METRICS_FILE),
        &serde_json::Value::Object(m),
    )
}

/// `report.md` of a training stage: a title line, what ran where, the last step's values,
/// the sample grid and `notes` (stage-specific Markdown).
pub fn write_report(
    ctx: &StageContext,
    title: &str,
    schedule: &Schedule,
    batch: usize,
    log: &LossLog,
    provenance: &serde_json::Value,
    notes: &str,
) -> Result<(), StageError> {
    let mut md = format!(
        "# {}: {title}\n\n{} epochs ({} steps), batch {batch}, on {}.\n\n",
        ctx.name,
        schedule.epochs,
        provenance["steps"].as_u64().unwrap_or(0),
        provenance["backend"].as_str().unwrap_or("?")
    );
    if let Some(from) = provenance["resumed_from_step"].as_u64() {
        md.push_str(&format!(
            "Continued from the checkpoint at step {from}.\n\n"
        ));
    }
    if let Some(last) = log.last() {
        md.push_str("| at the last step | value |\n| --- | --- |\n");
        for (c, v) in last {
            md.push_str(&format!("| {c} | {v:.6} |\n"));
        }
        md.push('\n');
    }
    md.push_str("![samples](samples.png)\n\n");
    md.push_str(notes);
    md.push_str(
        "\nPer-step log: `losses.csv` (plot: `losses.svg`); grids during training: `samples/`.\n",
    );
    write_file(&ctx.out_dir.join(crate::REPORT_FILE), md.as_bytes())
}
