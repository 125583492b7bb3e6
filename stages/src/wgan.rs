//! `wgan`: Wasserstein GAN with weight clipping (Arjovsky et al. 2017) or with the
//! gradient penalty (WGAN-GP, Gulrajani et al. 2017), as seed 004 describes them.
//!
//! ```yaml
//! wgan:
//!   kind: wgan
//!   input: faces32
//!   variant: gp            # clip | gp
//!   n_critic: 5            # critic updates per generator update
//!   lambda: 10             # gp only
//!   clip: 0.01             # clip only
//! ```
//!
//! One step is one critic update on one batch; the generator is updated after every
//! `n_critic` steps. Defaults follow the papers: `clip` uses RMSprop (lr 5e-5) and a
//! critic with BatchNorm; `gp` uses Adam (lr 1e-4, beta1 0, beta2 0.9) and a critic
//! without normalisation (a per-sample penalty needs per-sample outputs).
//!
//! ## The gradient penalty without double backward
//!
//! burn 0.21 has no second-order autodiff through its layers, so the penalty
//! λ·E[(‖∇ₓD(x̂)‖ − 1)²] is computed in an exact first-order form: one backward pass gives
//! g = ∇ₓD(x̂) and its detached direction u = g/‖g‖; then the central difference
//! s = (D(x̂ + εu) − D(x̂ − εu)) / 2ε equals ‖g‖ up to O(ε²), and because u is the unit
//! gradient, the gradient of s with respect to the critic's parameters equals that of ‖g‖
//! (d‖g‖/dθ = u·dg/dθ, and ds/dθ = u·dg/dθ + O(ε²)). The penalty λ·E[(s − 1)²] therefore
//! has the right value and the right parameter gradient; `tests/gradient_penalty.rs`
//! checks the gradient against finite differences of the true penalty.

use burn::module::{AutodiffModule, Module};
use burn::optim::GradientsParams;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{ElementConversion, Tensor, TensorData};
use gantry_datasets::Dataset;
use rand::Rng;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::train::backend::{OnBackend, dispatch};
use crate::train::checkpoint::Loaded;
use crate::train::data::{Batch, Batcher, Stream, latents, rng};
use crate::train::driver::{
    EXTENDABLE, Gan, Schedule, check_common, scalar, schedule_of, train, training_images,
    write_metrics, write_outputs, write_report,
};
use crate::train::init::{Init, clip_weights, init};
use crate::train::nets::{Discriminator, Generator};
use crate::train::optim::{
    Optim, OptimizerParams, OptimizerSpec, export_module, load_gan, resolve_optimizer, save_gan,
};
use crate::{ArtifactType, Checked, InputSlot, ParamsError, StageContext, StageError, StageKind};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Variant {
    /// Weight clipping (the original WGAN).
    Clip,
    /// Gradient penalty (WGAN-GP).
    Gp,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct WganParams {
    /// `clip` or `gp` (default).
    #[serde(default = "default_variant")]
    pub variant: Variant,
    /// Critic updates per generator update (5 in both papers).
    #[serde(default = "default_n_critic")]
    pub n_critic: usize,
    /// Gradient penalty weight λ (`gp`; 10 in WGAN-GP).
    #[serde(default = "default_lambda")]
    pub lambda: f64,
    /// Step ε of the central difference that stands in for the gradient norm (`gp`), in
    /// units of the input scale ([-1, 1] images).
    #[serde(default = "default_gp_epsilon")]
    pub gp_epsilon: f64,
    /// Weights are clamped to [-clip, clip] after each critic update (`clip`; 0.01).
    #[serde(default = "default_clip")]
    pub clip: f64,
    #[serde(default = "default_epochs")]
    pub epochs: usize,
    #[serde(default = "default_batch")]
    pub batch_size: usize,
    #[serde(default = "default_latent")]
    pub latent_dim: usize,
    #[serde(default = "default_features")]
    pub features: usize,
    /// Generator optimizer (default by variant, see above).
    #[serde(default)]
    pub g_optimizer: OptimizerParams,
    /// Critic optimizer (default by variant).
    #[serde(default)]
    pub d_optimizer: OptimizerParams,
    /// Standard deviation of an N(0, σ) weight initialisation; `null` (the default for
    /// `gp`) uses PyTorch's default initialisation, as the WGAN-GP code did. With
    /// N(0, 0.02) a critic starts with ‖∇ₓD‖ ≈ 0.01 and the penalty dominates the first
    /// hundreds of steps.
    #[serde(default)]
    pub init_std: Option<f64>,
    #[serde(default = "default_checkpoint_every")]
    pub checkpoint_every: usize,
    #[serde(default = "default_sample_every")]
    pub sample_every: usize,
    #[serde(default)]
    pub sample_steps: Vec<usize>,
    #[serde(default = "default_samples")]
    pub samples: usize,
    #[serde(default = "default_grid")]
    pub grid: usize,
}

fn default_variant() -> Variant {
    Variant::Gp
}
fn default_n_critic() -> usize {
    5
}
fn default_lambda() -> f64 {
    10.0
}
fn default_gp_epsilon() -> f64 {
    1e-3
}
fn default_clip() -> f64 {
    0.01
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
fn default_features() -> usize {
    64
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

/// Checked params with the optimizers resolved.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WganConfig {
    pub variant: Variant,
    pub n_critic: usize,
    pub lambda: f64,
    pub gp_epsilon: f64,
    pub clip: f64,
    pub batch_size: usize,
    pub latent_dim: usize,
    pub features: usize,
    pub g_optimizer: OptimizerSpec,
    pub d_optimizer: OptimizerSpec,
    pub init_std: Option<f64>,
    /// Epochs, checkpoints and samples: what may change without retraining.
    #[serde(flatten)]
    pub schedule: Schedule,
}

pub struct WganKind;

const INPUTS: &[InputSlot] = &[InputSlot {
    key: "input",
    accepts: &[ArtifactType::Dataset],
    many: false,
    required: true,
}];

impl StageKind for WganKind {
    fn name(&self) -> &'static str {
        "wgan"
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
        "train a WGAN with weight clipping or gradient penalty (seed 004)"
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
        schemars::schema_for!(WganParams)
    }
    fn check(
        &self,
        params: serde_json::Value,
        _base_dir: &std::path::Path,
    ) -> Result<Checked, ParamsError> {
        let (p, _) = crate::params::from_value::<WganParams>(params)?;
        check_common(p.batch_size, p.latent_dim, p.features, p.samples, p.grid)?;
        if p.n_critic == 0 {
            return Err(ParamsError::invalid(&["n_critic"], "must be at least 1"));
        }
        for (key, v) in [
            ("lambda", p.lambda),
            ("gp_epsilon", p.gp_epsilon),
            ("clip", p.clip),
        ] {
            if !(v > 0.0 && v.is_finite()) {
                return Err(ParamsError::invalid(
                    &[key],
                    format!("must be positive, not {v}"),
                ));
            }
        }
        let defaults = match p.variant {
            Variant::Clip => OptimizerSpec::rmsprop(5e-5, 0.99),
            Variant::Gp => OptimizerSpec::adam(1e-4, 0.0, 0.9),
        };
        let cfg = WganConfig {
            variant: p.variant,
            n_critic: p.n_critic,
            lambda: p.lambda,
            gp_epsilon: p.gp_epsilon,
            clip: p.clip,
            batch_size: p.batch_size,
            latent_dim: p.latent_dim,
            features: p.features,
            g_optimizer: resolve_optimizer("g_optimizer", &p.g_optimizer, &defaults)?,
            d_optimizer: resolve_optimizer("d_optimizer", &p.d_optimizer, &defaults)?,
            init_std: match (p.init_std, p.variant) {
                (Some(s), _) => Some(s),
                (None, Variant::Clip) => Some(0.02),
                (None, Variant::Gp) => None,
            },
            schedule: schedule_of!(p),
        };
        Ok(Checked {
            canonical: serde_json::to_value(&cfg)
                .map_err(|e| ParamsError::invalid(&[], e.to_string()))?,
            files: Vec::new(),
        })
    }

    fn run(&self, ctx: &StageContext) -> Result<(), StageError> {
        let cfg: WganConfig = ctx.params()?;
        let input = ctx.input("input")?;
        let ds = Dataset::load(&input.dataset_file())?;
        let images = training_images(&ds, &input.stage)?;
        let batcher = Batcher::new(images, None, cfg.batch_size, ctx.seed);
        dispatch(&ctx.backend, &ctx.gpus, Job { ctx, cfg, batcher })?
    }
}

struct Job<'a> {
    ctx: &'a StageContext,
    cfg: WganConfig,
    batcher: Batcher,
}

impl OnBackend for Job<'_> {
    type Output = Result<(), StageError>;
    fn run<B: AutodiffBackend>(self, device: B::Device, label: String) -> Self::Output {
        let Job { ctx, cfg, batcher } = self;
        ctx.set_backend_used(&label);
        let (size, _) = batcher.size();
        let gan = Wgan::<B>::new(&cfg, size, batcher.channels(), ctx.seed, &device)?;
        let schedule = cfg.schedule.clone();
        let out = train(ctx, &schedule, &batcher, gan, &device, label)?;
        let provenance = write_outputs(ctx, &schedule, &out, &device, &[])?;
        write_metrics(ctx, &out.log, serde_json::Map::new())?;
        let title = match cfg.variant {
            Variant::Clip => format!(
                "WGAN, weight clipping at {}, n_critic {}",
                cfg.clip, cfg.n_critic
            ),
            Variant::Gp => format!("WGAN-GP, lambda {}, n_critic {}", cfg.lambda, cfg.n_critic),
        };
        write_report(
            ctx,
            &title,
            &schedule,
            batcher.batch_size(),
            &out.log,
            &provenance,
            "`wasserstein` is the critic's estimate E[D(real)] − E[D(fake)]; it should \
             shrink as the generator improves.\n",
        )
    }
}

pub struct Wgan<B: AutodiffBackend> {
    pub g: Generator<B>,
    pub d: Discriminator<B>,
    g_opt: Optim<Generator<B>, B>,
    d_opt: Optim<Discriminator<B>, B>,
    cfg: WganConfig,
    seed: u64,
    device: B::Device,
}

impl<B: AutodiffBackend> Wgan<B> {
    pub fn new(
        cfg: &WganConfig,
        size: usize,
        channels: usize,
        seed: u64,
        device: &B::Device,
    ) -> Result<Self, StageError> {
        let how = match cfg.init_std {
            Some(std) => Init::Normal { std },
            None => Init::Uniform,
        };
        let norm = cfg.variant == Variant::Clip;
        Ok(Wgan {
            g: init(
                Generator::new(cfg.latent_dim, size, channels, cfg.features, device)?,
                how,
                seed,
                0,
                device,
            ),
            d: init(
                Discriminator::new(size, channels, cfg.features, norm, device)?,
                how,
                seed,
                1,
                device,
            ),
            g_opt: cfg.g_optimizer.init(),
            d_opt: cfg.d_optimizer.init(),
            cfg: cfg.clone(),
            seed,
            device: device.clone(),
        })
    }
}

/// x̂ = a·real + (1 − a)·fake with one a ~ U[0, 1] per image, drawn from (seed, step).
pub fn interpolate<B: burn::tensor::backend::Backend>(
    real: Tensor<B, 4>,
    fake: Tensor<B, 4>,
    seed: u64,
    step: u64,
) -> Tensor<B, 4> {
    let n = real.dims()[0];
    let mut r = rng(seed, Stream::Mix, step);
    let a: Vec<f32> = (0..n).map(|_| r.random::<f32>()).collect();
    let a = Tensor::<B, 4>::from_data(TensorData::new(a, [n, 1, 1, 1]), &real.device());
    real * a.clone() + fake * (a.neg() + 1.0)
}

/// Per-image ‖∇ₓD(x)‖ and the unit direction u, from one first-order backward pass.
pub fn input_gradient<B: AutodiffBackend>(
    d: &Discriminator<B>,
    x: Tensor<B, 4>,
) -> (Tensor<B::InnerBackend, 1>, Tensor<B, 4>) {
    let x = x.detach().require_grad();
    let grads = d.forward(x.clone()).sum().backward();
    let g = x.grad(&grads).unwrap_or_else(|| x.inner().zeros_like());
    let n = g.dims()[0];
    let norm = g
        .clone()
        .powi_scalar(2)
        .reshape([n as i32, -1])
        .sum_dim(1)
        .sqrt(); // [n, 1]
    let u = g / norm.clone().reshape([n, 1, 1, 1]).clamp_min(1e-12);
    (norm.reshape([n]), Tensor::from_inner(u))
}

/// The gradient penalty λ·E[(‖∇ₓD(x̂)‖ − 1)²] in the first-order form described in the
/// module documentation; differentiable with respect to the critic's parameters.
///
/// Images whose x̂ ± εu lie on different sides of a LeakyReLU kink are left out of the
/// mean: there the central difference is not the gradient norm, and its parameter
/// gradient carries a jump of order 1/ε that would swamp the others. Returns the penalty,
/// the per-image slopes s (≈ ‖∇ₓD‖) and the fraction of images left out.
pub fn gradient_penalty<B: AutodiffBackend>(
    d: &Discriminator<B>,
    x_hat: Tensor<B, 4>,
    lambda: f64,
    eps: f64,
) -> (Tensor<B, 1>, Tensor<B, 1>, f64) {
    let x_hat = x_hat.detach();
    let n = x_hat.dims()[0];
    let (_, u) = input_gradient(d, x_hat.clone());
    let step = u * eps;
    let (plus, pre_plus) = d.forward_traced(x_hat.clone() + step.clone(), true);
    let (minus, pre_minus) = d.forward_traced(x_hat - step, true);
    // 1 for images whose activation pattern is the same at both ends, else 0.
    let mut flips = Tensor::<B::InnerBackend, 1>::zeros([n], &plus.device());
    for (p, m) in pre_plus.into_iter().zip(pre_minus) {
        let changed = (p.inner().sign() - m.inner().sign()).abs();
        flips = flips + changed.reshape([n as i32, -1]).sum_dim(1).reshape([n]);
    }
    let keep = flips.equal_elem(0.0).float();
    let kept = keep.clone().sum().into_scalar().elem::<f64>();
    let keep = Tensor::<B, 1>::from_inner(keep);
    let slope = (plus - minus) / (2.0 * eps);
    let penalty = ((slope.clone() - 1.0).powi_scalar(2) * keep).sum() * (lambda / kept.max(1.0));
    (penalty, slope, 1.0 - kept / n as f64)
}

impl<B: AutodiffBackend> Gan<B> for Wgan<B> {
    fn columns(&self) -> Vec<&'static str> {
        vec![
            "critic_loss",
            "g_loss",
            "wasserstein",
            "gp",
            "grad_norm",
            "gp_at_kinks",
        ]
    }

    fn step(&mut self, step: usize, batch: Batch<B>) -> Vec<f64> {
        let n = batch.images.dims()[0];
        let dim = self.cfg.latent_dim;
        let z = latents::<B>(self.seed, Stream::Latent, step as u64, n, dim, &self.device);
        let fake = self.g.forward(z).detach();
        let real = batch.images;
        // The penalty first: its input-gradient pass runs a backward of its own, and burn's
        // autodiff frees the graph nodes of the critic's parameters on backward, so forward
        // passes built before it would lose their path to the parameters.
        // The clip variant has no penalty pass: its gp, slope and kink share stay 0.
        let (mut gp_v, mut norm_v, mut at_kinks) = (0.0, 0.0, 0.0);
        let gp = if self.cfg.variant == Variant::Gp {
            let x_hat = interpolate(real.clone(), fake.clone(), self.seed, step as u64);
            let (gp, slope, skipped) =
                gradient_penalty(&self.d, x_hat, self.cfg.lambda, self.cfg.gp_epsilon);
            gp_v = scalar(gp.clone().detach());
            norm_v = scalar(slope.detach().mean());
            at_kinks = skipped;
            Some(gp)
        } else {
            None
        };
        let d_real = self.d.forward(real).mean();
        let d_fake = self.d.forward(fake).mean();
        let wasserstein = scalar(d_real.clone().detach() - d_fake.clone().detach());
        let g_loss_now = -scalar(d_fake.clone().detach());
        let mut critic_loss = d_fake - d_real;
        if let Some(gp) = gp {
            critic_loss = critic_loss + gp;
        }
        let critic_v = scalar(critic_loss.clone().detach());
        let grads = GradientsParams::from_grads(critic_loss.backward(), &self.d);
        self.d = self
            .d_opt
            .step(self.cfg.d_optimizer.lr, self.d.clone(), grads);
        if self.cfg.variant == Variant::Clip {
            self.d = clip_weights(self.d.clone(), self.cfg.clip);
        }
        let mut g_loss_v = g_loss_now;
        if (step + 1).is_multiple_of(self.cfg.n_critic) {
            let z = latents::<B>(
                self.seed,
                Stream::Latent,
                (1 << 40) + step as u64,
                n,
                dim,
                &self.device,
            );
            // A critic with constant weights: no critic weight gradients to compute.
            let g_loss = self
                .d
                .clone()
                .no_grad()
                .forward(self.g.forward(z))
                .mean()
                .neg();
            g_loss_v = scalar(g_loss.clone().detach());
            let grads = GradientsParams::from_grads(g_loss.backward(), &self.g);
            self.g = self
                .g_opt
                .step(self.cfg.g_optimizer.lr, self.g.clone(), grads);
        }
        vec![critic_v, g_loss_v, wasserstein, gp_v, norm_v, at_kinks]
    }

    fn latent_dim(&self) -> usize {
        self.cfg.latent_dim
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
        export_module(&self.d.valid(), &dir.join("critic.safetensors"))
    }
}
