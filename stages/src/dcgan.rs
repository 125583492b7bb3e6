//! `dcgan`: DCGAN (Radford et al. 2016) with seed 003's `g_advantage`, the number of
//! generator updates per discriminator update.
//!
//! ```yaml
//! dcgan:
//!   kind: dcgan
//!   input: faces32          # any single-layout image dataset, square, side 2^k >= 8
//!   epochs: 20
//!   g_advantage: 2          # DCGAN-tensorflow's default 2:1
//!   matrix: { g_advantage: [1, 2, 4, 50] }
//! ```
//!
//! Losses as in DCGAN-tensorflow, which seed 003 forked: the discriminator minimises
//! BCE(D(x), 1) + BCE(D(G(z)), 0), the generator BCE(D(G(z)), 1); each of the
//! `g_advantage` generator updates of a step reuses the step's latent batch, as that
//! fork's loop did (the first one also reuses the images generated for the discriminator
//! update, as PyTorch's DCGAN example does: the generator has not changed in between,
//! so they are the same images, and the generator's BatchNorm running statistics see
//! that batch once). Logged per step: `d_loss`, `g_loss` (after the last generator
//! update), their ratio, and D's mean output on real and fake images. Writes
//! `loss_ratio.csv` and `loss_ratio.svg`: the log of the G:D loss ratio per epoch, the
//! curve of seed 003's Figure 1.

use burn::module::{AutodiffModule, Module};
use burn::optim::GradientsParams;
use burn::tensor::Tensor;
use burn::tensor::activation::sigmoid;
use burn::tensor::backend::AutodiffBackend;
use gantry_datasets::Dataset;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::train::backend::{OnBackend, dispatch};
use crate::train::checkpoint::Loaded;
use crate::train::data::{Batch, Batcher, Stream, latents};
use crate::train::driver::{
    EXTENDABLE, Gan, Schedule, check_common, scalar, schedule_of, train, training_images,
    write_metrics, write_outputs, write_report,
};
use crate::train::init::{Init, init};
use crate::train::loss::bce_logits;
use crate::train::nets::{Discriminator, Generator};
use crate::train::optim::{
    Optim, OptimizerParams, OptimizerSpec, export_module, load_gan, resolve_optimizer, save_gan,
};
use crate::train::plot::{Series, line_plot};
use crate::{
    ArtifactType, Checked, InputSlot, ParamsError, StageContext, StageError, StageKind, write_file,
};

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct DcganParams {
    /// Passes over the training set. Raising it later continues from the finished run.
    #[serde(default = "default_epochs")]
    pub epochs: usize,
    /// Images per batch (64 in DCGAN and seed 003).
    #[serde(default = "default_batch")]
    pub batch_size: usize,
    /// Generator updates per discriminator update (seed 003). Default 1.
    #[serde(default = "one")]
    pub g_advantage: usize,
    /// Latent size (100 in DCGAN).
    #[serde(default = "default_latent")]
    pub latent_dim: usize,
    /// Channels of the widest-resolution layer (`ngf`/`ndf`; 64 in DCGAN).
    #[serde(default = "default_features")]
    pub features: usize,
    /// Generator optimizer (default Adam, lr 2e-4, beta1 0.5, as in DCGAN).
    #[serde(default)]
    pub g_optimizer: OptimizerParams,
    /// Discriminator optimizer (same default).
    #[serde(default)]
    pub d_optimizer: OptimizerParams,
    /// Standard deviation of the N(0, σ) weight initialisation (0.02 in DCGAN).
    #[serde(default = "default_init_std")]
    pub init_std: f64,
    /// Save a checkpoint every this many steps (and always at the end).
    #[serde(default = "default_checkpoint_every")]
    pub checkpoint_every: usize,
    /// Write a sample grid every this many epochs (0: never).
    #[serde(default = "default_sample_every")]
    pub sample_every: usize,
    /// Also write sample grids after these steps (seed 003 shows 100 and 400).
    #[serde(default)]
    pub sample_steps: Vec<usize>,
    /// Images to generate into the output dataset (for `evaluate`).
    #[serde(default = "default_samples")]
    pub samples: usize,
    /// Images in each sample grid (from one fixed latent batch).
    #[serde(default = "default_grid")]
    pub grid: usize,
}

fn default_epochs() -> usize {
    20
}
fn default_batch() -> usize {
    64
}
fn one() -> usize {
    1
}
fn default_latent() -> usize {
    100
}
fn default_features() -> usize {
    64
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
    256
}
fn default_grid() -> usize {
    64
}

fn dcgan_optimizer() -> OptimizerSpec {
    OptimizerSpec::adam(2e-4, 0.5, 0.999)
}

pub struct DcganKind;

/// Checked params with the optimizers resolved (what the stage key is made of).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DcganConfig {
    pub batch_size: usize,
    pub g_advantage: usize,
    pub latent_dim: usize,
    pub features: usize,
    pub g_optimizer: OptimizerSpec,
    pub d_optimizer: OptimizerSpec,
    pub init_std: f64,
    /// Epochs, checkpoints and samples: what may change without retraining.
    #[serde(flatten)]
    pub schedule: Schedule,
}

const INPUTS: &[InputSlot] = &[InputSlot {
    key: "input",
    accepts: &[ArtifactType::Dataset],
    many: false,
    required: true,
}];

impl StageKind for DcganKind {
    fn name(&self) -> &'static str {
        "dcgan"
    }
    fn version(&self) -> u32 {
        // 3: batch-norm parameter gradients are summed in another order (a faster
        // layout), so trained weights differ from version 2's in the last bits.
        // 4: convolutions, BatchNorm and their gradients on the CPU run through
        // `train::conv` and `train::norm` (other summation orders again).
        // 5: weight gradients summed in fixed partial sums and BatchNorm's sums and input
        // gradient in other orders and forms; LeakyReLU and tanh as one op each; the first generator update reuses the discriminator
        // update's generated images, so the generator's BatchNorm running statistics
        // are updated once per step fewer.
        5
    }
    fn summary(&self) -> &'static str {
        "train a DCGAN with `g_advantage` generator updates per discriminator update (seed 003)"
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
        schemars::schema_for!(DcganParams)
    }
    fn check(
        &self,
        params: serde_json::Value,
        _base_dir: &std::path::Path,
    ) -> Result<Checked, ParamsError> {
        let (p, _) = crate::params::from_value::<DcganParams>(params)?;
        check_common(p.batch_size, p.latent_dim, p.features, p.samples, p.grid)?;
        if p.g_advantage == 0 {
            return Err(ParamsError::invalid(&["g_advantage"], "must be at least 1"));
        }
        let cfg = DcganConfig {
            batch_size: p.batch_size,
            g_advantage: p.g_advantage,
            latent_dim: p.latent_dim,
            features: p.features,
            g_optimizer: resolve_optimizer("g_optimizer", &p.g_optimizer, &dcgan_optimizer())?,
            d_optimizer: resolve_optimizer("d_optimizer", &p.d_optimizer, &dcgan_optimizer())?,
            init_std: p.init_std,
            schedule: schedule_of!(p),
        };
        let canonical =
            serde_json::to_value(&cfg).map_err(|e| ParamsError::invalid(&[], e.to_string()))?;
        Ok(Checked {
            canonical,
            files: Vec::new(),
        })
    }

    fn run(&self, ctx: &StageContext) -> Result<(), StageError> {
        let cfg: DcganConfig = ctx.params()?;
        let input = ctx.input("input")?;
        let ds = Dataset::load(&input.dataset_file())?;
        let images = training_images(&ds, &input.stage)?;
        let batcher = Batcher::new(images, None, cfg.batch_size, ctx.seed);
        dispatch(&ctx.backend, &ctx.gpus, Job { ctx, cfg, batcher })?
    }
}

struct Job<'a> {
    ctx: &'a StageContext,
    cfg: DcganConfig,
    batcher: Batcher,
}

impl OnBackend for Job<'_> {
    type Output = Result<(), StageError>;
    fn run<B: AutodiffBackend>(self, device: B::Device, label: String) -> Self::Output {
        let Job { ctx, cfg, batcher } = self;
        ctx.set_backend_used(&label);
        let (size, _) = batcher.size();
        let channels = batcher.channels();
        let gan = Dcgan::<B>::new(&cfg, size, channels, ctx.seed, &device)?;
        let schedule = cfg.schedule.clone();
        let out = train(ctx, &schedule, &batcher, gan, &device, label)?;
        let provenance = write_outputs(ctx, &schedule, &out, &device, &[])?;
        write_loss_ratio(ctx, &out.log)?;
        write_metrics(ctx, &out.log, serde_json::Map::new())?;
        write_report(
            ctx,
            &format!("DCGAN, g_advantage {}:1", cfg.g_advantage),
            &schedule,
            batcher.batch_size(),
            &out.log,
            &provenance,
            "Log of the G:D loss ratio per epoch (seed 003, Figure 1): `loss_ratio.csv`, \
             `loss_ratio.svg`.\n",
        )
    }
}

/// The two networks and their optimizers.
pub struct Dcgan<B: AutodiffBackend> {
    g: Generator<B>,
    d: Discriminator<B>,
    g_opt: Optim<Generator<B>, B>,
    d_opt: Optim<Discriminator<B>, B>,
    g_lr: f64,
    d_lr: f64,
    g_advantage: usize,
    latent_dim: usize,
    seed: u64,
    device: B::Device,
}

impl<B: AutodiffBackend> Dcgan<B> {
    pub fn new(
        cfg: &DcganConfig,
        size: usize,
        channels: usize,
        seed: u64,
        device: &B::Device,
    ) -> Result<Self, StageError> {
        let how = Init::Normal { std: cfg.init_std };
        let g = init(
            Generator::new(cfg.latent_dim, size, channels, cfg.features, device)?,
            how,
            seed,
            0,
            device,
        );
        let d = init(
            Discriminator::new(size, channels, cfg.features, true, device)?,
            how,
            seed,
            1,
            device,
        );
        Ok(Dcgan {
            g,
            d,
            g_opt: cfg.g_optimizer.init(),
            d_opt: cfg.d_optimizer.init(),
            g_lr: cfg.g_optimizer.lr,
            d_lr: cfg.d_optimizer.lr,
            g_advantage: cfg.g_advantage,
            latent_dim: cfg.latent_dim,
            seed,
            device: device.clone(),
        })
    }
}

impl<B: AutodiffBackend> Gan<B> for Dcgan<B> {
    fn columns(&self) -> Vec<&'static str> {
        vec!["d_loss", "g_loss", "g_d_ratio", "d_real", "d_fake"]
    }

    fn step(&mut self, step: usize, batch: Batch<B>) -> Vec<f64> {
        let n = batch.images.dims()[0];
        let z = latents::<B>(
            self.seed,
            Stream::Latent,
            step as u64,
            n,
            self.latent_dim,
            &self.device,
        );
        // Discriminator update on real and (detached) generated images.
        let fake = self.g.forward(z.clone());
        let d_real = self.d.forward(batch.images);
        let d_fake = self.d.forward(fake.clone().detach());
        let d_real_p = scalar(sigmoid(d_real.clone().detach()).mean());
        let d_fake_p = scalar(sigmoid(d_fake.clone().detach()).mean());
        let d_loss = bce_logits(d_real, true) + bce_logits(d_fake, false);
        let d_loss_v = scalar(d_loss.clone().detach());
        let grads = GradientsParams::from_grads(d_loss.backward(), &self.d);
        self.d = self.d_opt.step(self.d_lr, self.d.clone(), grads);
        // `g_advantage` generator updates on the same latent batch, through a copy of
        // the discriminator whose weights are constants: the backward pass then skips
        // the discriminator's weight gradients, which the generator update never
        // uses (its batch statistics still update the discriminator's running ones).
        // The first update backpropagates through the images the discriminator was just
        // shown (the generator has not changed since, so generating them again would
        // give the same images and gradients, at the cost of a forward pass); each
        // later one generates them again with the updated generator.
        let mut g_loss_v = f64::NAN;
        let d = self.d.clone().no_grad();
        let mut fake = Some(fake);
        for _ in 0..self.g_advantage {
            let images = fake.take().unwrap_or_else(|| self.g.forward(z.clone()));
            let g_loss = bce_logits(d.forward(images), true);
            g_loss_v = scalar(g_loss.clone().detach());
            let grads = GradientsParams::from_grads(g_loss.backward(), &self.g);
            self.g = self.g_opt.step(self.g_lr, self.g.clone(), grads);
        }
        vec![d_loss_v, g_loss_v, g_loss_v / d_loss_v, d_real_p, d_fake_p]
    }

    fn latent_dim(&self) -> usize {
        self.latent_dim
    }

    fn generate(
        &self,
        z: Tensor<B::InnerBackend, 2>,
        _labels: &[u32],
    ) -> Tensor<B::InnerBackend, 4> {
        self.g.forward(Tensor::from_inner(z)).inner()
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

/// Seed 003's Figure 1: log of the generator:discriminator loss ratio per epoch.
fn write_loss_ratio(
    ctx: &StageContext,
    log: &crate::train::log::LossLog,
) -> Result<(), StageError> {
    let (Some(d), Some(g)) = (log.column("d_loss"), log.column("g_loss")) else {
        return Ok(());
    };
    let mut csv = String::from("epoch,d_loss,g_loss,log_g_d_ratio\n");
    let mut points = Vec::new();
    for (epoch, means) in log.epoch_means() {
        let ratio = (means[g] / means[d]).ln();
        csv.push_str(&format!("{epoch},{},{},{ratio}\n", means[d], means[g]));
        points.push((epoch as f64, ratio));
    }
    write_file(&ctx.out_dir.join("loss_ratio.csv"), csv.as_bytes())?;
    line_plot(
        &ctx.out_dir.join("loss_ratio.svg"),
        &format!("{}: log(G loss / D loss) per epoch", ctx.name),
        "epoch",
        "log ratio",
        &[Series {
            name: ctx.name.clone(),
            points,
        }],
    )
}
