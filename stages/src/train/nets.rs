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
use burn::tensor::backend::Backend;

use super::conv::{conv_transpose2d_forward, conv2d_forward};
use super::norm::{Activation, batch_norm, batch_norm_act};
use super::pointwise::{leaky_relu, tanh};
use crate::StageError;

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
                x = batch_norm_act(&self.norms[i], x, Activation::Relu);
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
                let norm = (i > 0).then(|| self.norms.get(i - 1)).flatten();
                x = match norm {
                    // The trace needs the pre-activations the fused op keeps to itself.
                    Some(norm) if !trace => batch_norm_act(norm, x, Activation::LeakyRelu(0.2)),
                    Some(norm) => batch_norm(norm, x),
                    None => x,
                };
                if trace {
                    pre.push(x.clone().detach());
                }
                if trace || norm.is_none() {
                    x = leaky_relu(x, 0.2);
                }
            }
        }
        let n = x.dims()[0];
        (x.reshape([n]), pre)
    }
}
