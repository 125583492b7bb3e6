//! BatchNorm in training mode, with the activation that follows it, for the training
//! networks.
//!
//! [`batch_norm`] composes burn tensor ops and works on every backend. On the CPU backend
//! (flex with autodiff) [`batch_norm_act`] runs BatchNorm and its activation as one
//! custom autodiff operation: two passes over the activations forward (statistics, then
//! the normalised and activated output) and two backward, where the composition of
//! element-wise burn ops made a dozen (the DCGAN benchmark's profile put element-wise
//! and reduction ops, mostly BatchNorm's, at a fifth of the step).

use std::sync::Arc;

use burn::backend::Flex;
use burn::backend::autodiff::NodeId;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::nn::BatchNorm;
use burn::tensor::activation::{leaky_relu, relu};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData, TensorPrimitive};
use burn_flex::FlexTensor;
use multiversion::multiversion;
use rayon::prelude::*;

use super::backend::Cpu;
use super::conv::{contiguous, cpu_float, is_cpu, same_type, values};
use crate::buffer::par_filled;

/// The activation applied after a BatchNorm.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Activation {
    Identity,
    Relu,
    /// LeakyReLU with this negative slope.
    LeakyRelu(f32),
}

impl Activation {
    pub fn apply<B: Backend, const D: usize>(self, x: Tensor<B, D>) -> Tensor<B, D> {
        match self {
            Activation::Identity => x,
            Activation::Relu => relu(x),
            Activation::LeakyRelu(slope) => leaky_relu(x, slope as f64),
        }
    }

    /// The slope for negative pre-activations (1 for positive ones): every activation
    /// here is piecewise linear with its kink at 0, which keeps the loops below
    /// branch-free (one select), so the compiler vectorises them.
    fn negative_slope(self) -> f32 {
        match self {
            Activation::Identity => 1.0,
            Activation::Relu => 0.0,
            Activation::LeakyRelu(s) => s,
        }
    }
}

/// The slope at pre-activation `z` of an activation with `negative` slope below 0, in
/// arithmetic rather than a select: inside the lane sums the select of a constant and a
/// variable became a branch per lane, which ran the BatchNorm backward at a third of its
/// speed. Exact for the slopes used (0, 0.2, 1): `negative + (1 − negative)` rounds to 1.
#[inline(always)]
fn slope(z: f32, negative: f32) -> f32 {
    negative + (1.0 - negative) * f32::from(z > 0.0)
}

/// Entries summed in f32 lanes before the lanes are added into the f64 total: few enough
/// per lane (512) for f32, many more than one small plane, so that the f64 additions are
/// not a per-plane cost (the generator's 4×4 planes made them one in every two steps).
const FLUSH: usize = 8 * 512;

/// Σ f(v) and Σ g(v) (as `f(v)` returns them) over the planes of one channel, in eight
/// f32 lanes flushed into f64 every [`FLUSH`] entries: a plain f32 sum must keep its
/// order and does not vectorise; the lanes do. The order is fixed by the shapes alone.
#[inline(always)]
fn lane_sums<'a>(
    planes: impl Iterator<Item = (&'a [f32], &'a [f32])>,
    f: impl Fn(f32, f32) -> (f32, f32),
) -> (f64, f64) {
    let (mut l1, mut l2) = ([0f32; 8], [0f32; 8]);
    let (mut s1, mut s2) = (0f64, 0f64);
    let mut pending = 0;
    for (a, b) in planes {
        let (ca, cb) = (a.as_chunks::<8>(), b.as_chunks::<8>());
        for (a8, b8) in ca.0.iter().zip(cb.0) {
            for i in 0..8 {
                let (u, v) = f(a8[i], b8[i]);
                l1[i] += u;
                l2[i] += v;
            }
        }
        for (&a, &b) in ca.1.iter().zip(cb.1) {
            let (u, v) = f(a, b);
            s1 += u as f64;
            s2 += v as f64;
        }
        pending += a.len();
        if pending >= FLUSH {
            s1 += l1.iter().map(|&l| l as f64).sum::<f64>();
            s2 += l2.iter().map(|&l| l as f64).sum::<f64>();
            (l1, l2, pending) = ([0f32; 8], [0f32; 8], 0);
        }
    }
    s1 += l1.iter().map(|&l| l as f64).sum::<f64>();
    s2 += l2.iter().map(|&l| l as f64).sum::<f64>();
    (s1, s2)
}

/// The planes of channel `ch` in a contiguous [n, c, plane] batch, image by image.
fn channel_planes(
    x: &[f32],
    c: usize,
    plane: usize,
    ch: usize,
) -> impl Iterator<Item = &[f32]> + Clone {
    x.chunks_exact((c * plane).max(1))
        .map(move |image| &image[ch * plane..][..plane])
}

/// `act(bn(x))` for a 4-D batch, BatchNorm in training mode (batch statistics, running
/// statistics updated) when autodiff is on, evaluation mode otherwise.
pub fn batch_norm_act<B: Backend>(
    bn: &BatchNorm<B>,
    x: Tensor<B, 4>,
    act: Activation,
) -> Tensor<B, 4> {
    if !B::ad_enabled(&x.device()) {
        return act.apply(bn.forward(x));
    }
    if !is_cpu::<B>() {
        return act.apply(batch_norm(bn, x));
    }
    let [n, c, h, w] = x.dims();
    let device = x.device();
    let x = cpu_float(x);
    let (mean, var) = channel_statistics(&x.primitive);
    let to_tensor = |v: &[f64]| {
        let v: Vec<f32> = v.iter().map(|&v| v as f32).collect();
        Tensor::<B, 1>::from_data(TensorData::new(v, [c]), &device)
    };
    update_running(bn, to_tensor(&mean), to_tensor(&var));
    let gamma = cpu_float(bn.gamma.val());
    let beta = cpu_float(bn.beta.val());
    let (gamma_values, beta_values) = (contiguous(&gamma.primitive), contiguous(&beta.primitive));
    let (gamma_values, beta_values) = (values(&gamma_values), values(&beta_values));
    let inv_std: Vec<f32> = var
        .iter()
        .map(|&v| (1.0 / (v + bn.epsilon).sqrt()) as f32)
        .collect();
    let scale: Vec<f32> = gamma_values
        .iter()
        .zip(&inv_std)
        .map(|(g, s)| g * s)
        .collect();
    let shift: Vec<f32> = (0..c)
        .map(|i| beta_values[i] - mean[i] as f32 * scale[i])
        .collect();
    let state = Arc::new(NormState {
        dims: [n, c, h, w],
        mean: mean.iter().map(|&m| m as f32).collect(),
        inv_std,
        scale,
        shift,
        act,
    });
    let forward = |x: &FlexTensor| normalize(x, &state);
    let y = match NormOp
        .prepare::<NoCheckpointing>([x.node.clone(), gamma.node.clone(), beta.node.clone()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(mut prep) => {
            let xs = prep.checkpoint(&x);
            let y = forward(&x.primitive);
            prep.finish((xs, state.clone()), y)
        }
        OpsKind::UnTracked(prep) => prep.finish(forward(&x.primitive)),
    };
    let y = Tensor::<Cpu, 4>::from_primitive(TensorPrimitive::Float(y));
    same_type::<_, Tensor<B, 4>>(y).unwrap_or_else(|_| unreachable!("B is the CPU backend"))
}

/// BatchNorm over a 4-D batch in training mode, as burn's `BatchNorm::forward` computes it
/// (biased batch variance, running statistics updated with the module's momentum), in
/// fewer passes: statistics from reductions over the contiguous `[N, C, H·W]` view
/// instead of a transposed copy, and the normalisation folded into one per-channel scale
/// and shift. On burn-flex, where broadcast element-wise ops are the expensive part of a
/// DCGAN step, this is much cheaper than burn's four broadcast ops and two copies.
pub fn batch_norm<B: Backend>(bn: &BatchNorm<B>, x: Tensor<B, 4>) -> Tensor<B, 4> {
    if !B::ad_enabled(&x.device()) {
        return bn.forward(x);
    }
    let [n, c, h, w] = x.dims();
    let flat = x.reshape([n, c, h * w]);
    let mean = flat.clone().mean_dim(2).mean_dim(0); // [1, C, 1]
    let mean_sq = flat.clone().square().mean_dim(2).mean_dim(0);
    let var = (mean_sq - mean.clone().square()).clamp_min(0.0);
    let scale = bn.gamma.val().reshape([1, c, 1]) / (var.clone() + bn.epsilon).sqrt();
    let shift = bn.beta.val().reshape([1, c, 1]) - mean.clone() * scale.clone();
    update_running(bn, mean.detach().reshape([c]), var.detach().reshape([c]));
    // Repeated over the batch, the `[N, C, 1]` scale and shift walk their storage in
    // step with `flat`'s rows: flex has a vectorised kernel for that pattern (one
    // scalar per contiguous row), but not for a `[1, C, 1]` broadcast, which falls
    // back to element-by-element strided iteration, forward and backward.
    let (scale, shift) = (scale.repeat_dim(0, n), shift.repeat_dim(0, n));
    (flat * scale + shift).reshape([n, c, h, w])
}

/// The running statistics' update with the batch's mean and (biased) variance, as burn's
/// `BatchNorm` makes it.
fn update_running<B: Backend>(bn: &BatchNorm<B>, mean: Tensor<B, 1>, var: Tensor<B, 1>) {
    let momentum = bn.momentum;
    let running_mean = bn
        .running_mean
        .value_sync()
        .mul_scalar(1.0 - momentum)
        .add(mean.mul_scalar(momentum));
    let running_var = bn
        .running_var
        .value_sync()
        .mul_scalar(1.0 - momentum)
        .add(var.mul_scalar(momentum));
    bn.running_mean.update(running_mean.detach());
    bn.running_var.update(running_var.detach());
}

/// Per-channel mean and biased variance of `x` ([n, c, h, w]), in a fixed order (two
/// passes: the mean, then the squared deviations; see [`lane_sums`]).
fn channel_statistics(x: &FlexTensor) -> (Vec<f64>, Vec<f64>) {
    let x = contiguous(x);
    let [n, c, h, w] = x.layout().shape().dims();
    let x = values(&x);
    let plane = h * w;
    let count = (n * plane).max(1) as f64;
    let stats: Vec<(f64, f64)> = (0..c)
        .into_par_iter()
        .map(|ch| channel_mean_var(x, c, plane, ch, count))
        .collect();
    stats.into_iter().unzip()
}

/// The mean and biased variance of channel `ch` (see [`channel_statistics`]).
#[multiversion(targets("x86_64+avx512f+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
fn channel_mean_var(x: &[f32], c: usize, plane: usize, ch: usize, count: f64) -> (f64, f64) {
    let planes = channel_planes(x, c, plane, ch);
    let pairs = planes.clone().map(|p| (p, p));
    let mean = lane_sums(pairs, |v, _| (v, 0.0)).0 / count;
    let m = mean as f32;
    let pairs = planes.map(|p| (p, p));
    let var = lane_sums(pairs, |v, _| ((v - m) * (v - m), 0.0)).0 / count;
    (mean, var)
}

/// What the backward pass needs: the forward pass's per-channel statistics and affine
/// terms.
#[derive(Debug)]
struct NormState {
    /// [n, c, h, w]
    dims: [usize; 4],
    mean: Vec<f32>,
    inv_std: Vec<f32>,
    /// gamma · inv_std, and beta − mean · scale: the pre-activation is x · scale + shift
    /// (and `scale` is also the input gradient's factor).
    scale: Vec<f32>,
    shift: Vec<f32>,
    act: Activation,
}

/// y = act(x · scale + shift), per channel; image by image in parallel (tasks of one
/// plane each were too small for the generator's 4×4 planes).
fn normalize(x: &FlexTensor, s: &NormState) -> FlexTensor {
    let x = contiguous(x);
    let x = values(&x);
    let [n, c, h, w] = s.dims;
    let plane = h * w;
    let negative = s.act.negative_slope();
    let image = (c * plane).max(1);
    let y = par_filled(n * c * plane, image, |j, y| {
        normalize_image(
            y,
            &x[j * image..][..y.len()],
            plane,
            &s.scale,
            &s.shift,
            negative,
        )
    });
    FlexTensor::from_data(TensorData::new(y, s.dims))
}

/// [`normalize`] of one image's planes.
#[multiversion(targets("x86_64+avx512f+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
fn normalize_image(
    y: &mut [f32],
    x: &[f32],
    plane: usize,
    scale: &[f32],
    shift: &[f32],
    negative: f32,
) {
    for ((y, x), (&scale, &shift)) in y
        .chunks_exact_mut(plane.max(1))
        .zip(x.chunks_exact(plane.max(1)))
        .zip(scale.iter().zip(shift))
    {
        for (y, x) in y.iter_mut().zip(x) {
            let z = x * scale + shift;
            *y = z * slope(z, negative);
        }
    }
}

/// BatchNorm (training mode) followed by an activation; parents: x, gamma, beta.
#[derive(Debug)]
struct NormOp;

impl Backward<Flex, 3> for NormOp {
    type State = (NodeId, Arc<NormState>);

    fn backward(
        self,
        ops: Ops<Self::State, 3>,
        grads: &mut Gradients,
        checkpointer: &mut Checkpointer,
    ) {
        let dy = grads.consume::<Flex>(&ops.node);
        let (xs, s) = ops.state;
        let x = checkpointer.retrieve_node_output::<FlexTensor>(xs);
        let [n, c, h, w] = s.dims;
        let plane = h * w;
        let (x, dy) = (contiguous(&x), contiguous(&dy));
        let (x, dy) = (values(&x), values(&dy));
        let negative = s.act.negative_slope();
        // dz = dy · act'(z); per channel Σ dz (beta's gradient) and Σ dz · x̂ (gamma's).
        let sums: Vec<(f64, f64)> = (0..c)
            .into_par_iter()
            .map(|ch| {
                let affine = (s.scale[ch], s.shift[ch], s.mean[ch]);
                let (sum, sum_centred) = dz_sums(x, dy, c, plane, ch, affine, negative);
                (sum, sum_centred * s.inv_std[ch] as f64)
            })
            .collect();
        let [node_x, node_gamma, node_beta] = ops.parents;
        if let Some(node) = node_x {
            // dx = k · (dz − mean(dz) − x̂ · mean(dz · x̂)) with k = gamma · inv_std, as
            // dx = k · dz + a · x + b per channel.
            let count = (n * plane).max(1) as f64;
            let terms: Vec<(f32, f32, f32)> = (0..c)
                .map(|ch| {
                    let (k, mean, inv_std) = (s.scale[ch], s.mean[ch], s.inv_std[ch]);
                    let (mean_dz, mean_dz_xhat) =
                        ((sums[ch].0 / count) as f32, (sums[ch].1 / count) as f32);
                    let a = -k * inv_std * mean_dz_xhat;
                    (k, a, -k * mean_dz - a * mean)
                })
                .collect();
            let image = (c * plane).max(1);
            let dx = par_filled(n * c * plane, image, |j, dx| {
                let (x, dy) = (&x[j * image..][..dx.len()], &dy[j * image..][..dx.len()]);
                input_grad_image(dx, x, dy, plane, &s.scale, &s.shift, &terms, negative)
            });
            grads.register::<Flex>(node.id, FlexTensor::from_data(TensorData::new(dx, s.dims)));
        }
        let channel_vector = |v: Vec<f32>| FlexTensor::from_data(TensorData::new(v, [c]));
        if let Some(node) = node_gamma {
            let dg = sums.iter().map(|&(_, sx)| sx as f32).collect();
            grads.register::<Flex>(node.id, channel_vector(dg));
        }
        if let Some(node) = node_beta {
            let db = sums.iter().map(|&(s, _)| s as f32).collect();
            grads.register::<Flex>(node.id, channel_vector(db));
        }
    }
}

/// Σ dz and Σ dz · (x − mean) over channel `ch`, with dz = dy · act'(x · scale + shift)
/// and `affine` = (scale, shift, mean).
#[multiversion(targets("x86_64+avx512f+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
fn dz_sums(
    x: &[f32],
    dy: &[f32],
    c: usize,
    plane: usize,
    ch: usize,
    (scale, shift, mean): (f32, f32, f32),
    negative: f32,
) -> (f64, f64) {
    let planes = channel_planes(x, c, plane, ch).zip(channel_planes(dy, c, plane, ch));
    lane_sums(planes, |x, dy| {
        let dz = dy * slope(x * scale + shift, negative);
        (dz, dz * (x - mean))
    })
}

/// One image's input gradient: dx = k · dz + a · x + b per channel, `terms` holding each
/// channel's (k, a, b).
#[allow(clippy::too_many_arguments)]
#[multiversion(targets("x86_64+avx512f+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
fn input_grad_image(
    dx: &mut [f32],
    x: &[f32],
    dy: &[f32],
    plane: usize,
    scale: &[f32],
    shift: &[f32],
    terms: &[(f32, f32, f32)],
    negative: f32,
) {
    let planes = dx.chunks_exact_mut(plane.max(1)).zip(
        x.chunks_exact(plane.max(1))
            .zip(dy.chunks_exact(plane.max(1))),
    );
    for (ch, (dx, (x, dy))) in planes.enumerate() {
        let (scale, shift) = (scale[ch], shift[ch]);
        let (k, a, b) = terms[ch];
        for ((dx, &x), &dy) in dx.iter_mut().zip(x).zip(dy) {
            let dz = dy * slope(x * scale + shift, negative);
            *dx = k * dz + a * x + b;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::data::test_normal as random;
    use burn::nn::BatchNormConfig;

    fn max_diff<const D: usize>(a: Tensor<Cpu, D>, b: Tensor<Cpu, D>) -> f32 {
        (a - b).abs().max().into_scalar()
    }

    fn module() -> BatchNorm<Cpu> {
        let bn = BatchNormConfig::new(3).init::<Cpu>(&Default::default());
        BatchNorm {
            gamma: burn::module::Param::from_tensor(random([3], 6).require_grad()),
            beta: burn::module::Param::from_tensor(random([3], 7).require_grad()),
            ..bn
        }
    }

    /// Output, input / gamma / beta gradients and running statistics of `ours` against
    /// burn's `BatchNorm::forward` followed by the activation.
    fn matches_burn(
        ours: impl Fn(&BatchNorm<Cpu>, Tensor<Cpu, 4>) -> Tensor<Cpu, 4>,
        act: Activation,
    ) {
        let x = (random([4, 3, 5, 6], 5) * 2.0 + 0.5).require_grad();
        let (ours_bn, burn_bn) = (module(), module());
        let r = random([4, 3, 5, 6], 8);
        let y1 = ours(&ours_bn, x.clone());
        let y2 = act.apply(burn_bn.forward(x.clone()));
        assert!(max_diff(y1.clone(), y2.clone()) < 1e-5, "{act:?}: output");
        let g1 = (y1 * r.clone()).sum().backward();
        let g2 = (y2 * r).sum().backward();
        let dx = |g| Tensor::<Cpu, 4>::from_inner(x.grad(g).expect("x has a gradient"));
        assert!(max_diff(dx(&g1), dx(&g2)) < 1e-4, "{act:?}: input gradient");
        for (what, p1, p2) in [
            ("gamma", ours_bn.gamma.val(), burn_bn.gamma.val()),
            ("beta", ours_bn.beta.val(), burn_bn.beta.val()),
        ] {
            let d1 = Tensor::<Cpu, 1>::from_inner(p1.grad(&g1).expect("a gradient"));
            let d2 = Tensor::<Cpu, 1>::from_inner(p2.grad(&g2).expect("a gradient"));
            assert!(max_diff(d1, d2) < 1e-4, "{act:?}: {what} gradient");
        }
        let running =
            |bn: &BatchNorm<Cpu>| (bn.running_mean.value_sync(), bn.running_var.value_sync());
        let ((m1, v1), (m2, v2)) = (running(&ours_bn), running(&burn_bn));
        assert!(max_diff(m1, m2) < 1e-6, "{act:?}: running mean");
        assert!(max_diff(v1, v2) < 1e-5, "{act:?}: running variance");
    }

    #[test]
    fn batch_norm_matches_burns_forward_gradients_and_running_statistics() {
        matches_burn(batch_norm, Activation::Identity);
    }

    #[test]
    fn fused_batch_norm_and_activation_match_burns() {
        for act in [
            Activation::Identity,
            Activation::Relu,
            Activation::LeakyRelu(0.2),
        ] {
            matches_burn(|bn, x| batch_norm_act(bn, x, act), act);
        }
    }
}
