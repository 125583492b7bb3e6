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
//! Writes `metrics.json` (`{"sets": {set: {metric: value}}}`), `metrics.csv`,
//! `report.md`, and each set's sample grid under `samples/`.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use gantry_datasets::{Dataset, ImageSet};
use indicatif::ProgressBar;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::metrics::{inception, ssim, swd};
use crate::{
    Artifact, ArtifactType, Checked, InputSlot, ParamsError, StageContext, StageError, StageKind,
};

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
        let mut labels: BTreeMap<String, Vec<u32>> = BTreeMap::new();
        let mut load = |a: &Artifact| -> Result<(String, ImageSet), StageError> {
            let d = Dataset::load(&a.dataset_file())?;
            let set = pick_part(&d, p.part.as_deref(), &a.stage)?;
            let set = truncate(set, p.max_images);
            if let Some(l) = d.labels.filter(|l| l.len() >= set.len()) {
                labels.insert(a.stage.clone(), l[..set.len()].to_vec());
            }
            Ok((a.stage.clone(), set))
        };
        let reals: Vec<(String, ImageSet)> = ctx
            .inputs("real")
            .iter()
            .map(&mut load)
            .collect::<Result<_, _>>()?;
        let fakes: Vec<(String, ImageSet)> = ctx
            .inputs("fake")
            .iter()
            .map(&mut load)
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

        if p.metrics.contains(&Metric::MsSsim) {
            for (name, set) in reals.iter().chain(&fakes) {
                ctx.check_cancelled()?;
                let pb = bar(p.ms_ssim_pairs as u64, format!("MS-SSIM {name}"));
                let r = ssim::ms_ssim_diversity(set, p.ms_ssim_pairs, seed, &ssim_cfg, pb)
                    .map_err(|e| StageError::Failed(format!("MS-SSIM of `{name}`: {e}")))?;
                entry(&mut sets, name).insert("ms_ssim".into(), json(&r)?);
            }
        }
        for (name, fake) in &fakes {
            let (real_name, real) = matching_real(&reals, fake, name)?;
            for m in &p.metrics {
                ctx.check_cancelled()?;
                let value = match m {
                    Metric::MsSsim
                    | Metric::InceptionScore
                    | Metric::Fid
                    | Metric::ClassAccuracy => continue,
                    Metric::Swd => {
                        let pb: &ProgressBar = bar(0, format!("SWD {name} vs {real_name}"));
                        // SWD compares equal counts: the first n of the larger set.
                        let n = real.len().min(fake.len());
                        let (real, fake) = (
                            truncate(real.clone(), Some(n)),
                            truncate(fake.clone(), Some(n)),
                        );
                        json(&swd::swd(&real, &fake, &p.swd, pb).map_err(|e| {
                            StageError::Failed(format!("SWD of `{name}` vs `{real_name}`: {e}"))
                        })?)?
                    }
                    Metric::MsSsimPaired => {
                        same_count(real, fake, real_name, name)?;
                        let pb = bar(fake.len() as u64, format!("MS-SSIM {name} ↔ {real_name}"));
                        json(
                            &ssim::ms_ssim_paired(real, fake, &ssim_cfg, pb).map_err(|e| {
                                StageError::Failed(format!(
                                    "MS-SSIM of `{name}` vs `{real_name}`: {e}"
                                ))
                            })?,
                        )?
                    }
                    Metric::SsimPaired => {
                        same_count(real, fake, real_name, name)?;
                        let pb = bar(fake.len() as u64, format!("SSIM {name} ↔ {real_name}"));
                        json(&ssim::ssim_paired(real, fake, &ssim_cfg, pb).map_err(|e| {
                            StageError::Failed(format!("SSIM of `{name}` vs `{real_name}`: {e}"))
                        })?)?
                    }
                };
                let key = match m {
                    Metric::Swd => "swd",
                    Metric::MsSsimPaired => "ms_ssim_paired",
                    Metric::SsimPaired => "ssim_paired",
                    _ => continue,
                };
                let e = entry(&mut sets, name);
                e.insert(key.into(), value);
                e.insert("real".into(), serde_json::json!(real_name));
            }
        }

        if p.metrics.iter().any(|m| m.needs_classifier()) {
            classifier_metrics(ctx, &p, &reals, &fakes, &labels, &mut sets)?;
        }

        let samples = ctx.out_dir.join("samples");
        std::fs::create_dir_all(&samples).map_err(|e| StageError::io(&samples, e))?;
        for (name, set) in reals.iter().chain(&fakes) {
            crate::grid::save_grid(
                set,
                64,
                &samples.join(format!("{}.png", crate::file_name_safe(name))),
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

/// Class probabilities and features of every set, from one network.
struct NetOutputs {
    classes: usize,
    features: usize,
    /// Per set: probabilities (`n x classes`) and features (`n x features`), row-major.
    sets: BTreeMap<String, (Vec<f32>, Vec<f32>)>,
}

/// Every set through the `classifier` stage's network, in batches of 256.
fn classifier_outputs(
    ctx: &StageContext,
    art: &Artifact,
    all: &[&(String, ImageSet)],
) -> Result<(NetOutputs, crate::classifier::Trained), StageError> {
    let clf = crate::classifier::load(&art.dir)?;
    let device = Default::default();
    let mut sets = BTreeMap::new();
    for (name, set) in all.iter().copied() {
        ctx.check_cancelled()?;
        if (
            set.width as usize,
            set.height as usize,
            set.channels as usize,
        ) != (clf.spec.width, clf.spec.height, clf.spec.channels)
        {
            return Err(StageError::Failed(format!(
                "`{name}` has {}x{}x{} images but classifier `{}` was trained on {}x{}x{}",
                set.width,
                set.height,
                set.channels,
                art.stage,
                clf.spec.width,
                clf.spec.height,
                clf.spec.channels
            )));
        }
        ctx.progress.set_message(format!("classifier on {name}"));
        sets.insert(
            name.clone(),
            crate::classifier::apply(&clf.model, set, &device)?,
        );
    }
    let out = NetOutputs {
        classes: clf.spec.classes.len(),
        features: crate::classifier::FEATURES,
        sets,
    };
    Ok((out, clf))
}

/// Every set through Inception-v3, `batch` images at a time, with a progress bar.
fn inception_outputs(
    ctx: &StageContext,
    inc: &InceptionParams,
    all: &[&(String, ImageSet)],
) -> Result<NetOutputs, StageError> {
    let device = Default::default();
    let weights = ctx.resolve(&inc.weights);
    ctx.progress.set_message("loading Inception-v3");
    let model = inception::load::<burn::backend::Flex>(&weights, inc.variant, &device)
        .map_err(|e| StageError::Failed(format!("inception.weights: {e}")))?;
    let mut sets = BTreeMap::new();
    for (name, set) in all.iter().copied() {
        ctx.check_cancelled()?;
        ctx.progress.set_length(set.len() as u64);
        ctx.progress.set_position(0);
        ctx.progress.set_message(format!("Inception-v3 on {name}"));
        let (features, probs) =
            inception::apply(&model, set, inc.batch, &device, &|done: usize| {
                ctx.progress.set_position(done as u64)
            })
            .map_err(|e| StageError::Failed(format!("Inception-v3 on `{name}`: {e}")))?;
        sets.insert(name.clone(), (probs, features));
    }
    Ok(NetOutputs {
        classes: inc.variant.classes(),
        features: inception::FEATURES,
        sets,
    })
}

/// Inception Score and FID through Inception-v3 (when `inception` is given) or a trained
/// `classifier`; class accuracy through the `classifier`. Only the class probabilities
/// and the features of each image are kept.
fn classifier_metrics(
    ctx: &StageContext,
    p: &EvaluateParams,
    reals: &[(String, ImageSet)],
    fakes: &[(String, ImageSet)],
    labels: &BTreeMap<String, Vec<u32>>,
    sets: &mut BTreeMap<String, serde_json::Map<String, serde_json::Value>>,
) -> Result<(), StageError> {
    let all: Vec<&(String, ImageSet)> = reals.iter().chain(fakes).collect();
    let wants_scores =
        p.metrics.contains(&Metric::InceptionScore) || p.metrics.contains(&Metric::Fid);
    let needs_classifier =
        p.metrics.contains(&Metric::ClassAccuracy) || (wants_scores && p.inception.is_none());
    let classifier = match (ctx.inputs("classifier").first(), needs_classifier) {
        (Some(art), true) => Some(classifier_outputs(ctx, art, &all)?.0),
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
    for (name, set) in all.iter().copied() {
        if p.metrics.contains(&Metric::InceptionScore) {
            let probs = &scores.sets[name.as_str()].0;
            let splits = p.is_splits.min(set.len()).max(1);
            let is = crate::metrics::inception_score::inception_score(
                probs,
                set.len(),
                scores.classes,
                splits,
            )
            .map_err(|e| StageError::Failed(format!("Inception Score of `{name}`: {e}")))?;
            entry(sets, name).insert("inception_score".into(), json(&is)?);
        }
        if p.metrics.contains(&Metric::ClassAccuracy)
            && let (Some(clf), Some(l)) = (&classifier, labels.get(name))
        {
            let hits = crate::train::loss::hits(&clf.sets[name.as_str()].0, clf.classes, l);
            entry(sets, name).insert(
                "class_accuracy".into(),
                serde_json::json!(hits as f64 / l.len().max(1) as f64),
            );
        }
    }
    if p.metrics.contains(&Metric::Fid) {
        use crate::metrics::frechet::{FeatureStats, frechet_distance};
        let stats = |name: &str, n: usize| -> Result<FeatureStats, StageError> {
            let mut s = FeatureStats::new(scores.features);
            s.add_batch(&scores.sets[name].1, n)
                .map_err(|e| StageError::Failed(format!("FID features of `{name}`: {e}")))?;
            Ok(s)
        };
        for (name, fake) in fakes {
            let (real_name, real) = matching_real(reals, fake, name)?;
            let d = frechet_distance(&stats(real_name, real.len())?, &stats(name, fake.len())?)
                .map_err(|e| StageError::Failed(format!("FID of `{name}`: {e}")))?;
            let e = entry(sets, name);
            e.insert("fid".into(), serde_json::json!(d));
            e.insert("real".into(), serde_json::json!(real_name));
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

fn pick_part(d: &Dataset, part: Option<&str>, stage: &str) -> Result<ImageSet, StageError> {
    let name = match part {
        Some(p) => p.to_string(),
        None if d.parts.contains_key("images") => "images".into(),
        None if d.parts.contains_key("b") => "b".into(),
        None => d.parts.keys().next().cloned().unwrap_or_default(),
    };
    d.parts.get(&name).cloned().ok_or_else(|| {
        StageError::Failed(format!(
            "`{stage}` has no part `{name}`; parts: {}",
            d.parts.keys().cloned().collect::<Vec<_>>().join(", ")
        ))
    })
}

fn truncate(mut set: ImageSet, max: Option<usize>) -> ImageSet {
    if let Some(m) = max
        && set.len() > m
    {
        set.pixels.truncate(m * set.image_len());
    }
    set
}

fn matching_real<'a>(
    reals: &'a [(String, ImageSet)],
    fake: &ImageSet,
    name: &str,
) -> Result<(&'a str, &'a ImageSet), StageError> {
    reals
        .iter()
        .find(|(_, r)| {
            r.width == fake.width && r.height == fake.height && r.channels == fake.channels
        })
        .map(|(n, r)| (n.as_str(), r))
        .ok_or_else(|| {
            let have: Vec<String> = reals
                .iter()
                .map(|(n, r)| format!("{n} ({}x{}x{})", r.width, r.height, r.channels))
                .collect();
            StageError::Failed(format!(
                "no real set matches `{name}` ({}x{}x{}); real sets: {} — add a `downsample` stage to match sizes",
                fake.width,
                fake.height,
                fake.channels,
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
