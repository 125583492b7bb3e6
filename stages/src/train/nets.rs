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

use crate::StageError;

/// A transposed convolution with kernel 4, stride 2 and padding 1 (DCGAN's up-sampling
/// layer), computed as four 2×2 convolutions — one per output pixel parity — whose
/// outputs are interleaved. Same weights (`[C_in, C_out, 4, 4]`), same result up to float
/// rounding, and the same number of multiply-adds; it exists because burn-flex's
/// `conv_transpose2d` runs 3–7× slower than PyTorch's on the CPU while its `conv2d` keeps
/// up (bench/results/dcgan_step_vs_pytorch.md), and the backward pass then goes through
/// `conv2d`'s gradients too.
///
/// Output row 2i + a takes input rows {i − 1, i} with kernel rows {3, 1} for a = 0, and
/// rows {i, i + 1} with kernel rows {2, 0} for a = 1; columns likewise.
pub fn conv_transpose_4s2<B: Backend>(
    x: Tensor<B, 4>,
    weight: Tensor<B, 4>,
    bias: Option<Tensor<B, 1>>,
) -> Tensor<B, 4> {
    use burn::tensor::module::conv2d;
    use burn::tensor::ops::{ConvOptions, PadMode};
    use burn::tensor::{Int, TensorData};
    let [n, c_in, h, w] = x.dims();
    let c_out = weight.dims()[1];
    let device = x.device();
    let padded = x.pad((1, 1, 1, 1), PadMode::Constant(0.0));
    let w_oi = weight.swap_dims(0, 1); // [C_out, C_in, 4, 4], conv2d's layout
    let taps = |parity: usize| {
        let t: [i64; 2] = if parity == 0 { [3, 1] } else { [2, 0] };
        Tensor::<B, 1, Int>::from_data(TensorData::new(t.to_vec(), [2]), &device)
    };
    let mut parts = Vec::with_capacity(4);
    for a in 0..2 {
        for b in 0..2 {
            let k = w_oi.clone().select(2, taps(a)).select(3, taps(b));
            let window = padded
                .clone()
                .slice([0..n, 0..c_in, a..a + h + 1, b..b + w + 1]);
            parts.push(conv2d(
                window,
                k,
                None,
                ConvOptions::new([1, 1], [0, 0], [1, 1], 1),
            ));
        }
    }
    // parts[2a + b][.., i, j] goes to output pixel (2i + a, 2j + b).
    let y = Tensor::stack::<5>(parts, 2) // [N, C_out, 4, H, W]
        .reshape([n, c_out, 2, 2, h, w])
        .permute([0, 1, 4, 2, 5, 3]) // [N, C_out, H, 2, W, 2]
        .reshape([n, c_out, 2 * h, 2 * w]);
    match bias {
        Some(b) => y + b.reshape([1, c_out, 1, 1]),
        None => y,
    }
}

/// A DCGAN up-sampling layer through [`conv_transpose_4s2`] when it has that shape.
pub fn up<B: Backend>(conv: &ConvTranspose2d<B>, x: Tensor<B, 4>) -> Tensor<B, 4> {
    let k = conv.weight.dims();
    if conv.stride == [2, 2]
        && conv.padding == [1, 1]
        && conv.padding_out == [0, 0]
        && conv.dilation == [1, 1]
        && conv.groups == 1
        && k[2] == 4
        && k[3] == 4
    {
        conv_transpose_4s2(x, conv.weight.val(), conv.bias.as_ref().map(|b| b.val()))
    } else {
        conv.forward(x)
    }
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
            x = up(conv, x);
            if i < last {
                x = relu(self.norms[i].forward(x));
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
            x = conv.forward(x);
            if i < last {
                if i > 0 && !self.norms.is_empty() {
                    x = self.norms[i - 1].forward(x);
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
    fn four_small_convolutions_equal_the_transposed_convolution_and_its_gradients() {
        use burn::tensor::module::conv_transpose2d;
        use burn::tensor::ops::ConvTransposeOptions;
        let x = random([2, 5, 3, 4], 1).require_grad();
        let w = random([5, 7, 4, 4], 2).require_grad();
        let b = random([7], 3).require_grad();
        let reference = conv_transpose2d(
            x.clone(),
            w.clone(),
            Some(b.clone()),
            ConvTransposeOptions::new([2, 2], [1, 1], [0, 0], [1, 1], 1),
        );
        let ours = conv_transpose_4s2(x.clone(), w.clone(), Some(b.clone()));
        assert_eq!(ours.dims(), [2, 7, 6, 8]);
        assert!(max_diff(ours.clone(), reference.clone()) < 1e-4);
        // Gradients through a random projection of the output.
        let r = random([2, 7, 6, 8], 4);
        let g1 = (reference * r.clone()).sum().backward();
        let g2 = (ours * r).sum().backward();
        assert!(max_diff(x.grad(&g1).unwrap(), x.grad(&g2).unwrap()) < 1e-4);
        assert!(max_diff(w.grad(&g1).unwrap(), w.grad(&g2).unwrap()) < 1e-4);
        assert!(max_diff(b.grad(&g1).unwrap(), b.grad(&g2).unwrap()) < 1e-4);
    }
}
