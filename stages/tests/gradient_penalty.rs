//! The WGAN-GP penalty must be the real one: its value must match λ·E[(‖∇ₓD(x̂)‖ − 1)²]
//! computed from the input gradient, and its gradient with respect to the critic's
//! parameters must match central finite differences of that true penalty. burn has no
//! double backward, so `gantry_stages::wgan::gradient_penalty` uses a first-order form
//! (see its module docs); this test is what says the form is right.

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Tensor, TensorData};
use gantry_stages::train::backend::Cpu;
use gantry_stages::train::data::{Stream, normal, rng};
use gantry_stages::train::init::{Init, init};
use gantry_stages::train::nets::Discriminator;
use gantry_stages::wgan::{gradient_penalty, input_gradient};
use rand_chacha::ChaCha8Rng;

type B = Cpu;

const LAMBDA: f64 = 10.0;

fn critic(seed: u64, std: f64) -> Discriminator<B> {
    let dev = Default::default();
    init(
        Discriminator::<B>::new(16, 3, 8, false, &dev).unwrap(),
        Init::Normal { std },
        seed,
        1,
        &dev,
    )
}

fn images(seed: u64, n: usize) -> Tensor<B, 4> {
    let v: Vec<f32> = normal(&mut rng(seed, Stream::Fixed, 9), n * 3 * 16 * 16)
        .into_iter()
        .map(|z| (z * 0.5).clamp(-1.0, 1.0))
        .collect();
    Tensor::from_data(TensorData::new(v, [n, 3, 16, 16]), &Default::default())
}

/// The true penalty, from the input gradient's norm (no surrogate).
fn true_penalty(d: &Discriminator<B>, x: &Tensor<B, 4>) -> f64 {
    let (norm, _) = input_gradient(d, x.clone());
    let v: Vec<f32> = norm.into_data().into_vec().unwrap();
    LAMBDA * v.iter().map(|&g| (g as f64 - 1.0).powi(2)).sum::<f64>() / v.len() as f64
}

/// Adds `h` times a fixed random direction (scaled per parameter) to every weight.
struct Shift {
    rng: ChaCha8Rng,
    h: f32,
}

impl ModuleMapper<B> for Shift {
    fn map_float<const D: usize>(&mut self, p: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let h = self.h;
        let r = &mut self.rng;
        p.map(|t| {
            let shape = t.dims();
            let n: usize = shape.iter().product();
            let v = Tensor::<B, D>::from_data(TensorData::new(normal(r, n), shape), &t.device());
            Tensor::from_inner((t + v * h).inner()).require_grad()
        })
    }
}

/// ⟨∇θ, v⟩ for the same direction v as [`Shift`] draws.
struct Dot<'a> {
    rng: ChaCha8Rng,
    grads: &'a <B as AutodiffBackend>::Gradients,
    sum: f64,
}

impl ModuleVisitor<B> for Dot<'_> {
    fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<B, D>>) {
        let t = p.val();
        let shape = t.dims();
        let n: usize = shape.iter().product();
        let v = normal(&mut self.rng, n);
        if let Some(g) = t.grad(self.grads) {
            let g: Vec<f32> = g.into_data().into_vec().unwrap();
            self.sum += g
                .iter()
                .zip(&v)
                .map(|(a, b)| *a as f64 * *b as f64)
                .sum::<f64>();
        }
    }
}

/// Signs of every pre-activation of the critic on `x`: where these agree at θ + h and
/// θ − h, the penalty is smooth between them and central differences are valid.
fn pattern(d: &Discriminator<B>, x: &Tensor<B, 4>) -> Vec<bool> {
    let mut h = x.clone();
    let mut signs = Vec::new();
    let last = d.convs.len() - 1;
    for (i, conv) in d.convs.iter().enumerate() {
        h = conv.forward(h);
        if i < last {
            signs.extend(
                h.clone()
                    .into_data()
                    .into_vec::<f32>()
                    .unwrap()
                    .iter()
                    .map(|v| *v > 0.0),
            );
            h = burn::tensor::activation::leaky_relu(h, 0.2);
        }
    }
    signs
}

/// ⟨∇θ penalty, v⟩ by autodiff of the surrogate, for the default ε.
fn surrogate_gradient(d: &Discriminator<B>, x: &Tensor<B, 4>, seed: u64) -> (f64, f64) {
    let (penalty, _, _) = gradient_penalty(d, x.clone(), LAMBDA, EPS);
    let value = penalty.clone().into_scalar() as f64;
    let grads = penalty.backward();
    let mut dot = Dot {
        rng: rng(seed, Stream::Labels, 77),
        grads: &grads,
        sum: 0.0,
    };
    d.visit(&mut dot);
    (value, dot.sum)
}

/// Central differences of the true penalty along the same direction, with the largest
/// step that keeps every pre-activation on its side of zero (else `None`: the penalty is
/// not differentiable within reach).
fn finite_differences(d: &Discriminator<B>, x: &Tensor<B, 4>, seed: u64) -> Option<(f64, f64)> {
    let base = pattern(d, x);
    for h in [1e-4f32, 3e-5, 1e-5] {
        let plus = d.clone().map(&mut Shift {
            rng: rng(seed, Stream::Labels, 77),
            h,
        });
        let minus = d.clone().map(&mut Shift {
            rng: rng(seed, Stream::Labels, 77),
            h: -h,
        });
        if pattern(&plus, x) == base && pattern(&minus, x) == base {
            let fd = (true_penalty(&plus, x) - true_penalty(&minus, x)) / (2.0 * h as f64);
            return Some((fd, h as f64));
        }
    }
    None
}

/// The stage's default ε (`gp_epsilon`).
const EPS: f64 = 1e-3;

#[test]
fn penalty_value_and_parameter_gradient_match_the_true_penalty() {
    let mut checked = 0;
    let mut at_kinks = 0;
    for seed in 1..=12u64 {
        let d = critic(seed, 0.15);
        let x = images(seed, 2);
        // Where x̂ ± εu lies across a kink of the critic, the central difference is not the
        // gradient norm (the penalty is not differentiable there): counted, not compared.
        let (_, u) = input_gradient(&d, x.clone());
        let base = pattern(&d, &x);
        let crosses = pattern(&d, &(x.clone() + u.clone() * EPS)) != base
            || pattern(&d, &(x.clone() - u * EPS)) != base;
        let Some((fd, h)) = finite_differences(&d, &x, seed) else {
            at_kinks += 1;
            continue;
        };
        if crosses {
            at_kinks += 1;
            continue;
        }
        let truth = true_penalty(&d, &x);
        let (value, grad) = surrogate_gradient(&d, &x, seed);
        eprintln!(
            "seed {seed}: penalty {value:.6} (true {truth:.6}); d/dθ·v {grad:.5} (finite differences {fd:.5}, h {h})"
        );
        assert!(
            (value - truth).abs() <= 1e-3 * truth.abs().max(1.0),
            "seed {seed}: surrogate penalty {value} vs true {truth}"
        );
        // f32 round-off of the penalty (~1e-6 relative) divided by 2h, plus 3%.
        let tol = 0.03 * fd.abs() + 1e-5 * truth.abs().max(1.0) / h;
        assert!(
            (grad - fd).abs() <= tol,
            "seed {seed}: parameter gradient {grad} vs finite differences {fd} (tolerance {tol})"
        );
        checked += 1;
    }
    eprintln!("{checked} compared, {at_kinks} at a kink");
    assert!(
        checked >= 6,
        "only {checked} of 12 critics were away from kinks"
    );
}

#[test]
fn the_comparison_can_fail() {
    // A penalty whose gradient norm is treated as a constant (what a port without double
    // backward gets by default) has a zero parameter gradient; the finite differences the
    // test above compares with are far from zero, so such a penalty would fail it.
    let seed = 1;
    let d = critic(seed, 0.15);
    let x = images(seed, 2);
    let (norm, _) = input_gradient(&d, x.clone());
    let naive = Tensor::<B, 1>::from_inner(norm)
        .sub_scalar(1.0)
        .powi_scalar(2)
        .mean()
        * LAMBDA;
    let grads = naive.backward();
    let mut dot = Dot {
        rng: rng(seed, Stream::Labels, 77),
        grads: &grads,
        sum: 0.0,
    };
    d.visit(&mut dot);
    let (fd, _) = finite_differences(&d, &x, seed).expect("seed 1 is away from kinks");
    assert!(dot.sum.abs() < 1e-9, "naive gradient {}", dot.sum);
    assert!(fd.abs() > 1.0, "finite differences {fd}");
}
