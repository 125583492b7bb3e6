//! Pointwise activations for the training networks (LeakyReLU, tanh), with a faster CPU
//! path.
//!
//! On the CPU backend (flex with autodiff) burn builds LeakyReLU from three element-wise
//! ops (a comparison, a scaled copy, a masked select) and differentiates tanh by
//! computing it again and then four more ops; flex runs each as a pass over the whole
//! tensor on one thread. The DCGAN benchmark's profile caught those passes (the
//! discriminator's first LeakyReLU, the generator's output tanh) running while the other
//! thread waited. Here each activation is one custom autodiff operation: one parallel
//! pass forward, one backward, from the output it keeps. Other backends keep burn's ops.

use burn::backend::Flex;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData, TensorPrimitive, activation};
use burn_flex::FlexTensor;
use multiversion::multiversion;

use super::backend::Cpu;
use super::conv::{contiguous, cpu_float, is_cpu, same_type, values};
use crate::buffer::par_filled;

/// Entries per parallel task: large enough that a task outweighs its scheduling, small
/// enough that the DCGAN's smallest activations still split across threads.
const TASK: usize = 1 << 14;

/// `leaky_relu(x, negative_slope)`, as burn's, through the fast CPU path on the CPU
/// backend.
pub fn leaky_relu<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    negative_slope: f64,
) -> Tensor<B, D> {
    // The backward pass reads the slope off the output's sign, which a negative slope
    // would flip.
    if !is_cpu::<B>() || negative_slope < 0.0 {
        return activation::leaky_relu(x, negative_slope);
    }
    apply(x, Pointwise::LeakyRelu(negative_slope as f32))
}

/// `tanh(x)`, as burn's, through the fast CPU path on the CPU backend.
pub fn tanh<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    if !is_cpu::<B>() {
        return activation::tanh(x);
    }
    apply(x, Pointwise::Tanh)
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Pointwise {
    LeakyRelu(f32),
    Tanh,
}

impl Pointwise {
    /// `f(x)` of every entry, in parallel tasks of [`TASK`] entries. Each function has a
    /// loop of its own, and LeakyReLU's picks its factor with a select rather than a
    /// branch on the sign: so it vectorises (as a branch it ran scalar, mispredicting on
    /// half the entries, at 5x the time of burn's three passes).
    fn forward<const D: usize>(self, x: &FlexTensor, dims: [usize; D]) -> FlexTensor {
        match self {
            // As burn's: the input itself unless it is below 0.
            Pointwise::LeakyRelu(slope) => {
                map(x, dims, move |x| x * if x < 0.0 { slope } else { 1.0 })
            }
            Pointwise::Tanh => map(x, dims, f32::tanh),
        }
    }

    /// `dy · f'(x)` of every entry, with the derivative taken from the output `y`: both
    /// functions are monotone, so the output says where on the curve the input was (for
    /// LeakyReLU, which side of 0; for tanh, 1 − tanh² directly), and the backward pass
    /// needs no copy of the input. At an input of exactly 0 LeakyReLU's derivative is
    /// the slope (burn's is 1 there): with a slope of 0 the output cannot tell 0 from a
    /// negative input.
    fn backward(self, y: &[f32], dy: &[f32]) -> Vec<f32> {
        match self {
            Pointwise::LeakyRelu(slope) => {
                map2(y, dy, move |y, dy| dy * if y > 0.0 { 1.0 } else { slope })
            }
            Pointwise::Tanh => map2(y, dy, |y, dy| dy * (1.0 - y * y)),
        }
    }
}

fn apply<B: Backend, const D: usize>(x: Tensor<B, D>, f: Pointwise) -> Tensor<B, D> {
    let dims = x.dims();
    let x = cpu_float(x);
    let y = match PointwiseOp(f)
        .prepare::<NoCheckpointing>([x.node.clone()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => {
            let y = f.forward(&x.primitive, dims);
            // A clone shares the output's storage: the state costs no copy.
            prep.finish(y.clone(), y)
        }
        OpsKind::UnTracked(prep) => prep.finish(f.forward(&x.primitive, dims)),
    };
    let y = Tensor::<Cpu, D>::from_primitive(TensorPrimitive::Float(y));
    same_type::<_, Tensor<B, D>>(y).unwrap_or_else(|_| unreachable!("B is the CPU backend"))
}

/// `f` of every entry of `x`, in parallel tasks of [`TASK`] entries.
fn map<const D: usize>(
    x: &FlexTensor,
    dims: [usize; D],
    f: impl Fn(f32) -> f32 + Sync,
) -> FlexTensor {
    let x = contiguous(x);
    let x = values(&x);
    let y = par_filled(x.len(), TASK, |i, y| {
        map_task(y, &x[i * TASK..][..y.len()], &f)
    });
    FlexTensor::from_data(TensorData::new(y, dims))
}

#[multiversion(targets("x86_64+avx512f+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
fn map_task(y: &mut [f32], x: &[f32], f: &(impl Fn(f32) -> f32 + Sync)) {
    for (y, &x) in y.iter_mut().zip(x) {
        *y = f(x);
    }
}

/// `f` of the entries of `a` and `b` pairwise, in parallel tasks of [`TASK`] entries.
fn map2(a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f32 + Sync) -> Vec<f32> {
    par_filled(a.len(), TASK, |i, out| {
        let at = i * TASK..i * TASK + out.len();
        map2_task(out, &a[at.clone()], &b[at], &f)
    })
}

#[multiversion(targets("x86_64+avx512f+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
fn map2_task(out: &mut [f32], a: &[f32], b: &[f32], f: &(impl Fn(f32, f32) -> f32 + Sync)) {
    for ((out, &a), &b) in out.iter_mut().zip(a).zip(b) {
        *out = f(a, b);
    }
}

/// A pointwise activation on the CPU backend's autodiff graph; its state is its output.
#[derive(Debug)]
struct PointwiseOp(Pointwise);

impl Backward<Flex, 1> for PointwiseOp {
    type State = FlexTensor;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let dy = grads.consume::<Flex>(&ops.node);
        let [Some(node)] = ops.parents else {
            return;
        };
        let (y, dy) = (contiguous(&ops.state), contiguous(&dy));
        let dims = dy.layout().shape().clone();
        let dx = self.0.backward(values(&y), values(&dy));
        grads.register::<Flex>(node.id, FlexTensor::from_data(TensorData::new(dx, dims)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::data::test_normal as random;

    fn max_diff<const D: usize>(a: Tensor<Cpu, D>, b: Tensor<Cpu, D>) -> f32 {
        (a - b).abs().max().into_scalar()
    }

    /// Output and input gradient of `ours` against `burns`, on a tensor large enough to
    /// be split into several tasks (and with an uneven last one).
    fn matches_burn(
        ours: impl Fn(Tensor<Cpu, 4>) -> Tensor<Cpu, 4>,
        burns: impl Fn(Tensor<Cpu, 4>) -> Tensor<Cpu, 4>,
        what: &str,
    ) {
        let shape = [3, 5, 41, 67];
        assert!(shape.iter().product::<usize>() > 2 * TASK + 1);
        let x = (random(shape, 1) * 2.0).require_grad();
        let r = random(shape, 2);
        let (y1, y2) = (ours(x.clone()), burns(x.clone()));
        assert!(max_diff(y1.clone(), y2.clone()) < 1e-6, "{what}: output");
        let g1 = (y1 * r.clone()).sum().backward();
        let g2 = (y2 * r).sum().backward();
        let dx = |g| Tensor::<Cpu, 4>::from_inner(x.grad(g).expect("x has a gradient"));
        assert!(max_diff(dx(&g1), dx(&g2)) < 1e-5, "{what}: input gradient");
    }

    #[test]
    fn leaky_relu_and_its_gradient_match_burns() {
        for slope in [0.2, 0.0] {
            matches_burn(
                |x| leaky_relu(x, slope),
                |x| activation::leaky_relu(x, slope),
                &format!("LeakyReLU({slope})"),
            );
        }
    }

    #[test]
    fn tanh_and_its_gradient_match_burns() {
        matches_burn(tanh, activation::tanh, "tanh");
    }

    #[test]
    fn untracked_inputs_take_the_fast_path_too() {
        let x = random([2, 3, 4, 5], 3);
        assert!(max_diff(tanh(x.clone()), activation::tanh(x.clone())) < 1e-6);
        assert!(max_diff(leaky_relu(x.clone(), 0.2), activation::leaky_relu(x, 0.2)) < 1e-6);
    }
}
