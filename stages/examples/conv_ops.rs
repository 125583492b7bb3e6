//! Times each convolution of the DCGAN benchmark's networks (32x32x3, batch 64, features
//! 64) on the CPU backend, burn's own operations against `train::conv`'s: the forward
//! pass alone, and forward plus both gradients (input and weight).
//!
//! ```text
//! cargo run --release -p gantry-stages --example conv_ops -- [--threads 2] [--reps 7]
//! ```
//!
//! Prints the median of `--reps` timed repetitions (after one untimed) per layer, in ms.

use std::time::Instant;

use burn::nn::PaddingConfig2d;
use burn::nn::conv::{Conv2dConfig, ConvTranspose2dConfig};
use burn::prelude::Backend;
use burn::tensor::{Distribution, Tensor};
use gantry_stages::train::backend::Cpu;
use gantry_stages::train::conv::{conv_transpose2d_forward, conv2d_forward};

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

type Layer = Box<dyn Fn(Tensor<Cpu, 4>, bool) -> Tensor<Cpu, 4>>;

fn main() {
    let (threads, reps) = (arg("--threads", 2), arg("--reps", 7));
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
        layers.push((
            format!("conv {ci}->{co} {h}x{h}"),
            [n, ci, h, h],
            Box::new(move |x, fast| {
                if fast {
                    conv2d_forward(&conv, x)
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
        layers.push((
            format!("convT {ci}->{co} {h}x{h}"),
            [n, ci, h, h],
            Box::new(move |x, fast| {
                if fast {
                    conv_transpose2d_forward(&conv, x)
                } else {
                    conv.forward(x)
                }
            }),
        ));
    }
    println!(
        "{threads} thread(s), batch {n}, median of {reps}, ms\n{:<22} {:>10} {:>10} {:>10} {:>10}",
        "layer", "fwd burn", "fwd ours", "f+b burn", "f+b ours"
    );
    let mut total = [0.0; 4];
    for (name, shape, layer) in &layers {
        let x = Tensor::<Cpu, 4>::random(*shape, Distribution::Normal(0.0, 1.0), &device);
        let mut row = [0.0; 4];
        for (i, fast) in [false, true].into_iter().enumerate() {
            row[i] = median_ms(reps, || {
                layer(x.clone(), fast).into_data();
            });
            row[2 + i] = median_ms(reps, || {
                let x = x.clone().require_grad();
                let grads = layer(x.clone(), fast).sum().backward();
                x.grad(&grads).map(|g| g.into_data());
            });
        }
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
