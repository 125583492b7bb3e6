//! Times each convolution of the DCGAN benchmark's networks (32x32x3, batch 64, features
//! 64) on the CPU backend, burn's own operations against `train::conv`'s: the forward
//! pass alone, and forward plus both gradients (input and weight).
//!
//! ```text
//! cargo run --release -p gantry-stages --example conv_ops -- [--threads 2] [--reps 7] [--parts 1]
//! ```
//!
//! Prints the median of `--reps` timed repetitions (after one untimed) per layer, in ms.
//! `--parts 1` times only `train::conv`'s operations, each gradient on its own: the
//! forward pass, forward + input gradient (the weight frozen), forward + weight gradient
//! (the input not tracked), and forward + both.

use std::time::Instant;

use burn::module::Module;
use burn::nn::PaddingConfig2d;
use burn::nn::conv::{Conv2dConfig, ConvTranspose2dConfig};
use burn::prelude::Backend;
use burn::tensor::{Distribution, Tensor};
use gantry_stages::train::backend::Cpu;
use gantry_stages::train::conv::{conv_transpose2d_forward, conv2d_forward};

/// The gantry binary's allocator, so that the timings are those of what it runs.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn median_ms(reps: usize, mut f: impl FnMut()) -> f64 {
    f();
    let mut v: Vec<f64> = (0..reps)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A layer's forward pass: (input, whether to use `train::conv`, whether the weight is
/// frozen).
type Layer = Box<dyn Fn(Tensor<Cpu, 4>, bool, bool) -> Tensor<Cpu, 4>>;

fn main() {
    let (threads, reps) = (arg("--threads", 2), arg("--reps", 7));
    let parts = arg("--parts", 0) != 0;
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build_global()
        .expect("the global pool is built once");
    let device = Default::default();
    <Cpu as Backend>::seed(&device, 1);
    let n = 64;
    let mut layers: Vec<(String, [usize; 4], Layer)> = Vec::new();
    for (ci, co, h, stride, pad) in [
        (3, 64, 32, 2, 1),
        (64, 128, 16, 2, 1),
        (128, 256, 8, 2, 1),
        (256, 1, 4, 1, 0),
    ] {
        let conv = Conv2dConfig::new([ci, co], [4, 4])
            .with_stride([stride, stride])
            .with_padding(PaddingConfig2d::Explicit(pad, pad, pad, pad))
            .with_bias(false)
            .init::<Cpu>(&device);
        let frozen = conv.clone().no_grad();
        layers.push((
            format!("conv {ci}->{co} {h}x{h}"),
            [n, ci, h, h],
            Box::new(move |x, fast, freeze| {
                let conv = if freeze { &frozen } else { &conv };
                if fast {
                    conv2d_forward(conv, x)
                } else {
                    conv.forward(x)
                }
            }),
        ));
    }
    for (ci, co, h, stride, pad) in [
        (100, 256, 1, 1, 0),
        (256, 128, 4, 2, 1),
        (128, 64, 8, 2, 1),
        (64, 3, 16, 2, 1),
    ] {
        let conv = ConvTranspose2dConfig::new([ci, co], [4, 4])
            .with_stride([stride, stride])
            .with_padding([pad, pad])
            .with_bias(false)
            .init::<Cpu>(&device);
        let frozen = conv.clone().no_grad();
        layers.push((
            format!("convT {ci}->{co} {h}x{h}"),
            [n, ci, h, h],
            Box::new(move |x, fast, freeze| {
                let conv = if freeze { &frozen } else { &conv };
                if fast {
                    conv_transpose2d_forward(conv, x)
                } else {
                    conv.forward(x)
                }
            }),
        ));
    }
    let heads = if parts {
        ["fwd", "f+dx", "f+dw", "f+dx+dw"]
    } else {
        ["fwd burn", "fwd ours", "f+b burn", "f+b ours"]
    };
    println!(
        "{threads} thread(s), batch {n}, median of {reps}, ms\n{:<22} {:>10} {:>10} {:>10} {:>10}",
        "layer", heads[0], heads[1], heads[2], heads[3]
    );
    let mut total = [0.0; 4];
    for (name, shape, layer) in &layers {
        let x = Tensor::<Cpu, 4>::random(*shape, Distribution::Normal(0.0, 1.0), &device);
        let forward = |fast: bool| {
            median_ms(reps, || {
                layer(x.clone(), fast, true).into_data();
            })
        };
        // The timed work ends with the gradients read out, as an optimizer would.
        let backward = |fast: bool, dx: bool, dw: bool| {
            median_ms(reps, || {
                let x = if dx {
                    x.clone().require_grad()
                } else {
                    x.clone()
                };
                let grads = layer(x.clone(), fast, !dw).sum().backward();
                x.grad(&grads).map(|g| g.into_data());
            })
        };
        let row = if parts {
            [
                forward(true),
                backward(true, true, false),
                backward(true, false, true),
                backward(true, true, true),
            ]
        } else {
            [
                forward(false),
                forward(true),
                backward(false, true, true),
                backward(true, true, true),
            ]
        };
        for (t, r) in total.iter_mut().zip(row) {
            *t += r;
        }
        println!(
            "{name:<22} {:>10.2} {:>10.2} {:>10.2} {:>10.2}",
            row[0], row[1], row[2], row[3]
        );
    }
    println!(
        "{:<22} {:>10.2} {:>10.2} {:>10.2} {:>10.2}",
        "total", total[0], total[1], total[2], total[3]
    );
}
