//! `evaluate`: compare generated image sets with real ones.
//!
//! ```yaml
//! evaluate:
//!   kind: evaluate
//!   real: [faces64, faces256]        # each generated set is compared with the real set of its size
//!   fake: [progan, srgan]            # any stages whose output holds images
//!   metrics: [swd, ms_ssim]
//! ```
//!
//! Metrics:
//! - `swd`: sliced Wasserstein distance ×1e3 per pyramid level and averaged (Karras et
//!   al. 2018), real vs generated; when the counts differ, the first n images of the
//!   larger set are used (n = the smaller count).
//! - `ms_ssim`: the ProGAN diversity score: mean MS-SSIM over random pairs *within* each
//!   set (real sets too, as the baseline). Lower means more diverse.
//! - `ms_ssim_paired`, `ssim_paired`: generated[i] against real[i] (reconstruction
//!   quality); the sets must be the same size and count.
//!
//! - `inception_score`, `fid`: through Inception-v3 when `inception: {weights: FILE}`
//!   names a local weights file (see [`crate::metrics::inception`]), otherwise through a
//!   trained `classifier` stage's network; `class_accuracy` through the classifier.
//!
//! Memory: sets are read from their dataset files when a metric needs them, not all at
//! once. Networks (Inception-v3, the classifier) read a set one batch at a time and keep
//! only the class probabilities and a running mean and covariance of the features, so a
//! set far larger than memory can be scored. SWD and MS-SSIM read one generated set and
//! its real set whole (SWD's descriptors are larger than the images anyway).
//!
//! Writes `metrics.json` (`{"sets": {set: {metric: value}}}`), `metrics.csv`,
//! `report.md`, and each set's sample grid under `samples/`.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use gantry_datasets::{DatasetReader, ImageSet};
use indicatif::ProgressBar;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::metrics::frechet::{FeatureStats, frechet_distance};
use crate::metrics::{inception, ssim, swd};
use crate::train::backend::{OnBackend, dispatch};
use crate::{
    Artifact, ArtifactType, Checked, InputSlot, ParamsError, StageContext, StageError, StageKind,
};
use burn::tensor::backend::AutodiffBackend;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    Swd,
    MsSsim,
    MsSsimPaired,
    SsimPaired,
    /// Inception Score (mean ± std over `is_splits` splits) from the `classifier`'s class
    /// probabilities; real sets too, as the ceiling.
    InceptionScore,
    /// Fréchet distance between the `classifier`'s feature statistics of each generated
    /// set and its real set.
    Fid,
    /// For labelled sets (a conditional generator's output, or real data): how often the
    /// `classifier` gives the image's own label.
    ClassAccuracy,
}

impl Metric {
    fn needs_classifier(self) -> bool {
        matches!(
            self,
            Metric::InceptionScore | Metric::Fid | Metric::ClassAccuracy
        )
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct EvaluateParams {
    /// Which metrics to compute (default: `swd` and `ms_ssim`).
    #[serde(default = "default_metrics")]
    pub metrics: Vec<Metric>,
    /// Use at most this many images of each set (the first ones). Default: all.
    #[serde(default)]
    pub max_images: Option<usize>,
    /// Random pairs per set for the MS-SSIM diversity score (ProGAN used 10,000).
    #[serde(default = "default_pairs")]
    pub ms_ssim_pairs: usize,
    /// Which part of a dataset holds the images (default: `images`, or `b` for paired
    /// and unpaired datasets).
    #[serde(default)]
    pub part: Option<String>,
    /// SWD settings (defaults as in the paper: 7×7 neighbourhoods, 128 per image per
    /// level, 4 × 128 directions, pyramid down to 16×16).
    #[serde(default)]
    pub swd: swd::SwdConfig,
    /// Splits of the Inception Score (10, as Salimans et al.).
    #[serde(default = "default_is_splits")]
    pub is_splits: usize,
    /// Inception-v3 for the Inception Score and FID, from a local weights file, instead
    /// of a `classifier` stage (which `class_accuracy` still needs).
    #[serde(default)]
    pub inception: Option<InceptionParams>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct InceptionParams {
    /// A PyTorch (`.pth`) or safetensors file with PyTorch's tensor names, relative to the
    /// pipeline file: pytorch-fid's `pt_inception-2015-12-05-6726825d.pth` for the FID
    /// papers report, or torchvision's Inception-v3 weights.
    pub weights: std::path::PathBuf,
    /// Which network the weights are for (default `fid`).
    #[serde(default = "default_variant")]
    pub variant: inception::Variant,
    /// Images per forward pass (default 32).
    #[serde(default = "default_inception_batch")]
    pub batch: usize,
}

fn default_variant() -> inception::Variant {
    inception::Variant::Fid
}

fn default_inception_batch() -> usize {
    32
}

fn default_is_splits() -> usize {
    10
}

fn default_metrics() -> Vec<Metric> {
    vec![Metric::Swd, Metric::MsSsim]
}

fn default_pairs() -> usize {
    10_000
}

pub struct EvaluateKind;

const INPUTS: &[InputSlot] = &[
    InputSlot {
        key: "real",
        accepts: &[ArtifactType::Dataset],
        many: true,
        required: true,
    },
    InputSlot {
        key: "fake",
        accepts: &[ArtifactType::Dataset],
        many: true,
        required: true,
    },
    InputSlot {
        key: "classifier",
        accepts: &[ArtifactType::Model],
        many: false,
        required: false,
    },
];

impl StageKind for EvaluateKind {
    fn name(&self) -> &'static str {
        "evaluate"
    }
    fn version(&self) -> u32 {
        1
    }
    fn summary(&self) -> &'static str {
        "SWD, MS-SSIM and SSIM of generated image sets against real ones"
    }
    /// Inception-v3 runs on the pipeline's backend.
    fn uses_backend(&self) -> bool {
        true
    }
    fn inputs(&self) -> &'static [InputSlot] {
        INPUTS
    }
    fn output(&self) -> ArtifactType {
        ArtifactType::Metrics
    }
    fn params_schema(&self) -> schemars::Schema {
        schemars::schema_for!(EvaluateParams)
    }
    fn check(
        &self,
        params: serde_json::Value,
        base_dir: &std::path::Path,
    ) -> Result<Checked, ParamsError> {
        let (p, canonical) = crate::params::from_value::<EvaluateParams>(params)?;
        if p.metrics.is_empty() {
            return Err(ParamsError::invalid(
                &["metrics"],
                "name at least one metric",
            ));
        }
        if p.max_images == Some(0) {
            return Err(ParamsError::invalid(&["max_images"], "must be at least 1"));
        }
        let mut files = Vec::new();
        if let Some(inc) = &p.inception {
            if inc.batch == 0 {
                return Err(ParamsError::invalid(
                    &["inception", "batch"],
                    "must be at least 1",
                ));
            }
            let weights = base_dir.join(&inc.weights);
            if !weights.is_file() {
                return Err(ParamsError::invalid(
                    &["inception", "weights"],
                    format!("no file {}", weights.display()),
                ));
            }
            files.push(weights);
        }
        Ok(Checked { canonical, files })
    }

    fn run(&self, ctx: &StageContext) -> Result<(), StageError> {
        let p: EvaluateParams = ctx.params()?;
        let open = |a: &Artifact| SetSource::open(a, &p);
        let reals: Vec<SetSource> = ctx
            .inputs("real")
            .iter()
            .map(open)
            .collect::<Result<_, _>>()?;
        let fakes: Vec<SetSource> = ctx
            .inputs("fake")
            .iter()
            .map(open)
            .collect::<Result<_, _>>()?;

        let mut sets: BTreeMap<String, serde_json::Map<String, serde_json::Value>> =
            BTreeMap::new();
        let ssim_cfg = ssim::SsimConfig::default();
        let bar = |len: u64, msg: String| {
            ctx.progress.set_length(len);
            ctx.progress.set_position(0);
            ctx.progress.set_message(msg);
            &ctx.progress
        };
        let seed = ctx.seed;

        // Sets are read from their files when a metric needs them and dropped after, so
        // that at most one generated set and its real set are in memory at once.
        if p.metrics.contains(&Metric::MsSsim) {
            for src in reals.iter().chain(&fakes) {
                ctx.check_cancelled()?;
                let name = &src.name;
                let set = src.load()?;
                let pb = bar(p.ms_ssim_pairs as u64, format!("MS-SSIM {name}"));
                let r = ssim::ms_ssim_diversity(&set, p.ms_ssim_pairs, seed, &ssim_cfg, pb)
                    .map_err(|e| StageError::Failed(format!("MS-SSIM of `{name}`: {e}")))?;
                entry(&mut sets, name).insert("ms_ssim".into(), json(&r)?);
            }
        }
        let pair_metrics: Vec<Metric> = p
            .metrics
            .iter()
            .copied()
            .filter(|m| matches!(m, Metric::Swd | Metric::MsSsimPaired | Metric::SsimPaired))
            .collect();
        for fake_src in fakes.iter().filter(|_| !pair_metrics.is_empty()) {
            let name = &fake_src.name;
            let real_src = matching_real(&reals, fake_src)?;
            let real_name = &real_src.name;
            let (real, fake) = (real_src.load()?, fake_src.load()?);
            for m in &pair_metrics {
                ctx.check_cancelled()?;
                let (key, value) = match m {
                    Metric::Swd => {
                        let pb: &ProgressBar = bar(0, format!("SWD {name} vs {real_name}"));
                        // SWD compares equal counts: the first n of the larger set.
                        let n = real.len().min(fake.len());
                        let (real, fake) = (first(&real, n), first(&fake, n));
                        let r = swd::swd(&real, &fake, &p.swd, pb).map_err(|e| {
                            StageError::Failed(format!("SWD of `{name}` vs `{real_name}`: {e}"))
                        })?;
                        ("swd", json(&r)?)
                    }
                    Metric::MsSsimPaired => {
                        same_count(&real, &fake, real_name, name)?;
                        let pb = bar(fake.len() as u64, format!("MS-SSIM {name} ↔ {real_name}"));
                        let r = ssim::ms_ssim_paired(&real, &fake, &ssim_cfg, pb).map_err(|e| {
                            StageError::Failed(format!("MS-SSIM of `{name}` vs `{real_name}`: {e}"))
                        })?;
                        ("ms_ssim_paired", json(&r)?)
                    }
                    Metric::SsimPaired => {
                        same_count(&real, &fake, real_name, name)?;
                        let pb = bar(fake.len() as u64, format!("SSIM {name} ↔ {real_name}"));
                        let r = ssim::ssim_paired(&real, &fake, &ssim_cfg, pb).map_err(|e| {
                            StageError::Failed(format!("SSIM of `{name}` vs `{real_name}`: {e}"))
                        })?;
                        ("ssim_paired", json(&r)?)
                    }
                    _ => continue,
                };
                let e = entry(&mut sets, name);
                e.insert(key.into(), value);
                e.insert("real".into(), serde_json::json!(real_name));
            }
        }

        if p.metrics.iter().any(|m| m.needs_classifier()) {
            classifier_metrics(ctx, &p, &reals, &fakes, &mut sets)?;
        }

        let samples = ctx.out_dir.join("samples");
        std::fs::create_dir_all(&samples).map_err(|e| StageError::io(&samples, e))?;
        for src in reals.iter().chain(&fakes) {
            let first = src.read(0..src.count.min(64))?;
            crate::grid::save_grid(
                &first,
                64,
                &samples.join(format!("{}.png", crate::file_name_safe(&src.name))),
            )?;
        }
        let doc = serde_json::json!({ "sets": sets });
        crate::write_json(&ctx.out_dir.join(crate::METRICS_FILE), &doc)?;
        crate::write_file(&ctx.out_dir.join("metrics.csv"), csv(&sets).as_bytes())?;
        crate::write_file(
            &ctx.out_dir.join(crate::REPORT_FILE),
            report(&sets).as_bytes(),
        )?;
        Ok(())
    }
}

/// One image set of the evaluation: a part of a stage's dataset file, read when a metric
/// needs it — whole for SWD and MS-SSIM, a batch at a time for networks.
struct SetSource {
    name: String,
    reader: DatasetReader,
    part: String,
    /// Images used (`max_images` applied).
    count: usize,
    /// One per used image, when the part is labelled.
    labels: Option<Vec<u32>>,
}

impl SetSource {
    fn open(a: &Artifact, p: &EvaluateParams) -> Result<SetSource, StageError> {
        let reader = DatasetReader::open(&a.dataset_file())?;
        let part = match p.part.as_deref() {
            Some(part) => part.to_string(),
            None if reader.parts.contains_key("images") => "images".into(),
            None if reader.parts.contains_key("b") => "b".into(),
            None => reader.parts.keys().next().cloned().unwrap_or_default(),
        };
        let Some(info) = reader.parts.get(&part) else {
            return Err(StageError::Failed(format!(
                "`{}` has no part `{part}`; parts: {}",
                a.stage,
                reader.parts.keys().cloned().collect::<Vec<_>>().join(", ")
            )));
        };
        let count = p.max_images.map_or(info.count, |m| m.min(info.count));
        let labelled = reader.layout.labelled_part() == Some(part.as_str());
        let labels = reader
            .labels
            .as_ref()
            .filter(|l| labelled && l.len() >= count)
            .map(|l| l[..count].to_vec());
        Ok(SetSource {
            name: a.stage.clone(),
            reader,
            part,
            count,
            labels,
        })
    }

    fn shape(&self) -> (u32, u32, u8) {
        let info = &self.reader.parts[&self.part];
        (info.width, info.height, info.channels)
    }

    fn read(&self, range: std::ops::Range<usize>) -> Result<ImageSet, StageError> {
        Ok(self.reader.read(&self.part, range)?)
    }

    fn load(&self) -> Result<ImageSet, StageError> {
        self.read(0..self.count)
    }
}

/// Class probabilities and feature statistics of every set, from one network.
struct NetOutputs {
    classes: usize,
    /// Per set: probabilities (`n x classes`, row-major) and the running mean and
    /// covariance of the features (never the features themselves).
    sets: BTreeMap<String, (Vec<f32>, FeatureStats)>,
}

/// A batch's class probabilities and features, row-major.
type Outputs = (Vec<f32>, Vec<f32>);

/// Images per batch when streaming a set through a network.
const CLASSIFIER_BATCH: usize = 256;

/// Streams every set through `net` (`batch` images at a time, read from disk batch by
/// batch): memory holds one batch of images, the class probabilities and the feature
/// statistics, whatever the size of the set.
fn stream_outputs(
    ctx: &StageContext,
    what: &str,
    all: &[&SetSource],
    batch: usize,
    classes: usize,
    features: usize,
    net: &dyn Fn(&ImageSet) -> Result<Outputs, StageError>,
) -> Result<NetOutputs, StageError> {
    let mut sets = BTreeMap::new();
    for src in all.iter().copied() {
        let name = &src.name;
        ctx.progress.set_length(src.count as u64);
        ctx.progress.set_position(0);
        ctx.progress.set_message(format!("{what} on {name}"));
        let mut probs = Vec::with_capacity(src.count * classes);
        let mut stats = FeatureStats::new(features);
        for first in (0..src.count).step_by(batch.max(1)) {
            ctx.check_cancelled()?;
            let end = (first + batch).min(src.count);
            let (p, f) = net(&src.read(first..end)?)?;
            probs.extend(p);
            stats
                .add_batch(&f, end - first)
                .map_err(|e| StageError::Failed(format!("features of `{name}`: {e}")))?;
            ctx.progress.set_position(end as u64);
        }
        sets.insert(name.clone(), (probs, stats));
    }
    Ok(NetOutputs { classes, sets })
}

/// Every set through the `classifier` stage's network.
fn classifier_outputs(
    ctx: &StageContext,
    art: &Artifact,
    all: &[&SetSource],
) -> Result<NetOutputs, StageError> {
    let clf = crate::classifier::load(&art.dir)?;
    let device = Default::default();
    for src in all {
        let (w, h, c) = src.shape();
        if (w as usize, h as usize, c as usize)
            != (clf.spec.width, clf.spec.height, clf.spec.channels)
        {
            return Err(StageError::Failed(format!(
                "`{}` has {w}x{h}x{c} images but classifier `{}` was trained on {}x{}x{}",
                src.name, art.stage, clf.spec.width, clf.spec.height, clf.spec.channels
            )));
        }
    }
    stream_outputs(
        ctx,
        "classifier",
        all,
        CLASSIFIER_BATCH,
        clf.spec.classes.len(),
        crate::classifier::FEATURES,
        &|images| crate::classifier::apply(&clf.model, images, &device),
    )
}

/// Every set through Inception-v3, on the pipeline's backend (a GPU when there is one:
/// 5.7 GFLOP per image is slow on two CPU cores).
fn inception_outputs(
    ctx: &StageContext,
    inc: &InceptionParams,
    all: &[&SetSource],
) -> Result<NetOutputs, StageError> {
    struct Job<'a> {
        ctx: &'a StageContext,
        inc: &'a InceptionParams,
        all: &'a [&'a SetSource],
    }
    impl OnBackend for Job<'_> {
        type Output = Result<NetOutputs, StageError>;
        fn run<B: AutodiffBackend>(self, device: B::Device, label: String) -> Self::Output {
            let Job { ctx, inc, all } = self;
            ctx.set_backend_used(&label);
            let weights = ctx.resolve(&inc.weights);
            ctx.progress
                .set_message(format!("loading Inception-v3 on {label}"));
            let model = inception::load::<B::InnerBackend>(&weights, inc.variant, &device)
                .map_err(|e| StageError::Failed(format!("inception.weights: {e}")))?;
            stream_outputs(
                ctx,
                "Inception-v3",
                all,
                inc.batch,
                inc.variant.classes(),
                inception::FEATURES,
                &|images| {
                    let (features, probs) = inception::scores(&model, images, &device)
                        .map_err(|e| StageError::Failed(format!("Inception-v3: {e}")))?;
                    Ok((probs, features))
                },
            )
        }
    }
    dispatch(&ctx.backend, &ctx.gpus, Job { ctx, inc, all })?
}

/// Inception Score and FID through Inception-v3 (when `inception` is given) or a trained
/// `classifier`; class accuracy through the `classifier`.
fn classifier_metrics(
    ctx: &StageContext,
    p: &EvaluateParams,
    reals: &[SetSource],
    fakes: &[SetSource],
    sets: &mut BTreeMap<String, serde_json::Map<String, serde_json::Value>>,
) -> Result<(), StageError> {
    let all: Vec<&SetSource> = reals.iter().chain(fakes).collect();
    let wants_scores =
        p.metrics.contains(&Metric::InceptionScore) || p.metrics.contains(&Metric::Fid);
    let needs_classifier =
        p.metrics.contains(&Metric::ClassAccuracy) || (wants_scores && p.inception.is_none());
    let classifier = match (ctx.inputs("classifier").first(), needs_classifier) {
        (Some(art), true) => Some(classifier_outputs(ctx, art, &all)?),
        (None, true) => {
            let wanted: Vec<String> = p
                .metrics
                .iter()
                .filter(|m| {
                    **m == Metric::ClassAccuracy || (p.inception.is_none() && m.needs_classifier())
                })
                .map(|m| json(m).map(|v| v.as_str().unwrap_or_default().to_string()))
                .collect::<Result<_, _>>()?;
            return Err(StageError::Failed(format!(
                "metrics {} need a classifier: add `classifier: <a classifier stage>` to \
                 this stage{}",
                wanted.join(", "),
                if p.inception.is_none() && !p.metrics.contains(&Metric::ClassAccuracy) {
                    " (or `inception: {weights: <file>}` for Inception-v3)"
                } else {
                    ""
                }
            )));
        }
        (_, false) => None,
    };
    let scorer = match &p.inception {
        Some(inc) if wants_scores => Some(inception_outputs(ctx, inc, &all)?),
        _ => None,
    };
    let Some(scores) = scorer.as_ref().or(classifier.as_ref()) else {
        return Ok(());
    };
    for src in &all {
        let name = &src.name;
        if p.metrics.contains(&Metric::InceptionScore) {
            let probs = &scores.sets[name.as_str()].0;
            let splits = p.is_splits.min(src.count).max(1);
            let is = crate::metrics::inception_score::inception_score(
                probs,
                src.count,
                scores.classes,
                splits,
            )
            .map_err(|e| StageError::Failed(format!("Inception Score of `{name}`: {e}")))?;
            entry(sets, name).insert("inception_score".into(), json(&is)?);
        }
        if p.metrics.contains(&Metric::ClassAccuracy)
            && let (Some(clf), Some(l)) = (&classifier, &src.labels)
        {
            let hits = crate::train::loss::hits(&clf.sets[name.as_str()].0, clf.classes, l);
            entry(sets, name).insert(
                "class_accuracy".into(),
                serde_json::json!(hits as f64 / l.len().max(1) as f64),
            );
        }
    }
    if p.metrics.contains(&Metric::Fid) {
        for fake in fakes {
            let real = matching_real(reals, fake)?;
            let d = frechet_distance(&scores.sets[&real.name].1, &scores.sets[&fake.name].1)
                .map_err(|e| StageError::Failed(format!("FID of `{}`: {e}", fake.name)))?;
            let e = entry(sets, &fake.name);
            e.insert("fid".into(), serde_json::json!(d));
            e.insert("real".into(), serde_json::json!(real.name));
        }
    }
    Ok(())
}

fn entry<'a>(
    sets: &'a mut BTreeMap<String, serde_json::Map<String, serde_json::Value>>,
    name: &str,
) -> &'a mut serde_json::Map<String, serde_json::Value> {
    sets.entry(name.to_string()).or_default()
}

fn json<T: Serialize>(v: &T) -> Result<serde_json::Value, StageError> {
    serde_json::to_value(v).map_err(|e| StageError::Failed(e.to_string()))
}

/// The first `n` images of `set`, copied only when that is not all of them.
fn first(set: &ImageSet, n: usize) -> std::borrow::Cow<'_, ImageSet> {
    if n >= set.len() {
        return std::borrow::Cow::Borrowed(set);
    }
    let mut out = ImageSet::new(set.width, set.height, set.channels);
    out.pixels = set.pixels[..n * set.image_len()].to_vec();
    std::borrow::Cow::Owned(out)
}

fn matching_real<'a>(
    reals: &'a [SetSource],
    fake: &SetSource,
) -> Result<&'a SetSource, StageError> {
    reals
        .iter()
        .find(|r| r.shape() == fake.shape())
        .ok_or_else(|| {
            let have: Vec<String> = reals
                .iter()
                .map(|r| {
                    let (w, h, c) = r.shape();
                    format!("{} ({w}x{h}x{c})", r.name)
                })
                .collect();
            let (w, h, c) = fake.shape();
            StageError::Failed(format!(
                "no real set matches `{}` ({w}x{h}x{c}); real sets: {} — add a `downsample` stage to match sizes",
                fake.name,
                have.join(", ")
            ))
        })
}

fn same_count(real: &ImageSet, fake: &ImageSet, rn: &str, fname: &str) -> Result<(), StageError> {
    if real.len() != fake.len() {
        return Err(StageError::Failed(format!(
            "paired metrics need as many images in `{fname}` ({}) as in `{rn}` ({})",
            fake.len(),
            real.len()
        )));
    }
    Ok(())
}

fn scalar(v: &serde_json::Value) -> Option<(f64, Option<f64>)> {
    if let Some(x) = v.as_f64() {
        return Some((x, None));
    }
    if let Some(avg) = v.get("average").and_then(|a| a.as_f64()) {
        return Some((avg, None));
    }
    Some((
        v.get("mean")?.as_f64()?,
        v.get("std").and_then(|s| s.as_f64()),
    ))
}

fn csv(sets: &BTreeMap<String, serde_json::Map<String, serde_json::Value>>) -> String {
    let mut s = String::from("set,metric,value,std\n");
    for (name, m) in sets {
        for (metric, v) in m {
            if let Some((x, sd)) = scalar(v) {
                let _ = writeln!(
                    s,
                    "{name},{metric},{x},{}",
                    sd.map(|d| d.to_string()).unwrap_or_default()
                );
            }
        }
    }
    s
}

fn report(sets: &BTreeMap<String, serde_json::Map<String, serde_json::Value>>) -> String {
    let mut metrics: Vec<&String> = sets.values().flat_map(|m| m.keys()).collect();
    metrics.sort();
    metrics.dedup();
    metrics.retain(|m| *m != "real");
    let mut s = String::from("| Set |");
    for m in &metrics {
        let _ = write!(s, " {m} |");
    }
    s.push_str("\n|---|");
    for _ in &metrics {
        s.push_str("---:|");
    }
    s.push('\n');
    for (name, m) in sets {
        let _ = write!(s, "| {name} |");
        for metric in &metrics {
            let cell = m
                .get(*metric)
                .and_then(scalar)
                .map(|(x, sd)| match sd {
                    Some(sd) => format!("{x:.4} ± {sd:.4}"),
                    None => format!("{x:.4}"),
                })
                .unwrap_or_default();
            let _ = write!(s, " {cell} |");
        }
        s.push('\n');
    }
    s
}
