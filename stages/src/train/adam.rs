//! burn's Adam with its update fused into one parallel pass on the CPU backend.
//!
//! burn's Adam updates each parameter tensor with about a dozen element-wise ops, and
//! flex runs each op on one thread below 256K entries: in the DCGAN benchmark the two
//! networks' updates took 5 ms a step with 0.4–0.7 of two cores busy. [`FusedAdam`] does
//! the same arithmetic, in the same order and in f32 as burn does, in one pass over each
//! tensor split across threads, and keeps burn's `AdamState` (so checkpoints hold the same
//! record). Other backends, and AMSGrad, go through burn's own `Adam`.

use std::any::TypeId;

use burn::backend::Flex;
use burn::optim::{
    Adam, AdamConfig, AdamState, AdaptiveMomentumState, LearningRate, SimpleOptimizer,
};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData, TensorPrimitive};
use burn_flex::FlexTensor;
use multiversion::multiversion;
use rayon::prelude::*;

use super::conv::{contiguous, same_type, values};
use crate::buffer::par_filled;

/// Entries per parallel task.
const TASK: usize = 1 << 14;

#[derive(Clone)]
pub struct FusedAdam {
    adam: Adam,
    beta_1: f32,
    beta_2: f32,
    epsilon: f32,
}

impl FusedAdam {
    pub fn new(beta_1: f32, beta_2: f32, epsilon: f32) -> FusedAdam {
        let adam = AdamConfig::new()
            .with_beta_1(beta_1)
            .with_beta_2(beta_2)
            .with_epsilon(epsilon)
            .build();
        FusedAdam {
            adam,
            beta_1,
            beta_2,
            epsilon,
        }
    }
}

/// The scalars of one step, as burn's `AdaptiveMomentum::transform` computes them.
#[derive(Debug, Clone, Copy)]
struct Factors {
    beta_1: f32,
    beta_2: f32,
    /// 1 − β₁, 1 − β₂
    keep_1: f32,
    keep_2: f32,
    /// √(1 − β₂ᵗ) / (1 − β₁ᵗ), and ε · √(1 − β₂ᵗ)
    combined: f32,
    epsilon: f32,
    lr: f32,
    /// Whether there were moments before this step (otherwise they start from 0).
    moments: bool,
}

impl<B: Backend> SimpleOptimizer<B> for FusedAdam {
    type State<const D: usize> = AdamState<B, D>;

    fn step<const D: usize>(
        &self,
        lr: LearningRate,
        tensor: Tensor<B, D>,
        grad: Tensor<B, D>,
        state: Option<Self::State<D>>,
    ) -> (Tensor<B, D>, Option<Self::State<D>>) {
        let amsgrad = state
            .as_ref()
            .is_some_and(|s| s.momentum.max_moment_2.is_some());
        if TypeId::of::<B>() != TypeId::of::<Flex>() || amsgrad {
            return self.adam.step(lr, tensor, grad, state);
        }
        let dims = tensor.dims();
        let time = state.as_ref().map_or(0, |s| s.momentum.time) + 1;
        let t = time as i32;
        let bias_correction_2 = (1.0 - self.beta_2.powi(t)).sqrt();
        let f = Factors {
            beta_1: self.beta_1,
            beta_2: self.beta_2,
            keep_1: 1.0 - self.beta_1,
            keep_2: 1.0 - self.beta_2,
            combined: bias_correction_2 / (1.0 - self.beta_1.powi(t)),
            epsilon: self.epsilon * bias_correction_2,
            lr: lr as f32,
            moments: state.is_some(),
        };
        let flex = |t: Tensor<B, D>| -> FlexTensor {
            match same_type::<_, Tensor<Flex, D>>(t).map(Tensor::into_primitive) {
                Ok(TensorPrimitive::Float(t)) => contiguous(&t),
                _ => unreachable!("B is Flex, whose float tensors are not quantized here"),
            }
        };
        let back = |t: FlexTensor| -> Tensor<B, D> {
            let t = Tensor::<Flex, D>::from_primitive(TensorPrimitive::Float(t));
            same_type::<_, Tensor<B, D>>(t).unwrap_or_else(|_| unreachable!("B is Flex"))
        };
        // The parameter and its moments are updated in place. Fresh output buffers had
        // cost a serial zeroing of each, per tensor and step. The moments belong to the
        // optimizer's state; the parameter's buffer is shared when the caller kept a copy
        // of the module (`opt.step(lr, net.clone(), grads)`), and `storage_mut` would then
        // copy it on one thread, so it is copied here in parallel instead.
        let (param, grad) = (flex(tensor), flex(grad));
        let n = values(&param).len();
        let mut param = if param.is_unique() {
            param
        } else {
            let v: Vec<f32> = values(&param)
                .par_iter()
                .copied()
                .with_min_len(TASK)
                .collect();
            FlexTensor::from_data(TensorData::new(v, dims))
        };
        let (mut m1, mut m2) = match state {
            Some(s) => (flex(s.momentum.moment_1), flex(s.momentum.moment_2)),
            None => {
                let zeros = || {
                    let v = par_filled::<f32, _>(n, TASK, |_, _| {});
                    FlexTensor::from_data(TensorData::new(v, dims))
                };
                (zeros(), zeros())
            }
        };
        let grad_in = values(&grad);
        param
            .storage_mut::<f32>()
            .par_chunks_mut(TASK)
            .zip(m1.storage_mut::<f32>().par_chunks_mut(TASK))
            .zip(m2.storage_mut::<f32>().par_chunks_mut(TASK))
            .enumerate()
            .for_each(|(i, ((p, m1), m2))| {
                update(&grad_in[i * TASK..][..p.len()], f, p, m1, m2);
            });
        let momentum = AdaptiveMomentumState::new(time, back(m1), back(m2));
        (back(param), Some(AdamState::new(momentum)))
    }

    fn to_device<const D: usize>(state: Self::State<D>, device: &B::Device) -> Self::State<D> {
        <Adam as SimpleOptimizer<B>>::to_device(state, device)
    }
}

/// One task's entries, updated in place: the moments' update and the parameter's, each
/// value computed by the same f32 operations in the same order as burn's `Adam` (no fused
/// multiply-adds), so that both give the same bits. Without earlier moments (`f.moments`
/// false) the moments' old values are not read.
#[multiversion(targets("x86_64+avx512f+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
fn update(grad: &[f32], f: Factors, param: &mut [f32], m1: &mut [f32], m2: &mut [f32]) {
    if f.moments {
        for i in 0..param.len() {
            let g = grad[i];
            m1[i] = m1[i] * f.beta_1 + g * f.keep_1;
            m2[i] = m2[i] * f.beta_2 + (g * g) * f.keep_2;
        }
    } else {
        for i in 0..param.len() {
            let g = grad[i];
            m1[i] = g * f.keep_1;
            m2[i] = (g * g) * f.keep_2;
        }
    }
    for i in 0..param.len() {
        let step = (m1[i] * f.combined) / (m2[i].sqrt() + f.epsilon);
        param[i] -= step * f.lr;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::data::test_normal as random;

    type Inner = Flex;

    /// Five steps of both optimizers from the same start, on a tensor split into several
    /// tasks: the same parameters, moments and step counts, bit for bit.
    #[test]
    fn fused_adam_gives_burns_adam_bits() {
        let shape = [3, 5, 41, 67];
        let ours = FusedAdam::new(0.5, 0.999, 1e-8);
        let burns = AdamConfig::new()
            .with_beta_1(0.5)
            .with_beta_2(0.999)
            .with_epsilon(1e-8)
            .build();
        let to_inner = |t: Tensor<crate::train::backend::Cpu, 4>| t.inner();
        let mut p1: Tensor<Inner, 4> = to_inner(random(shape, 1));
        let mut p2 = p1.clone();
        let (mut s1, mut s2) = (None, None);
        for step in 0..5u64 {
            let g = to_inner(random(shape, 10 + step)) * 0.1;
            let lr = 2e-4 * (1.0 + step as f64);
            let (a, sa) = SimpleOptimizer::<Inner>::step(&ours, lr, p1, g.clone(), s1);
            let (b, sb) = SimpleOptimizer::<Inner>::step(&burns, lr, p2, g, s2);
            assert_eq!(a.to_data(), b.to_data(), "parameters after step {step}");
            let (ma, mb) = (
                sa.as_ref().expect("a state").momentum.clone(),
                sb.as_ref().expect("a state").momentum.clone(),
            );
            assert_eq!(ma.time, mb.time);
            assert_eq!(
                ma.moment_1.to_data(),
                mb.moment_1.to_data(),
                "m1 after {step}"
            );
            assert_eq!(
                ma.moment_2.to_data(),
                mb.moment_2.to_data(),
                "m2 after {step}"
            );
            (p1, p2, s1, s2) = (a, b, sa, sb);
        }
    }
}
