//! Weight initialisation from the run's own seeded RNG.
//!
//! burn's initialisers draw from the backend's global RNG, which stages running side by
//! side in one process share; drawing from (seed, stream) instead makes a network's first
//! weights depend on the seed alone, on every backend.

use burn::module::{Module, ModuleMapper, Param};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Tensor, TensorData};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::data::{Stream, normal, rng};

/// How to initialise the weights of a network.
#[derive(Debug, Clone, Copy)]
pub enum Init {
    /// Convolution and linear weights from N(0, std), batch-norm scales from N(1, std),
    /// biases and shifts zero: DCGAN's initialisation (Radford et al.), which seed 002
    /// states for its networks.
    Normal { std: f64 },
    /// PyTorch's default for convolutions and linear layers: weights from
    /// U(−1/√fan_in, 1/√fan_in) with fan_in = dim 1 × the kernel size (what PyTorch
    /// computes from the weight's shape); biases zero, batch-norm scales one.
    Uniform,
}

struct InitMapper<'a, B: Backend> {
    rng: ChaCha8Rng,
    how: Init,
    field: String,
    device: &'a B::Device,
}

impl<B: Backend> ModuleMapper<B> for InitMapper<'_, B> {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.field = name.to_string();
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let (id, tensor, mapper) = param.consume();
        let shape = tensor.dims();
        let n: usize = shape.iter().product();
        let values: Vec<f32> = match (self.field.as_str(), D, self.how) {
            ("gamma", _, Init::Normal { std }) => normal(&mut self.rng, n)
                .into_iter()
                .map(|z| 1.0 + z * std as f32)
                .collect(),
            ("gamma", _, Init::Uniform) => vec![1.0; n],
            ("bias" | "beta", _, _) => vec![0.0; n],
            (_, d, Init::Normal { std }) if d >= 2 => normal(&mut self.rng, n)
                .into_iter()
                .map(|z| z * std as f32)
                .collect(),
            (_, d, Init::Uniform) if d >= 2 => {
                let fan_in: usize = shape[1..].iter().product();
                let bound = 1.0 / (fan_in.max(1) as f32).sqrt();
                (0..n)
                    .map(|_| (self.rng.random::<f32>() * 2.0 - 1.0) * bound)
                    .collect()
            }
            _ => return Param::from_mapped_value(id, tensor, mapper),
        };
        let fresh = Tensor::<B, D>::from_data(TensorData::new(values, shape), self.device);
        let fresh = if tensor.is_require_grad() {
            fresh.require_grad()
        } else {
            fresh
        };
        Param::from_mapped_value(id, fresh, mapper)
    }
}

/// `module` with its weights drawn anew from (seed, `index`).
pub fn init<B: Backend, M: Module<B>>(
    module: M,
    how: Init,
    seed: u64,
    index: u64,
    device: &B::Device,
) -> M {
    let mut m = InitMapper::<B> {
        rng: rng(seed, Stream::Init, index),
        how,
        field: String::new(),
        device,
    };
    module.map(&mut m)
}

struct Clamp {
    limit: f64,
}

impl<B: AutodiffBackend> ModuleMapper<B> for Clamp {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        param.map(|t| {
            let grad = t.is_require_grad();
            // Through the inner backend, so that the result is a leaf again.
            let c = Tensor::from_inner(t.inner().clamp(-self.limit, self.limit));
            if grad { c.require_grad() } else { c }
        })
    }
}

/// Every float parameter clamped to [-limit, limit] (WGAN's weight clipping).
pub fn clip_weights<B: AutodiffBackend, M: Module<B>>(module: M, limit: f64) -> M {
    module.map(&mut Clamp { limit })
}
