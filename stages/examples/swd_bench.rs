//! Times `metrics::swd::swd` on two raw image sets; the Rust half of
//! `bench/swd_vs_numpy.py`.
//!
//! ```text
//! cargo run --release --example swd_bench -p gantry-stages -- \
//!     --real REAL.u8 --fake FAKE.u8 [--size 64x64] [--channels 3] [--threads 2] \
//!     [--seed 0] [--repeat 1]
//! ```
//!
//! Each file holds N images, u8, NHWC, back to back. Both are read before anything is
//! timed. Then, on a rayon pool of `--threads` threads, `--repeat` timed calls of
//! `swd` (each one whole: pyramids, descriptors, projections, sorting). Prints one
//! JSON object: every call's wall time, the result of the last call, and the peak
//! resident memory of the process (Linux `VmHWM`) when it can be read.

use std::error::Error;
use std::path::PathBuf;
use std::time::Instant;

use gantry_datasets::ImageSet;
use gantry_stages::metrics::swd::{SwdConfig, swd};

/// The gantry binary's allocator, so that the timings are those of what it runs.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Args {
    real: PathBuf,
    fake: PathBuf,
    width: u32,
    height: u32,
    channels: u8,
    threads: usize,
    seed: u64,
    repeat: usize,
}

fn parse_args() -> Result<Args, Box<dyn Error>> {
    let mut real = None;
    let mut fake = None;
    let mut args = Args {
        real: PathBuf::new(),
        fake: PathBuf::new(),
        width: 64,
        height: 64,
        channels: 3,
        threads: 2,
        seed: 0,
        repeat: 1,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--real" => real = Some(PathBuf::from(value()?)),
            "--fake" => fake = Some(PathBuf::from(value()?)),
            "--size" => {
                let v = value()?;
                let (w, h) = v
                    .split_once('x')
                    .ok_or_else(|| format!("--size wants WxH, got {v}"))?;
                args.width = w.parse()?;
                args.height = h.parse()?;
            }
            "--channels" => args.channels = value()?.parse()?,
            "--threads" => args.threads = value()?.parse()?,
            "--seed" => args.seed = value()?.parse()?,
            "--repeat" => args.repeat = value()?.parse()?,
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    args.real = real.ok_or("--real is required")?;
    args.fake = fake.ok_or("--fake is required")?;
    Ok(args)
}

fn load(path: &PathBuf, args: &Args) -> Result<ImageSet, Box<dyn Error>> {
    let mut set = ImageSet::new(args.width, args.height, args.channels);
    set.pixels = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if set.image_len() == 0 || !set.pixels.len().is_multiple_of(set.image_len()) {
        return Err(format!(
            "{}: {} bytes is not a whole number of {}x{}x{} images",
            path.display(),
            set.pixels.len(),
            args.width,
            args.height,
            args.channels
        )
        .into());
    }
    Ok(set)
}

/// Peak resident set size in KiB, from /proc (Linux only).
fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn main() -> Result<(), Box<dyn Error>> {
    let args = parse_args()?;
    let real = load(&args.real, &args)?;
    let fake = load(&args.fake, &args)?;
    let cfg = SwdConfig {
        seed: args.seed,
        ..SwdConfig::default()
    };
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(args.threads)
        .build()?;
    let progress = indicatif::ProgressBar::hidden();
    let mut seconds = Vec::with_capacity(args.repeat);
    let mut result = None;
    for _ in 0..args.repeat.max(1) {
        let start = Instant::now();
        let r = pool.install(|| swd(&real, &fake, &cfg, &progress))?;
        seconds.push(start.elapsed().as_secs_f64());
        result = Some(r);
    }
    let report = serde_json::json!({
        "images": real.len(),
        "threads": args.threads,
        "seconds": seconds,
        "result": result,
        "peak_rss_kib": peak_rss_kib(),
    });
    println!("{report}");
    Ok(())
}
