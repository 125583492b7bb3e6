//! The DCGAN generator and discriminator (Radford et al. 2016), shared by `dcgan` and
//! `wgan`, for square images whose side is a power of two from 8 up.
//!
//! Generator: z → transposed conv 4×4 to a 4×4 map of `features·2^(n-1)` channels, then
//! n−1 stride-2 transposed convs halving the channels and doubling the size, BatchNorm and
//! ReLU between, tanh out. Discriminator: the mirror, stride-2 4×4 convs with LeakyReLU
//! 0.2 (BatchNorm on all but the first when `norm`), and a final 4×4 valid conv to one
//! logit. At 32×32×3 with `features: 64` these are "the usual 4-layer G and D".

use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig, ConvTranspose2d, ConvTranspose2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, PaddingConfig2d};
use burn::tensor::Tensor;
use burn::tensor::activation::{leaky_relu, relu, tanh};
use burn::tensor::backend::Backend;

use super::conv::{conv_transpose2d_forward, conv2d_forward};
use crate::StageError;

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
    let momentum = bn.momentum;
    let running_mean = bn
        .running_mean
        .value_sync()
        .mul_scalar(1.0 - momentum)
        .add(mean.detach().reshape([c]).mul_scalar(momentum));
    let running_var = bn
        .running_var
        .value_sync()
        .mul_scalar(1.0 - momentum)
        .add(var.detach().reshape([c]).mul_scalar(momentum));
    bn.running_mean.update(running_mean.detach());
    bn.running_var.update(running_var.detach());
    // Repeated over the batch, the `[N, C, 1]` scale and shift walk their storage in
    // step with `flat`'s rows: flex has a vectorised kernel for that pattern (one
    // scalar per contiguous row), but not for a `[1, C, 1]` broadcast, which falls
    // back to element-by-element strided iteration, forward and backward.
    let (scale, shift) = (scale.repeat_dim(0, n), shift.repeat_dim(0, n));
    (flat * scale + shift).reshape([n, c, h, w])
}

/// Stride-2 layers between 4×4 and a side of `size` (size = 4·2^n).
pub fn doublings(size: usize) -> Result<usize, StageError> {
    if size < 8 || !size.is_power_of_two() {
        return Err(StageError::Failed(format!(
            "the DCGAN networks need square images whose side is a power of two of at \
             least 8 (8, 16, 32, 64, …), not {size}; downsample the input first"
        )));
    }
    Ok(size.trailing_zeros() as usize - 2)
}

#[derive(Module, Debug)]
pub struct Generator<B: Backend> {
    pub convs: Vec<ConvTranspose2d<B>>,
    pub norms: Vec<BatchNorm<B>>,
}

impl<B: Backend> Generator<B> {
    /// `input` latent (and condition) size, `channels` of the images.
    pub fn new(
        input: usize,
        size: usize,
        channels: usize,
        features: usize,
        device: &B::Device,
    ) -> Result<Self, StageError> {
        let n = doublings(size)?;
        let mut convs = Vec::new();
        let mut norms = Vec::new();
        let mut width = features << (n - 1).min(16);
        // No bias before a BatchNorm: its shift would cancel it.
        convs.push(
            ConvTranspose2dConfig::new([input, width], [4, 4])
                .with_bias(false)
                .init(device),
        );
        norms.push(BatchNormConfig::new(width).init(device));
        for i in 1..=n {
            let last = i == n;
            let out = if last { channels } else { width / 2 };
            convs.push(
                ConvTranspose2dConfig::new([width, out], [4, 4])
                    .with_stride([2, 2])
                    .with_padding([1, 1])
                    .with_bias(last)
                    .init(device),
            );
            if !last {
                norms.push(BatchNormConfig::new(out).init(device));
            }
            width = out;
        }
        Ok(Generator { convs, norms })
    }

    /// `z`: [N, input] → images [N, C, size, size] in [-1, 1].
    pub fn forward(&self, z: Tensor<B, 2>) -> Tensor<B, 4> {
        let [n, d] = z.dims();
        let mut x = z.reshape([n, d, 1, 1]);
        let last = self.convs.len() - 1;
        for (i, conv) in self.convs.iter().enumerate() {
            x = conv_transpose2d_forward(conv, x);
            if i < last {
                x = relu(batch_norm(&self.norms[i], x));
            }
        }
        tanh(x)
    }
}

#[derive(Module, Debug)]
pub struct Discriminator<B: Backend> {
    pub convs: Vec<Conv2d<B>>,
    /// Empty for a critic without normalisation (WGAN-GP).
    pub norms: Vec<BatchNorm<B>>,
}

impl<B: Backend> Discriminator<B> {
    pub fn new(
        size: usize,
        channels: usize,
        features: usize,
        norm: bool,
        device: &B::Device,
    ) -> Result<Self, StageError> {
        let n = doublings(size)?;
        let mut convs = Vec::new();
        let mut norms = Vec::new();
        let mut width = channels;
        for i in 0..n {
            let out = features << i.min(16);
            convs.push(
                Conv2dConfig::new([width, out], [4, 4])
                    .with_stride([2, 2])
                    .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                    .with_bias(i == 0 || !norm)
                    .init(device),
            );
            if i > 0 && norm {
                norms.push(BatchNormConfig::new(out).init(device));
            }
            width = out;
        }
        convs.push(Conv2dConfig::new([width, 1], [4, 4]).init(device));
        Ok(Discriminator { convs, norms })
    }

    /// Images [N, C, H, W] → one logit (or critic value) per image, [N].
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 1> {
        self.forward_traced(x, false).0
    }

    /// [`Self::forward`], and with `trace` the input of every LeakyReLU (whose signs say
    /// which side of each kink the image is on).
    pub fn forward_traced(
        &self,
        x: Tensor<B, 4>,
        trace: bool,
    ) -> (Tensor<B, 1>, Vec<Tensor<B, 4>>) {
        let mut x = x;
        let mut pre = Vec::new();
        let last = self.convs.len() - 1;
        for (i, conv) in self.convs.iter().enumerate() {
            x = conv2d_forward(conv, x);
            if i < last {
                if i > 0 && !self.norms.is_empty() {
                    x = batch_norm(&self.norms[i - 1], x);
                }
                if trace {
                    pre.push(x.clone().detach());
                }
                x = leaky_relu(x, 0.2);
            }
        }
        let n = x.dims()[0];
        (x.reshape([n]), pre)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::backend::Cpu;
    use crate::train::data::{Stream, normal, rng};
    use burn::tensor::TensorData;

    fn random<const D: usize>(shape: [usize; D], seed: u64) -> Tensor<Cpu, D> {
        let n = shape.iter().product();
        Tensor::from_data(
            TensorData::new(normal(&mut rng(seed, Stream::Fixed, 0), n), shape),
            &Default::default(),
        )
    }

    fn max_diff<B2: Backend<FloatElem = f32>, const D: usize>(
        a: Tensor<B2, D>,
        b: Tensor<B2, D>,
    ) -> f32 {
        (a - b).abs().max().into_scalar()
    }

    #[test]
    fn batch_norm_matches_burns_forward_gradients_and_running_statistics() {
        let x = (random([4, 3, 5, 6], 5) * 2.0 + 0.5).require_grad();
        let mk = || {
            let bn = BatchNormConfig::new(3).init::<Cpu>(&Default::default());
            let g = random([3], 6).require_grad();
            let b = random([3], 7).require_grad();
            BatchNorm {
                gamma: burn::module::Param::from_tensor(g),
                beta: burn::module::Param::from_tensor(b),
                ..bn
            }
        };
        let (ours_bn, burn_bn) = (mk(), mk());
        let r = random([4, 3, 5, 6], 8);
        let ours = batch_norm(&ours_bn, x.clone());
        let theirs = burn_bn.forward(x.clone());
        assert!(max_diff(ours.clone(), theirs.clone()) < 1e-5);
        let g1 = (ours * r.clone()).sum().backward();
        let g2 = (theirs * r).sum().backward();
        assert!(max_diff(x.grad(&g1).unwrap(), x.grad(&g2).unwrap()) < 1e-4);
        let gg = |bn: &BatchNorm<Cpu>, g| bn.gamma.val().grad(g).unwrap();
        assert!(max_diff(gg(&ours_bn, &g1), gg(&burn_bn, &g2)) < 1e-4);
        assert!(
            max_diff(
                ours_bn.running_var.value_sync(),
                burn_bn.running_var.value_sync()
            ) < 1e-5
        );
        assert!(
            max_diff(
                ours_bn.running_mean.value_sync(),
                burn_bn.running_mean.value_sync()
            ) < 1e-6
        );
    }
}
