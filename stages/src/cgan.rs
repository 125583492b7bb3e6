//! `cgan`: a conditional, auxiliary-classifier GAN on labelled images (seed 002, its
//! MNIST model; Odena et al.'s AC-GAN as Keras' example writes it).
//!
//! ```yaml
//! digits_gan:
//!   kind: cgan
//!   input: digits        # a labelled single-layout dataset (IDX, CSV or `synthetic: {variant: digits}`)
//!   epochs: 20
//! ```
//!
//! As seed 002 §4.1 describes: the generator takes noise and the class (joined: noise
//! concatenated with the one-hot class), LeakyReLU in hidden layers and tanh out; the
//! discriminator is a CNN with LeakyReLU, dropout 0.3, and two heads: real/fake (one
//! logit) and the class (softmax over the dataset's classes); weights from N(0, 0.02);
//! RMSprop with learning rate 5e-5 for both. The discriminator minimises BCE on
//! real/fake plus cross-entropy of the class of real and generated images; the generator
//! minimises BCE towards "real" plus cross-entropy towards the class it was asked for.
//!
//! Logged per step: `d_loss`, `accuracy` (the class head on the real batch), `g_loss`,
//! `fake_accuracy` (the class head on the generated batch, against the asked-for class).
//! Writes seed 002's Table 3 row (`table3.md`, `table3.csv`: discriminator loss,
//! accuracy and generator loss at the last step, beside the paper's) and the loss and
//! accuracy plots (`loss_plot.svg`, `accuracy_plot.svg`).

use burn::module::{AutodiffModule, Module};
use burn::nn::conv::{Conv2d, Conv2dConfig, ConvTranspose2d, ConvTranspose2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, Linear, LinearConfig, PaddingConfig2d};
use burn::optim::GradientsParams;
use burn::tensor::activation::sigmoid;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Tensor, TensorData};
use gantry_datasets::Dataset;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::train::backend::{OnBackend, dispatch};
use crate::train::checkpoint::Loaded;
use crate::train::conv::{conv_transpose2d_forward, conv2d_forward};
use crate::train::data::{
    Batch, Batcher, Stream, dropout_mask, images_tensor, label_tensor, latents, random_labels,
};
use crate::train::driver::{
    EXTENDABLE, Gan, Schedule, check_common, generate_set, scalar, schedule_of, train,
    training_images, write_metrics, write_outputs, write_report,
};
use crate::train::init::{Init, init};
use crate::train::log::LossLog;
use crate::train::loss::{bce_logits, cross_entropy, tensor_hits};
use crate::train::norm::{Activation, batch_norm_act};
use crate::train::optim::{
    Optim, OptimizerParams, OptimizerSpec, export_module, load_gan, resolve_optimizer, save_gan,
};
use crate::train::plot::{Series, line_plot};
use crate::train::pointwise::{leaky_relu, tanh};
use crate::{
    ArtifactType, Checked, InputSlot, ParamsError, StageContext, StageError, StageKind, write_file,
};

/// Seed 002's Table 3 (MNIST, 14,000th and last step).
const PUBLISHED: [(&str, f64); 3] = [
    ("Discriminator loss", 0.819696),
    ("Accuracy", 0.9531),
    ("Generator loss", 0.735431),
];

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct CganParams {
    #[serde(default = "default_epochs")]
    pub epochs: usize,
    #[serde(default = "default_batch")]
    pub batch_size: usize,
    #[serde(default = "default_latent")]
    pub latent_dim: usize,
    /// Discriminator width: channels of its first conv (then ×2, ×4, ×8). Default 32.
    #[serde(default = "default_d_features")]
    pub d_features: usize,
    /// Generator width: channels of its last hidden layer (the first is twice). Default 96.
    #[serde(default = "default_g_features")]
    pub features: usize,
    /// Dropout rate in the discriminator (0.3 in seed 002).
    #[serde(default = "default_dropout")]
    pub dropout: f64,
    /// Generator optimizer (default RMSprop, lr 5e-5, rho 0.9, as seed 002 in Keras).
    #[serde(default)]
    pub g_optimizer: OptimizerParams,
    /// Discriminator optimizer (same default).
    #[serde(default)]
    pub d_optimizer: OptimizerParams,
    #[serde(default = "default_init_std")]
    pub init_std: f64,
    #[serde(default = "default_checkpoint_every")]
    pub checkpoint_every: usize,
    #[serde(default = "default_sample_every")]
    pub sample_every: usize,
    #[serde(default)]
    pub sample_steps: Vec<usize>,
    /// Images to generate into the output dataset (labelled: classes in turn).
    #[serde(default = "default_samples")]
    pub samples: usize,
    /// Images per sample grid (classes in turn, so 100 shows ten of each of ten classes).
    #[serde(default = "default_grid")]
    pub grid: usize,
}

fn default_epochs() -> usize {
    20
}
fn default_batch() -> usize {
    64
}
fn default_latent() -> usize {
    100
}
fn default_d_features() -> usize {
    32
}
fn default_g_features() -> usize {
    96
}
fn default_dropout() -> f64 {
    0.3
}
fn default_init_std() -> f64 {
    0.02
}
fn default_checkpoint_every() -> usize {
    500
}
fn default_sample_every() -> usize {
    5
}
fn default_samples() -> usize {
    1000
}
fn default_grid() -> usize {
    100
}

/// Keras' RMSprop as seed 002 used it: rho 0.9, epsilon 1e-7.
fn keras_rmsprop() -> OptimizerSpec {
    let mut o = OptimizerSpec::rmsprop(5e-5, 0.9);
    o.eps = 1e-7;
    o
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CganConfig {
    pub batch_size: usize,
    pub latent_dim: usize,
    pub d_features: usize,
    pub features: usize,
    pub dropout: f64,
    pub g_optimizer: OptimizerSpec,
    pub d_optimizer: OptimizerSpec,
    pub init_std: f64,
    /// Epochs, checkpoints and samples: what may change without retraining.
    #[serde(flatten)]
    pub schedule: Schedule,
}

pub struct CganKind;

const INPUTS: &[InputSlot] = &[InputSlot {
    key: "input",
    accepts: &[ArtifactType::Dataset],
    many: false,
    required: true,
}];

impl StageKind for CganKind {
    fn name(&self) -> &'static str {
        "cgan"
    }
    fn version(&self) -> u32 {
        // 3: batch-norm parameter gradients are summed in another order (a faster
        // layout), so trained weights differ from version 2's in the last bits.
        // 4: convolutions, BatchNorm and their gradients on the CPU run through
        // `train::conv` and `train::norm` (other summation orders again).
        // 5: weight gradients summed in fixed partial sums and BatchNorm's sums and input
        // gradient in other orders and forms; LeakyReLU and tanh as one op each.
        5
    }
    fn summary(&self) -> &'static str {
        "train a conditional / auxiliary-classifier GAN on labelled images (seed 002, Table 3)"
    }
    fn inputs(&self) -> &'static [InputSlot] {
        INPUTS
    }
    fn output(&self) -> ArtifactType {
        ArtifactType::Dataset
    }
    fn uses_backend(&self) -> bool {
        true
    }
    fn extendable(&self) -> &'static [&'static str] {
        EXTENDABLE
    }
    fn params_schema(&self) -> schemars::Schema {
        schemars::schema_for!(CganParams)
    }
    fn check(
        &self,
        params: serde_json::Value,
        _base_dir: &std::path::Path,
    ) -> Result<Checked, ParamsError> {
        let (p, _) = crate::params::from_value::<CganParams>(params)?;
        check_common(p.batch_size, p.latent_dim, p.features, p.samples, p.grid)?;
        if p.d_features == 0 {
            return Err(ParamsError::invalid(&["d_features"], "must be at least 1"));
        }
        if !(0.0..1.0).contains(&p.dropout) {
            return Err(ParamsError::invalid(
                &["dropout"],
                format!("must be in [0, 1), not {}", p.dropout),
            ));
        }
        let cfg = CganConfig {
            batch_size: p.batch_size,
            latent_dim: p.latent_dim,
            d_features: p.d_features,
            features: p.features,
            dropout: p.dropout,
            g_optimizer: resolve_optimizer("g_optimizer", &p.g_optimizer, &keras_rmsprop())?,
            d_optimizer: resolve_optimizer("d_optimizer", &p.d_optimizer, &keras_rmsprop())?,
            init_std: p.init_std,
            schedule: schedule_of!(p),
        };
        Ok(Checked {
            canonical: serde_json::to_value(&cfg)
                .map_err(|e| ParamsError::invalid(&[], e.to_string()))?,
            files: Vec::new(),
        })
    }

    fn run(&self, ctx: &StageContext) -> Result<(), StageError> {
        let cfg: CganConfig = ctx.params()?;
        let input = ctx.input("input")?;
        let ds = Dataset::load(&input.dataset_file())?;
        let images = training_images(&ds, &input.stage)?;
        let labels = ds.labels.clone().ok_or_else(|| {
            StageError::Failed(format!(
                "input `{}` has no labels; `cgan` needs a labelled dataset (image folders \
                 with class subfolders, IDX with a labels file, CSV with a label column, or \
                 `synthetic: {{variant: digits}}`)",
                input.stage
            ))
        })?;
        let classes = ds
            .classes
            .len()
            .max(labels.iter().max().map_or(0, |&m| m as usize + 1));
        if classes < 2 {
            return Err(StageError::Failed(format!(
                "input `{}` has {classes} class; `cgan` needs at least 2",
                input.stage
            )));
        }
        if images.width % 4 != 0 {
            return Err(StageError::Failed(format!(
                "`cgan` needs a side divisible by 4 (28 for MNIST), not {}",
                images.width
            )));
        }
        let mut names = ds.classes.clone();
        names.resize_with(classes, String::new);
        for (i, n) in names.iter_mut().enumerate() {
            if n.is_empty() {
                *n = i.to_string();
            }
        }
        let batcher = Batcher::new(images, Some(labels), cfg.batch_size, ctx.seed);
        dispatch(
            &ctx.backend,
            &ctx.gpus,
            Job {
                ctx,
                cfg,
                batcher,
                classes,
                names,
            },
        )?
    }
}

struct Job<'a> {
    ctx: &'a StageContext,
    cfg: CganConfig,
    batcher: Batcher,
    classes: usize,
    names: Vec<String>,
}

impl OnBackend for Job<'_> {
    type Output = Result<(), StageError>;
    fn run<B: AutodiffBackend>(self, device: B::Device, label: String) -> Self::Output {
        let Job {
            ctx,
            cfg,
            batcher,
            classes,
            names,
        } = self;
        ctx.set_backend_used(&label);
        let (size, _) = batcher.size();
        let channels = batcher.channels();
        let gan = Cgan::<B>::new(&cfg, size, channels, classes, ctx.seed, &device);
        let schedule = cfg.schedule.clone();
        let out = train(ctx, &schedule, &batcher, gan, &device, label)?;
        let provenance = write_outputs(ctx, &schedule, &out, &device, &names)?;
        // The class head of the trained discriminator on generated images: for this
        // generator, and for the same generator untrained (the baseline a trained model
        // must beat).
        let trained = out.gan.generated_accuracy(ctx.seed, 500, &device)?;
        let untrained = Cgan::<B>::new(&cfg, size, channels, classes, ctx.seed, &device);
        let baseline = out.gan.judge(&untrained, ctx.seed, 500, &device)?;
        let mut extra = serde_json::Map::new();
        extra.insert("aux_accuracy_generated".into(), serde_json::json!(trained));
        extra.insert(
            "aux_accuracy_untrained_generator".into(),
            serde_json::json!(baseline),
        );
        write_metrics(ctx, &out.log, extra)?;
        write_table3(ctx, &out.log)?;
        write_plots(ctx, &out.log)?;
        write_report(
            ctx,
            &format!("conditional GAN with an auxiliary classifier, {classes} classes"),
            &schedule,
            batcher.batch_size(),
            &out.log,
            &provenance,
            &format!(
                "The discriminator's class head labels {:.1}% of generated images as the \
                 class they were asked for ({:.1}% for the untrained generator).\n\n\
                 Seed 002 Table 3 row: `table3.md`; loss and accuracy plots: \
                 `loss_plot.svg`, `accuracy_plot.svg`.\n",
                trained * 100.0,
                baseline * 100.0
            ),
        )
    }
}

#[derive(Module, Debug)]
pub struct CondGenerator<B: Backend> {
    pub fc: Linear<B>,
    pub up1: ConvTranspose2d<B>,
    pub norm1: BatchNorm<B>,
    pub up2: ConvTranspose2d<B>,
}

impl<B: Backend> CondGenerator<B> {
    fn new(
        latent: usize,
        classes: usize,
        size: usize,
        channels: usize,
        features: usize,
        device: &B::Device,
    ) -> Self {
        let base = size / 4;
        CondGenerator {
            fc: LinearConfig::new(latent + classes, 2 * features * base * base).init(device),
            up1: ConvTranspose2dConfig::new([2 * features, features], [4, 4])
                .with_stride([2, 2])
                .with_padding([1, 1])
                .with_bias(false)
                .init(device),
            norm1: BatchNormConfig::new(features).init(device),
            up2: ConvTranspose2dConfig::new([features, channels], [4, 4])
                .with_stride([2, 2])
                .with_padding([1, 1])
                .init(device),
        }
    }

    /// `zc`: noise joined with the one-hot class, [N, latent + classes].
    pub fn forward(&self, zc: Tensor<B, 2>, size: usize) -> Tensor<B, 4> {
        let n = zc.dims()[0];
        let base = size / 4;
        let h = leaky_relu(self.fc.forward(zc), 0.2);
        let c = h.dims()[1] / (base * base);
        let h = h.reshape([n, c, base, base]);
        let h = batch_norm_act(
            &self.norm1,
            conv_transpose2d_forward(&self.up1, h),
            Activation::LeakyRelu(0.2),
        );
        tanh(conv_transpose2d_forward(&self.up2, h))
    }
}

#[derive(Module, Debug)]
pub struct AuxDiscriminator<B: Backend> {
    pub convs: Vec<Conv2d<B>>,
    pub real_fake: Linear<B>,
    pub class: Linear<B>,
}

impl<B: Backend> AuxDiscriminator<B> {
    fn new(
        size: usize,
        channels: usize,
        features: usize,
        classes: usize,
        device: &B::Device,
    ) -> Self {
        let widths = [features, features * 2, features * 4, features * 8];
        let strides = [2, 1, 2, 1];
        let mut convs = Vec::new();
        let mut c = channels;
        for (w, s) in widths.into_iter().zip(strides) {
            convs.push(
                Conv2dConfig::new([c, w], [3, 3])
                    .with_stride([s, s])
                    .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                    .init(device),
            );
            c = w;
        }
        let flat = c * (size / 4) * (size / 4);
        AuxDiscriminator {
            convs,
            real_fake: LinearConfig::new(flat, 1).init(device),
            class: LinearConfig::new(flat, classes).init(device),
        }
    }

    /// Images → (real/fake logit [N], class logits [N, K]). `masks` are the dropout masks
    /// of the four conv layers (none: no dropout, for judging).
    pub fn forward(
        &self,
        x: Tensor<B, 4>,
        masks: Option<&[Tensor<B, 4>]>,
    ) -> (Tensor<B, 1>, Tensor<B, 2>) {
        let mut h = x;
        for (i, conv) in self.convs.iter().enumerate() {
            h = leaky_relu(conv2d_forward(conv, h), 0.2);
            if let Some(m) = masks {
                h = h * m[i].clone();
            }
        }
        let n = h.dims()[0];
        let flat = h.reshape([n as i32, -1]);
        let logit = self.real_fake.forward(flat.clone());
        (logit.reshape([n]), self.class.forward(flat))
    }

    /// Output shapes of the conv layers, for the dropout masks.
    fn shapes(&self, n: usize, size: usize) -> Vec<[usize; 4]> {
        let mut s = size;
        self.convs
            .iter()
            .map(|c| {
                let w = c.weight.dims()[0];
                s = s.div_ceil(c.stride[0]);
                [n, w, s, s]
            })
            .collect()
    }
}

pub struct Cgan<B: AutodiffBackend> {
    g: CondGenerator<B>,
    d: AuxDiscriminator<B>,
    g_opt: Optim<CondGenerator<B>, B>,
    d_opt: Optim<AuxDiscriminator<B>, B>,
    cfg: CganConfig,
    size: usize,
    classes: usize,
    seed: u64,
    device: B::Device,
}

/// Noise joined with the one-hot class.
fn join<B: Backend>(z: Tensor<B, 2>, labels: &[u32], classes: usize) -> Tensor<B, 2> {
    let n = labels.len();
    let mut onehot = vec![0f32; n * classes];
    for (i, &l) in labels.iter().enumerate() {
        onehot[i * classes + (l as usize).min(classes - 1)] = 1.0;
    }
    let oh = Tensor::from_data(TensorData::new(onehot, [n, classes]), &z.device());
    Tensor::cat(vec![z, oh], 1)
}

impl<B: AutodiffBackend> Cgan<B> {
    fn new(
        cfg: &CganConfig,
        size: usize,
        channels: usize,
        classes: usize,
        seed: u64,
        device: &B::Device,
    ) -> Self {
        let how = Init::Normal { std: cfg.init_std };
        Cgan {
            g: init(
                CondGenerator::new(
                    cfg.latent_dim,
                    classes,
                    size,
                    channels,
                    cfg.features,
                    device,
                ),
                how,
                seed,
                0,
                device,
            ),
            d: init(
                AuxDiscriminator::new(size, channels, cfg.d_features, classes, device),
                how,
                seed,
                1,
                device,
            ),
            g_opt: cfg.g_optimizer.init(),
            d_opt: cfg.d_optimizer.init(),
            cfg: cfg.clone(),
            size,
            classes,
            seed,
            device: device.clone(),
        }
    }

    fn masks(&self, step: usize, pass: u64, n: usize) -> Vec<Tensor<B, 4>> {
        self.d
            .shapes(n, self.size)
            .into_iter()
            .enumerate()
            .map(|(i, shape)| {
                dropout_mask(
                    self.seed,
                    (step as u64) * 16 + pass * 4 + i as u64,
                    shape,
                    self.cfg.dropout,
                    &self.device,
                )
            })
            .collect()
    }

    /// The class head of this discriminator on `n` images of `generator`, against the
    /// classes they were generated for.
    fn judge(
        &self,
        generator: &Cgan<B>,
        seed: u64,
        n: usize,
        device: &B::Device,
    ) -> Result<f64, StageError> {
        let (set, labels) = generate_set(generator, seed, Stream::Labels, n, device)?;
        let d = self.d.valid();
        let mut hits = 0;
        for start in (0..set.len()).step_by(100) {
            let idx: Vec<usize> = (start..(start + 100).min(set.len())).collect();
            let images = images_tensor::<B::InnerBackend>(&set, &idx, device);
            let (_, logits) = d.forward(images, None);
            hits += tensor_hits(logits, &labels[start..start + idx.len()]);
        }
        Ok(hits as f64 / set.len().max(1) as f64)
    }

    fn generated_accuracy(
        &self,
        seed: u64,
        n: usize,
        device: &B::Device,
    ) -> Result<f64, StageError> {
        self.judge(self, seed, n, device)
    }
}

impl<B: AutodiffBackend> Gan<B> for Cgan<B> {
    fn columns(&self) -> Vec<&'static str> {
        vec!["d_loss", "accuracy", "g_loss", "fake_accuracy", "d_real"]
    }

    fn step(&mut self, step: usize, batch: Batch<B>) -> Vec<f64> {
        let n = batch.images.dims()[0];
        let real_labels = batch.labels.unwrap_or_else(|| vec![0; n]);
        let fake_labels = random_labels(self.seed, Stream::Labels, step as u64, n, self.classes);
        let z = latents::<B>(
            self.seed,
            Stream::Latent,
            step as u64,
            n,
            self.cfg.latent_dim,
            &self.device,
        );
        let zc = join(z, &fake_labels, self.classes);
        let real_t = label_tensor::<B>(&real_labels, &self.device);
        let fake_t = label_tensor::<B>(&fake_labels, &self.device);

        // Discriminator: real/fake and the class of both.
        let fake = self.g.forward(zc.clone(), self.size).detach();
        let (rl, rc) = self.d.forward(batch.images, Some(&self.masks(step, 0, n)));
        let (fl, fc) = self.d.forward(fake, Some(&self.masks(step, 1, n)));
        let acc = tensor_hits(rc.clone().detach(), &real_labels) as f64 / n as f64;
        let fake_acc = tensor_hits(fc.clone().detach(), &fake_labels) as f64 / n as f64;
        let d_real = scalar(sigmoid(rl.clone().detach()).mean());
        let d_loss = bce_logits(rl, true)
            + bce_logits(fl, false)
            + cross_entropy(rc, real_t)
            + cross_entropy(fc, fake_t.clone());
        let d_loss_v = scalar(d_loss.clone().detach());
        let grads = GradientsParams::from_grads(d_loss.backward(), &self.d);
        self.d = self
            .d_opt
            .step(self.cfg.d_optimizer.lr, self.d.clone(), grads);

        // Generator: look real, and look like the class asked for.
        // Through a discriminator with constant weights: its weight gradients, which
        // this update never uses, are not computed.
        let (gl, gc) = self
            .d
            .clone()
            .no_grad()
            .forward(self.g.forward(zc, self.size), Some(&self.masks(step, 2, n)));
        let g_loss = bce_logits(gl, true) + cross_entropy(gc, fake_t);
        let g_loss_v = scalar(g_loss.clone().detach());
        let grads = GradientsParams::from_grads(g_loss.backward(), &self.g);
        self.g = self
            .g_opt
            .step(self.cfg.g_optimizer.lr, self.g.clone(), grads);
        vec![d_loss_v, acc, g_loss_v, fake_acc, d_real]
    }

    fn latent_dim(&self) -> usize {
        self.cfg.latent_dim
    }

    fn classes(&self) -> usize {
        self.classes
    }

    fn generate(
        &self,
        z: Tensor<B::InnerBackend, 2>,
        labels: &[u32],
    ) -> Tensor<B::InnerBackend, 4> {
        self.g
            .forward(Tensor::from_inner(join(z, labels, self.classes)), self.size)
            .inner()
    }

    fn save(&self) -> Result<Vec<(&'static str, Vec<u8>)>, StageError> {
        save_gan(&self.g, &self.g_opt, &self.d, &self.d_opt)
    }

    fn load(mut self, ck: &mut Loaded, device: &B::Device) -> Result<Self, StageError> {
        (self.g, self.g_opt, self.d, self.d_opt) =
            load_gan(ck, (self.g, self.g_opt, self.d, self.d_opt), device)?;
        Ok(self)
    }

    fn export(&self, dir: &std::path::Path) -> Result<(), StageError> {
        export_module(&self.g.valid(), &dir.join("generator.safetensors"))?;
        export_module(&self.d.valid(), &dir.join("discriminator.safetensors"))
    }
}

/// Seed 002's Table 3: the last step's discriminator loss, accuracy and generator loss,
/// beside the published row.
fn write_table3(ctx: &StageContext, log: &LossLog) -> Result<(), StageError> {
    let Some((step, _, v)) = log.rows.last() else {
        return Ok(());
    };
    let col = |name: &str| log.column(name).map(|i| v[i]).unwrap_or(f64::NAN);
    let ours = [col("d_loss"), col("accuracy"), col("g_loss")];
    let mut md = format!(
        "# Seed 002, Table 3: model performance at the last step\n\n\
         | | Discriminator loss | Accuracy | Generator loss |\n| --- | --- | --- | --- |\n\
         | {} (step {step}) | {:.6} | {:.2}% | {:.6} |\n| published (14,000th step) | {:.6} | {:.2}% | {:.6} |\n",
        ctx.name,
        ours[0],
        ours[1] * 100.0,
        ours[2],
        PUBLISHED[0].1,
        PUBLISHED[1].1 * 100.0,
        PUBLISHED[2].1
    );
    md.push_str(&format!(
        "| difference | {:+.6} | {:+.2} points | {:+.6} |\n",
        ours[0] - PUBLISHED[0].1,
        (ours[1] - PUBLISHED[1].1) * 100.0,
        ours[2] - PUBLISHED[2].1
    ));
    write_file(&ctx.out_dir.join("table3.md"), md.as_bytes())?;
    let mut csv = String::from("row,step,discriminator_loss,accuracy,generator_loss\n");
    csv.push_str(&format!(
        "{},{step},{},{},{}\n",
        ctx.name, ours[0], ours[1], ours[2]
    ));
    csv.push_str(&format!(
        "published,14000,{},{},{}\n",
        PUBLISHED[0].1, PUBLISHED[1].1, PUBLISHED[2].1
    ));
    write_file(&ctx.out_dir.join("table3.csv"), csv.as_bytes())
}

/// Seed 002's Figures 7 and 8: losses and accuracy per step.
fn write_plots(ctx: &StageContext, log: &LossLog) -> Result<(), StageError> {
    let series = |names: &[&str]| -> Vec<Series> {
        names
            .iter()
            .filter_map(|n| {
                log.column(n).map(|i| Series {
                    name: n.to_string(),
                    points: log.rows.iter().map(|(s, _, v)| (*s as f64, v[i])).collect(),
                })
            })
            .collect()
    };
    line_plot(
        &ctx.out_dir.join("loss_plot.svg"),
        &format!("{}: generator and discriminator loss", ctx.name),
        "step",
        "loss",
        &series(&["g_loss", "d_loss"]),
    )?;
    line_plot(
        &ctx.out_dir.join("accuracy_plot.svg"),
        &format!("{}: class accuracy of the discriminator", ctx.name),
        "step",
        "accuracy",
        &series(&["accuracy", "fake_accuracy"]),
    )?;
    Ok(())
}
