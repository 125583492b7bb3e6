//! Times one DCGAN training step on the CPU backend (burn flex with autodiff), or on
//! CUDA (burn-cuda with autodiff, in a build with `--features cuda`); the Rust half of
//! `bench/dcgan_step_vs_pytorch.py`.
//!
//! ```text
//! cargo run --release -p gantry-stages --example dcgan_step -- \
//!     [--steps 20] [--warmup 3] [--threads 2] [--breakdown-steps N] [--seed 1] \
//!     [--breakdown-nets project|stock] [--backend cpu|cuda|auto] \
//!     [--perf-control CTL_FIFO,ACK_FIFO]
//! ```
//!
//! 32x32x3 images (256 of pseudo-random bytes), batch 64, the usual 4-layer G and D
//! (`features: 64`, latent 100), Adam (lr 2e-4, betas 0.5/0.999). Everything runs on a
//! rayon pool of `--threads` threads (flex and its gemm use rayon).
//!
//! Part 1 times the project's own code: `Batcher::batch` (u8 NHWC -> f32 NCHW in
//! [-1, 1]) and `Dcgan::step` (one D update on real + detached fake, one G update, as
//! the `dcgan` stage runs it with `g_advantage: 1`), `--warmup` untimed iterations
//! then `--steps` timed ones. Part 2 (`--breakdown-steps`, default `--steps`, 0 to
//! skip) repeats the same step written out with the same networks, initialisation,
//! optimizers and losses, timing each phase: forward, backward and optimizer update of
//! each network. Its total should match part 1 (a check that the breakdown is the same
//! work). `--breakdown-nets stock` runs part 2 with the layers of burn's own modules
//! (`ConvTranspose2d`, `Conv2d`, `BatchNorm` forward) instead of the project's
//! `Generator::forward` / `Discriminator::forward`, which may replace some of them
//! (e.g. `nets::batch_norm`): an A/B of the project's layer code on the same weights.
//! Part 2 also prints each phase's cores busy (CPU time of all threads / wall time), which
//! says whether a phase leaves one of the `--threads` idle.
//! Minor page faults per step (from /proc/self/stat) show how much fresh memory
//! the allocator asks the kernel for; `cpu_ms` is the process's CPU time per step (user +
//! system, 10 ms ticks: use its mean), which other load on the machine inflates less
//! than the wall time.
//!
//! On CUDA the GPU runs behind the host: each step ends when `Dcgan::step` has read its
//! losses back (as PyTorch's `.item()`), and each phase of part 2 ends with a device
//! sync so that its time is the GPU's work for that phase, not the launch time.
//!
//! `--perf-control` names the fifos of `perf record -D -1 --control fifo:CTL,ACK`: the
//! example enables perf's events when part 1's warm-up is over and disables them after
//! its last timed step, so that a profile holds the timed steps only (the warm-up steps
//! fault in the whole working set: a tenth of their CPU time is the kernel zeroing pages).
//!
//! Prints a human-readable table, then one `JSON {...}` line and a final
//! `RESULT median_ms=... mean_ms=...` line (batch creation + `Dcgan::step`).

use std::error::Error;
use std::time::Instant;

use burn::module::Module;
use burn::optim::GradientsParams;
use burn::tensor::Tensor;
use burn::tensor::activation::sigmoid;
use burn::tensor::backend::AutodiffBackend;
use gantry_datasets::ImageSet;
use gantry_stages::dcgan::{Dcgan, DcganConfig};
use gantry_stages::train::backend::{OnBackend, dispatch};
use gantry_stages::train::data::{Batch, Batcher, Stream, latents};
use gantry_stages::train::driver::Schedule;
use gantry_stages::train::driver::{Gan, scalar};
use gantry_stages::train::init::{Init, init};
use gantry_stages::train::loss::bce_logits;
use gantry_stages::train::nets::{Discriminator, Generator};
use gantry_stages::train::optim::OptimizerSpec;

/// The gantry binary's allocator, so that the timings are those of what it runs.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

type Res<T> = Result<T, Box<dyn Error + Send + Sync>>;

const SIZE: usize = 32;
const CHANNELS: usize = 3;
const BATCH: usize = 64;
const LATENT: usize = 100;
const FEATURES: usize = 64;
const INIT_STD: f64 = 0.02;

struct Args {
    steps: usize,
    warmup: usize,
    threads: usize,
    breakdown_steps: Option<usize>,
    seed: u64,
    stock_nets: bool,
    backend: String,
    perf_control: Option<(String, String)>,
}

fn parse_args() -> Res<Args> {
    let mut a = Args {
        steps: 20,
        warmup: 3,
        threads: 2,
        breakdown_steps: None,
        seed: 1,
        stock_nets: false,
        backend: "cpu".into(),
        perf_control: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--steps" => a.steps = value()?.parse::<usize>()?.max(1),
            "--warmup" => a.warmup = value()?.parse()?,
            "--threads" => a.threads = value()?.parse::<usize>()?.max(1),
            "--breakdown-steps" => a.breakdown_steps = Some(value()?.parse()?),
            "--seed" => a.seed = value()?.parse()?,
            "--backend" => a.backend = value()?,
            "--perf-control" => {
                let v = value()?;
                let (ctl, ack) = v
                    .split_once(',')
                    .ok_or_else(|| format!("--perf-control {v}: CTL_FIFO,ACK_FIFO"))?;
                a.perf_control = Some((ctl.into(), ack.into()));
            }
            "--breakdown-nets" => {
                a.stock_nets = match value()?.as_str() {
                    "project" => false,
                    "stock" => true,
                    v => return Err(format!("--breakdown-nets {v}: project or stock").into()),
                }
            }
            // `cargo bench`-style harness flags, ignored.
            "--bench" => {}
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    Ok(a)
}

/// 4 batches of pseudo-random images (xorshift, fixed seed).
fn images(seed: u64) -> ImageSet {
    let mut set = ImageSet::new(SIZE as u32, SIZE as u32, CHANNELS as u8);
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut px = vec![0u8; SIZE * SIZE * CHANNELS];
    for _ in 0..BATCH * 4 {
        for b in px.iter_mut() {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            *b = (s >> 24) as u8;
        }
        set.push(&px);
    }
    set
}

fn config() -> DcganConfig {
    let adam = OptimizerSpec::adam(2e-4, 0.5, 0.999);
    DcganConfig {
        batch_size: BATCH,
        g_advantage: 1,
        latent_dim: LATENT,
        features: FEATURES,
        g_optimizer: adam.clone(),
        d_optimizer: adam,
        init_std: INIT_STD,
        schedule: Schedule {
            epochs: 1,
            checkpoint_every: 0,
            sample_every: 0,
            sample_steps: vec![],
            samples: 64,
            grid: 64,
        },
    }
}

/// Minor page faults and CPU time (user + system, ms) of this process so far, from
/// /proc/self/stat (fields 10, 14 and 15; clock ticks of 10 ms).
fn proc_counters() -> (u64, f64) {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, a)| a).unwrap_or("");
    let fields: Vec<u64> = after
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    let get = |i: usize| fields.get(i).copied().unwrap_or(0);
    (get(6), (get(10) + get(11)) as f64 * 10.0)
}

/// CPU time of all this process's threads so far, in ms, from the scheduler's per-thread
/// run times (/proc/self/task/*/schedstat, nanoseconds). A running thread's total is
/// brought up to date only at a scheduler tick or when it stops, so phases of a few ms
/// read low; the long ones (forward, backward) are what this is for.
fn process_cpu_ms() -> f64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return f64::NAN;
    };
    let ns: u64 = tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    ns as f64 / 1e6
}

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let n = s.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

/// Named series of per-step times (ms).
#[derive(Default)]
struct Times {
    names: Vec<&'static str>,
    values: Vec<Vec<f64>>,
}

impl Times {
    fn add(&mut self, name: &'static str, v: f64) {
        match self.names.iter().position(|n| *n == name) {
            Some(i) => self.values[i].push(v),
            None => {
                self.names.push(name);
                self.values.push(vec![v]);
            }
        }
    }
    fn get(&self, name: &str) -> &[f64] {
        self.names
            .iter()
            .position(|n| *n == name)
            .map(|i| self.values[i].as_slice())
            .unwrap_or(&[])
    }
    fn json(&self) -> String {
        let parts: Vec<String> = self
            .names
            .iter()
            .zip(&self.values)
            .map(|(n, v)| {
                let list: Vec<String> = v.iter().map(|x| format!("{x:.4}")).collect();
                format!("\"{n}\":[{}]", list.join(","))
            })
            .collect();
        format!("{{{}}}", parts.join(","))
    }
}

/// The generator's forward pass through burn's own modules only
/// (`ConvTranspose2d::forward`, `BatchNorm::forward`), whatever the project's
/// `Generator::forward` does instead: an A/B of the project's layer code against burn's
/// on the same weights.
fn g_forward_stock<B: burn::tensor::backend::Backend>(
    g: &Generator<B>,
    z: Tensor<B, 2>,
) -> Tensor<B, 4> {
    use burn::tensor::activation::{relu, tanh};
    let [n, d] = z.dims();
    let mut x = z.reshape([n, d, 1, 1]);
    let last = g.convs.len() - 1;
    for (i, conv) in g.convs.iter().enumerate() {
        x = conv.forward(x);
        if i < last {
            x = relu(g.norms[i].forward(x));
        }
    }
    tanh(x)
}

/// The discriminator's forward pass through burn's own modules only (`Conv2d::forward`,
/// `BatchNorm::forward`), as [`g_forward_stock`].
fn d_forward_stock<B: burn::tensor::backend::Backend>(
    d: &Discriminator<B>,
    x: Tensor<B, 4>,
) -> Tensor<B, 1> {
    use burn::tensor::activation::leaky_relu;
    let mut x = x;
    let last = d.convs.len() - 1;
    for (i, conv) in d.convs.iter().enumerate() {
        x = conv.forward(x);
        if i < last {
            if i > 0 && !d.norms.is_empty() {
                x = d.norms[i - 1].forward(x);
            }
            x = leaky_relu(x, 0.2);
        }
    }
    let n = x.dims()[0];
    x.reshape([n])
}

/// Sends `command` (`enable` or `disable`) to a `perf record --control fifo:CTL,ACK` and
/// waits for its acknowledgement, so that the events switch before the caller goes on.
fn perf_command(control: &Option<(String, String)>, command: &str) -> Res<()> {
    use std::io::{BufRead, Write};
    let Some((ctl, ack)) = control else {
        return Ok(());
    };
    std::fs::OpenOptions::new()
        .write(true)
        .open(ctl)?
        .write_all(format!("{command}\n").as_bytes())?;
    let mut reply = String::new();
    std::io::BufReader::new(std::fs::File::open(ack)?).read_line(&mut reply)?;
    if reply.trim() != "ack" {
        return Err(format!("perf answered {reply:?} to {command}").into());
    }
    Ok(())
}

/// Part 1: the project's own `Batcher::batch` + `Dcgan::step`.
fn time_dcgan_step<B: AutodiffBackend>(
    args: &Args,
    batcher: &Batcher,
    device: &B::Device,
    times: &mut Times,
) -> Res<()> {
    let device = device.clone();
    let mut gan = Dcgan::<B>::new(&config(), SIZE, CHANNELS, args.seed, &device)?;
    let mut last = Vec::new();
    for step in 0..args.warmup + args.steps {
        if step == args.warmup {
            perf_command(&args.perf_control, "enable")?;
        }
        let (faults, cpu) = proc_counters();
        let t0 = Instant::now();
        let batch: Batch<B> = batcher.batch::<B>(step, &device);
        let t_batch = ms(t0);
        let t1 = Instant::now();
        last = gan.step(step, batch);
        let t_step = ms(t1);
        let total = ms(t0);
        if step >= args.warmup {
            times.add("batch", t_batch);
            times.add("gan_step", t_step);
            times.add("total", total);
            let (faults_now, cpu_now) = proc_counters();
            times.add("minor_faults", (faults_now - faults) as f64);
            times.add("cpu_ms", cpu_now - cpu);
        }
    }
    perf_command(&args.perf_control, "disable")?;
    if last.iter().any(|v| !v.is_finite()) {
        return Err(format!("non-finite losses {last:?}").into());
    }
    eprintln!("last step: d_loss, g_loss, ratio, d_real, d_fake = {last:.4?}");
    Ok(())
}

/// Part 2: the step of `Dcgan::step` written out, timing each phase.
fn time_breakdown<B: AutodiffBackend>(
    args: &Args,
    steps: usize,
    batcher: &Batcher,
    device: &B::Device,
    times: &mut Times,
    cpu_times: &mut Times,
) -> Res<()> {
    let device = device.clone();
    let how = Init::Normal { std: INIT_STD };
    let mut g = init(
        Generator::<B>::new(LATENT, SIZE, CHANNELS, FEATURES, &device)?,
        how,
        args.seed,
        0,
        &device,
    );
    let mut d = init(
        Discriminator::<B>::new(SIZE, CHANNELS, FEATURES, true, &device)?,
        how,
        args.seed,
        1,
        &device,
    );
    let spec = OptimizerSpec::adam(2e-4, 0.5, 0.999);
    let mut g_opt = spec.init::<B, Generator<B>>();
    let mut d_opt = spec.init::<B, Discriminator<B>>();
    let lr = spec.lr;
    let g_forward = |g: &Generator<B>, z: Tensor<B, 2>| {
        if args.stock_nets {
            g_forward_stock(g, z)
        } else {
            g.forward(z)
        }
    };
    let d_forward = |d: &Discriminator<B>, x: Tensor<B, 4>| {
        if args.stock_nets {
            d_forward_stock(d, x)
        } else {
            d.forward(x)
        }
    };
    for step in 0..args.warmup + steps {
        let timed = step >= args.warmup;
        let mut mark = Instant::now();
        let mut cpu_mark = process_cpu_ms();
        let mut lap = |name: &'static str, times: &mut Times| {
            // A no-op on the CPU; on a GPU it waits for the phase's kernels.
            let _ = B::sync(&device);
            let cpu_now = process_cpu_ms();
            if timed {
                times.add(name, ms(mark));
                cpu_times.add(name, cpu_now - cpu_mark);
            }
            mark = Instant::now();
            cpu_mark = cpu_now;
        };
        let (t0, c0) = (Instant::now(), process_cpu_ms());
        let batch = batcher.batch::<B>(step, &device);
        lap("batch", times);
        let z = latents::<B>(
            args.seed,
            Stream::Latent,
            step as u64,
            BATCH,
            LATENT,
            &device,
        );
        lap("latents", times);
        // D update.
        let fake = g_forward(&g, z.clone());
        lap("d_upd.g_forward", times);
        let d_real = d_forward(&d, batch.images);
        let d_fake = d_forward(&d, fake.clone().detach());
        lap("d_upd.d_forward", times);
        let _ = scalar(sigmoid(d_real.clone().detach()).mean());
        let _ = scalar(sigmoid(d_fake.clone().detach()).mean());
        let d_loss = bce_logits(d_real, true) + bce_logits(d_fake, false);
        let _ = scalar(d_loss.clone().detach());
        lap("d_upd.loss", times);
        let grads = d_loss.backward();
        lap("d_upd.backward", times);
        let grads = GradientsParams::from_grads(grads, &d);
        d = d_opt.step(lr, d.clone(), grads);
        lap("d_upd.adam", times);
        // G update, through the images generated for the D update (as `Dcgan::step`).
        let logits = d_forward(&d.clone().no_grad(), fake);
        lap("g_upd.d_forward", times);
        let g_loss = bce_logits(logits, true);
        let _ = scalar(g_loss.clone().detach());
        lap("g_upd.loss", times);
        let grads = g_loss.backward();
        lap("g_upd.backward", times);
        let grads = GradientsParams::from_grads(grads, &g);
        g = g_opt.step(lr, g.clone(), grads);
        lap("g_upd.adam", times);
        if timed {
            times.add("total", ms(t0));
            cpu_times.add("total", process_cpu_ms() - c0);
        }
    }
    Ok(())
}

/// Parts 1 and 2, on the backend `--backend` names (chosen as the stages choose it).
struct Bench<'a> {
    args: &'a Args,
    batcher: &'a Batcher,
    breakdown_steps: usize,
}

/// What parts 1 and 2 measured, and on which backend.
#[derive(Default)]
struct Measured {
    backend: String,
    step: Times,
    parts: Times,
    /// CPU time of each phase of part 2, beside its wall time in `parts`.
    parts_cpu: Times,
}

impl OnBackend for Bench<'_> {
    type Output = Res<Measured>;

    fn run<B: AutodiffBackend>(self, device: B::Device, label: String) -> Res<Measured> {
        let mut m = Measured {
            backend: label,
            ..Measured::default()
        };
        time_dcgan_step::<B>(self.args, self.batcher, &device, &mut m.step)?;
        if self.breakdown_steps > 0 {
            time_breakdown::<B>(
                self.args,
                self.breakdown_steps,
                self.batcher,
                &device,
                &mut m.parts,
                &mut m.parts_cpu,
            )?;
        }
        Ok(m)
    }
}

fn main() -> Res<()> {
    let args = parse_args()?;
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(args.threads)
        .build()?;
    let batcher = Batcher::new(images(args.seed), None, BATCH, args.seed);
    let breakdown_steps = args.breakdown_steps.unwrap_or(args.steps);
    let bench = Bench {
        args: &args,
        batcher: &batcher,
        breakdown_steps,
    };
    let Measured {
        backend,
        step: step_times,
        parts,
        parts_cpu,
    } = pool.install(|| dispatch(&args.backend, &[], bench))??;

    let total = step_times.get("total");
    println!(
        "DCGAN step, {SIZE}x{SIZE}x{CHANNELS}, batch {BATCH}, features {FEATURES}, \
         {backend} with autodiff, {} timed steps after {} warm-up",
        args.steps, args.warmup
    );
    println!("{:<22} {:>10} {:>10}", "part (ms)", "median", "mean");
    for name in ["batch", "gan_step", "total", "cpu_ms", "minor_faults"] {
        let v = step_times.get(name);
        println!("{name:<22} {:>10.2} {:>10.2}", median(v), mean(v));
    }
    if breakdown_steps > 0 {
        println!(
            "breakdown ({breakdown_steps} steps; the same step written out; layers: {}):",
            if args.stock_nets {
                "burn's stock modules"
            } else {
                "the project's Generator/Discriminator::forward"
            }
        );
        let t = median(parts.get("total"));
        println!(
            "  {:<20} {:>10} {:>10} {:>7} {:>12}",
            "phase (ms)", "median", "mean", "share", "cores busy"
        );
        for (name, v) in parts.names.iter().zip(&parts.values) {
            let busy = mean(parts_cpu.get(name)) / mean(v);
            println!(
                "  {name:<20} {:>10.2} {:>10.2} {:>6.1}% {busy:>12.2}",
                median(v),
                mean(v),
                100.0 * median(v) / t
            );
        }
    }
    println!(
        "JSON {{\"backend\":\"{}\",\"threads\":{},\"stock_nets\":{},\"steps\":{},\"warmup\":{},\"step\":{},\
         \"breakdown\":{}}}",
        args.backend,
        args.threads,
        args.stock_nets,
        args.steps,
        args.warmup,
        step_times.json(),
        parts.json()
    );
    println!(
        "RESULT median_ms={:.3} mean_ms={:.3} cpu_mean_ms={:.1} step_median_ms={:.3} \
         batch_median_ms={:.3}",
        median(total),
        mean(total),
        mean(step_times.get("cpu_ms")),
        median(step_times.get("gan_step")),
        median(step_times.get("batch"))
    );
    Ok(())
}
