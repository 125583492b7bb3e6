//! `classifier`: train a small CNN on a labelled dataset — the usual feature extractor for
//! scoring MNIST-like data with the Inception Score and FID when Inception-v3 does not
//! fit the images — and use it from `evaluate`.
//!
//! ```yaml
//! judge:
//!   kind: classifier
//!   input: digits         # labelled single-layout dataset
//!   epochs: 10
//! evaluate:
//!   kind: evaluate
//!   real: digits
//!   fake: cgan
//!   classifier: judge
//!   metrics: [inception_score, fid, class_accuracy]
//! ```
//!
//! Network: two blocks of 3×3 conv + ReLU + 2×2 max-pool (`features`, 2·`features`
//! channels), a 128-unit ReLU layer (the features FID uses) and a linear layer to the
//! classes (whose softmax the Inception Score uses). Adam (lr 1e-3); a seeded tenth of
//! the images is held out and the accuracy on it reported. Writes `classifier.safetensors`
//! (weights by module path), `classifier.json` (what is needed to rebuild it),
//! `metrics.json` (`train_accuracy`, `test_accuracy`) and `report.md`.

use std::path::Path;

use burn::module::{AutodiffModule, Module};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::nn::{Linear, LinearConfig, PaddingConfig2d};
use burn::optim::GradientsParams;
use burn::tensor::Tensor;
use burn::tensor::activation::{relu, softmax};
use burn::tensor::backend::{AutodiffBackend, Backend};
use gantry_datasets::{Dataset, ImageSet};
use rand::seq::SliceRandom;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::train::backend::{OnBackend, dispatch};
use crate::train::conv::conv2d_forward;
use crate::train::data::{Batcher, Stream, images_tensor, label_tensor, rng};
use crate::train::init::{Init, init};
use crate::train::loss::{cross_entropy, hits, tensor_hits};
use crate::train::optim::OptimizerSpec;
use crate::{
    ArtifactType, Checked, InputSlot, ParamsError, StageContext, StageError, StageKind, write_file,
    write_json,
};

/// Width of the feature layer FID is computed on.
pub const FEATURES: usize = 128;
/// The description of a trained classifier beside its weights.
pub const SPEC_FILE: &str = "classifier.json";
pub const WEIGHTS_FILE: &str = "classifier.safetensors";

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct ClassifierParams {
    #[serde(default = "default_epochs")]
    pub epochs: usize,
    #[serde(default = "default_batch")]
    pub batch_size: usize,
    /// Channels of the first conv block (the second has twice as many). Default 32.
    #[serde(default = "default_features")]
    pub features: usize,
    /// Adam learning rate.
    #[serde(default = "default_lr")]
    pub lr: f64,
    /// Fraction of the images held out to measure accuracy. Default 0.1.
    #[serde(default = "default_holdout")]
    pub holdout: f64,
}

fn default_epochs() -> usize {
    10
}
fn default_batch() -> usize {
    64
}
fn default_features() -> usize {
    32
}
fn default_lr() -> f64 {
    1e-3
}
fn default_holdout() -> f64 {
    0.1
}

/// What rebuilding the network needs.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ClassifierSpec {
    pub width: usize,
    pub height: usize,
    pub channels: usize,
    pub features: usize,
    pub classes: Vec<String>,
}

#[derive(Module, Debug)]
pub struct SmallCnn<B: Backend> {
    pub conv1: Conv2d<B>,
    pub conv2: Conv2d<B>,
    pub pool: MaxPool2d,
    pub hidden: Linear<B>,
    pub out: Linear<B>,
}

impl<B: Backend> SmallCnn<B> {
    pub fn new(spec: &ClassifierSpec, device: &B::Device) -> Self {
        let f = spec.features;
        let conv = |i, o| {
            Conv2dConfig::new([i, o], [3, 3])
                .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                .init(device)
        };
        let flat = 2 * f * (spec.height / 4) * (spec.width / 4);
        SmallCnn {
            conv1: conv(spec.channels, f),
            conv2: conv(f, 2 * f),
            pool: MaxPool2dConfig::new([2, 2]).init(),
            hidden: LinearConfig::new(flat, FEATURES).init(device),
            out: LinearConfig::new(FEATURES, spec.classes.len()).init(device),
        }
    }

    /// Images in [-1, 1] → (features [N, 128], class logits [N, K]).
    pub fn forward(&self, x: Tensor<B, 4>) -> (Tensor<B, 2>, Tensor<B, 2>) {
        let h = self.pool.forward(relu(conv2d_forward(&self.conv1, x)));
        let h = self.pool.forward(relu(conv2d_forward(&self.conv2, h)));
        let n = h.dims()[0];
        let feats = relu(self.hidden.forward(h.reshape([n as i32, -1])));
        let logits = self.out.forward(feats.clone());
        (feats, logits)
    }
}

pub struct ClassifierKind;

const INPUTS: &[InputSlot] = &[InputSlot {
    key: "input",
    accepts: &[ArtifactType::Dataset],
    many: false,
    required: true,
}];

impl StageKind for ClassifierKind {
    fn name(&self) -> &'static str {
        "classifier"
    }
    fn version(&self) -> u32 {
        // 2: convolutions and their gradients on the CPU run through `train::conv`, which
        // sums in another order than burn's.
        // 3: weight gradients summed in fixed partial sums (another order again).
        3
    }
    fn summary(&self) -> &'static str {
        "train a small CNN on labelled images, for the Inception Score and FID of `evaluate`"
    }
    fn inputs(&self) -> &'static [InputSlot] {
        INPUTS
    }
    fn output(&self) -> ArtifactType {
        ArtifactType::Model
    }
    fn uses_backend(&self) -> bool {
        true
    }
    fn params_schema(&self) -> schemars::Schema {
        schemars::schema_for!(ClassifierParams)
    }
    fn check(&self, params: serde_json::Value, _base_dir: &Path) -> Result<Checked, ParamsError> {
        let (p, canonical) = crate::params::from_value::<ClassifierParams>(params)?;
        for (key, v) in [("batch_size", p.batch_size), ("features", p.features)] {
            if v == 0 {
                return Err(ParamsError::invalid(&[key], "must be at least 1"));
            }
        }
        if !(p.lr > 0.0 && p.lr.is_finite()) {
            return Err(ParamsError::invalid(&["lr"], "must be a positive number"));
        }
        if !(0.0..0.9).contains(&p.holdout) {
            return Err(ParamsError::invalid(&["holdout"], "must be in [0, 0.9)"));
        }
        Ok(Checked {
            canonical,
            files: Vec::new(),
        })
    }

    fn run(&self, ctx: &StageContext) -> Result<(), StageError> {
        let p: ClassifierParams = ctx.params()?;
        let input = ctx.input("input")?;
        let ds = Dataset::load(&input.dataset_file())?;
        let images = ds.parts.get("images").ok_or_else(|| {
            StageError::Failed(format!(
                "input `{}` is a {} dataset; `classifier` needs a single labelled set",
                input.stage,
                ds.layout.as_str()
            ))
        })?;
        let labels = ds
            .labels
            .clone()
            .ok_or_else(|| StageError::Failed(format!("input `{}` has no labels", input.stage)))?;
        if images.width % 4 != 0 || images.height % 4 != 0 {
            return Err(StageError::Failed(format!(
                "`classifier` needs sides divisible by 4, not {}x{}",
                images.width, images.height
            )));
        }
        let k = ds
            .classes
            .len()
            .max(labels.iter().max().map_or(0, |&m| m as usize + 1));
        let mut classes = ds.classes.clone();
        classes.resize_with(k, String::new);
        for (i, c) in classes.iter_mut().enumerate() {
            if c.is_empty() {
                *c = i.to_string();
            }
        }
        let spec = ClassifierSpec {
            width: images.width as usize,
            height: images.height as usize,
            channels: images.channels as usize,
            features: p.features,
            classes,
        };
        // A seeded split: the last `holdout` of a permutation is the test set.
        let mut order: Vec<usize> = (0..images.len()).collect();
        order.shuffle(&mut rng(ctx.seed, Stream::Shuffle, u64::MAX));
        let n_test = ((images.len() as f64) * p.holdout).round() as usize;
        let (train_idx, test_idx) = order.split_at(images.len() - n_test);
        let pick = |idx: &[usize]| {
            let mut set = ImageSet::new(images.width, images.height, images.channels);
            for &i in idx {
                set.push(images.image(i));
            }
            (set, idx.iter().map(|&i| labels[i]).collect::<Vec<u32>>())
        };
        let (train_set, train_labels) = pick(train_idx);
        let (test_set, test_labels) = pick(test_idx);
        dispatch(
            &ctx.backend,
            &ctx.gpus,
            Job {
                ctx,
                p,
                spec,
                train: (train_set, train_labels),
                test: (test_set, test_labels),
            },
        )?
    }
}

struct Job<'a> {
    ctx: &'a StageContext,
    p: ClassifierParams,
    spec: ClassifierSpec,
    train: (ImageSet, Vec<u32>),
    test: (ImageSet, Vec<u32>),
}

impl OnBackend for Job<'_> {
    type Output = Result<(), StageError>;
    fn run<B: AutodiffBackend>(self, device: B::Device, label: String) -> Self::Output {
        let Job {
            ctx,
            p,
            spec,
            train,
            test,
        } = self;
        ctx.set_backend_used(&label);
        let train_len = train.0.len();
        let train = Batcher::new(train.0, Some(train.1), p.batch_size, ctx.seed);
        let mut model = init(
            SmallCnn::<B>::new(&spec, &device),
            Init::Uniform,
            ctx.seed,
            0,
            &device,
        );
        let mut optim = OptimizerSpec::adam(p.lr, 0.9, 0.999).init::<B, SmallCnn<B>>();
        let spe = train.steps_per_epoch();
        let total = p.epochs * spe;
        ctx.progress.set_length(total as u64);
        let mut train_hits = (0usize, 0usize);
        for step in 0..total {
            ctx.check_cancelled()?;
            let batch = train.batch::<B>(step, &device);
            let labels = batch.labels.unwrap_or_default();
            let (_, logits) = model.forward(batch.images);
            if step + spe >= total {
                // Accuracy over the last epoch.
                let hits = tensor_hits(logits.clone().detach().inner(), &labels);
                train_hits = (train_hits.0 + hits, train_hits.1 + labels.len());
            }
            let loss = cross_entropy(logits, label_tensor::<B>(&labels, &device));
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            model = optim.step(p.lr, model, grads);
            ctx.progress.inc(1);
        }
        let inner = model.valid();
        let test_acc = if test.0.is_empty() {
            None
        } else {
            let (probs, _) = apply(&inner, &test.0, &device)?;
            let k = spec.classes.len();
            let correct = hits(&probs, k, &test.1);
            Some(correct as f64 / test.1.len() as f64)
        };
        let train_acc = train_hits.0 as f64 / train_hits.1.max(1) as f64;
        crate::train::optim::export_module(&inner, &ctx.out_dir.join(WEIGHTS_FILE))?;
        write_json(
            &ctx.out_dir.join(SPEC_FILE),
            &serde_json::to_value(&spec).map_err(|e| StageError::Failed(e.to_string()))?,
        )?;
        write_json(
            &ctx.out_dir.join(crate::METRICS_FILE),
            &serde_json::json!({ "train_accuracy": train_acc, "test_accuracy": test_acc }),
        )?;
        let md = format!(
            "# {}: classifier, {} classes\n\n{} epochs of {} images on {label}; accuracy on \
             the last epoch {:.2}%, on {} held-out images {}.\n",
            ctx.name,
            spec.classes.len(),
            p.epochs,
            train_len,
            train_acc * 100.0,
            test.1.len(),
            test_acc.map_or("—".to_string(), |a| format!("{:.2}%", a * 100.0))
        );
        write_file(&ctx.out_dir.join(crate::REPORT_FILE), md.as_bytes())
    }
}

/// Class probabilities [N·K] and features [N·128] of every image of `set`, in batches.
pub fn apply<B: Backend>(
    model: &SmallCnn<B>,
    set: &ImageSet,
    device: &B::Device,
) -> Result<(Vec<f32>, Vec<f32>), StageError> {
    let mut probs = Vec::new();
    let mut feats = Vec::new();
    for start in (0..set.len()).step_by(256) {
        let idx: Vec<usize> = (start..(start + 256).min(set.len())).collect();
        let (f, logits) = model.forward(images_tensor::<B>(set, &idx, device));
        let read = |t: Tensor<B, 2>| -> Result<Vec<f32>, StageError> {
            t.into_data()
                .convert::<f32>()
                .into_vec()
                .map_err(|e| StageError::Failed(format!("reading classifier outputs: {e:?}")))
        };
        probs.extend(read(softmax(logits, 1))?);
        feats.extend(read(f)?);
    }
    Ok((probs, feats))
}

/// A trained classifier read back from a `classifier` stage's outputs.
pub struct Trained {
    pub spec: ClassifierSpec,
    pub model: SmallCnn<burn::backend::Flex>,
}

/// Read `classifier.json` and the weights from `dir`; every tensor of the network must be
/// in the file with its shape.
pub fn load(dir: &Path) -> Result<Trained, StageError> {
    use burn_store::{ModuleSnapshot, SafetensorsStore};
    let spec_path = dir.join(SPEC_FILE);
    let spec: ClassifierSpec = serde_json::from_slice(
        &std::fs::read(&spec_path).map_err(|e| StageError::io(&spec_path, e))?,
    )
    .map_err(|e| StageError::Failed(format!("{}: {e}", spec_path.display())))?;
    let device = Default::default();
    let mut model = SmallCnn::<burn::backend::Flex>::new(&spec, &device);
    let weights = dir.join(WEIGHTS_FILE);
    let mut store = SafetensorsStore::from_file(&weights);
    let applied = model
        .load_from(&mut store)
        .map_err(|e| StageError::Failed(format!("{}: {e}", weights.display())))?;
    if !applied.missing.is_empty() || !applied.errors.is_empty() {
        return Err(StageError::Failed(format!(
            "{}: does not fit the classifier in {} (missing: {:?}; errors: {:?})",
            weights.display(),
            SPEC_FILE,
            applied.missing,
            applied.errors
        )));
    }
    Ok(Trained { spec, model })
}
