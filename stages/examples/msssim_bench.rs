//! Times `ms_ssim_paired` on raw image pairs; the Rust half of
//! `bench/msssim_vs_pytorch.py`.
//!
//! ```text
//! cargo run --release --example msssim_bench -p gantry-stages -- \
//!     --size 256x256 --channels 3 --pairs 1000 [--threads 2] [--repeat 3] FILE
//! ```
//!
//! FILE holds `2 * pairs` u8 HWC images back to back: first the `pairs` images of
//! side A, then the `pairs` images of side B; pair `i` is `A[i]` against `B[i]`. The
//! file is read before anything is timed. Then, on a rayon pool of `--threads`
//! threads, one untimed warm-up round and `--repeat` timed rounds, each one
//! `ms_ssim_paired` call over all pairs (the code the `evaluate` stage runs). Prints
//! one JSON object with the mean, std and every round's wall time.

use std::error::Error;
use std::path::PathBuf;
use std::time::Instant;

use gantry_datasets::ImageSet;
use gantry_stages::metrics::ssim::{SsimConfig, ms_ssim_paired};
use indicatif::ProgressBar;

/// The gantry binary's allocator, so that the timings are those of what it runs.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Args {
    width: u32,
    height: u32,
    channels: u8,
    pairs: usize,
    threads: usize,
    repeat: usize,
    file: PathBuf,
}

fn parse_args() -> Result<Args, Box<dyn Error>> {
    let (mut width, mut height, mut channels) = (256, 256, 3);
    let (mut pairs, mut threads, mut repeat) = (None, 2, 3);
    let mut file = None;
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--size" => {
                let v = value()?;
                let (w, h) = v
                    .split_once('x')
                    .ok_or_else(|| format!("--size {v}: expected WIDTHxHEIGHT"))?;
                width = w.parse()?;
                height = h.parse()?;
            }
            "--channels" => channels = value()?.parse()?,
            "--pairs" => pairs = Some(value()?.parse()?),
            "--threads" => threads = value()?.parse()?,
            "--repeat" => repeat = value()?.parse::<usize>()?.max(1),
            flag if flag.starts_with("--") => return Err(format!("unknown flag {flag}").into()),
            _ => file = Some(PathBuf::from(arg)),
        }
    }
    Ok(Args {
        width,
        height,
        channels,
        pairs: pairs.ok_or("--pairs is required")?,
        threads,
        repeat,
        file: file.ok_or("no data file given")?,
    })
}

fn main() -> Result<(), Box<dyn Error>> {
    let args = parse_args()?;
    let bytes = std::fs::read(&args.file).map_err(|e| format!("{}: {e}", args.file.display()))?;
    let mut a = ImageSet::new(args.width, args.height, args.channels);
    let mut b = a.clone();
    let image_len = a.image_len();
    if bytes.len() != 2 * args.pairs * image_len {
        return Err(format!(
            "{}: {} bytes, expected 2 x {} images of {image_len} bytes",
            args.file.display(),
            bytes.len(),
            args.pairs
        )
        .into());
    }
    let (side_a, side_b) = bytes.split_at(args.pairs * image_len);
    a.pixels = side_a.to_vec();
    b.pixels = side_b.to_vec();
    drop(bytes);

    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(args.threads)
        .build()?;
    let cfg = SsimConfig::default();
    let bar = ProgressBar::hidden();
    let round = || pool.install(|| ms_ssim_paired(&a, &b, &cfg, &bar));
    let result = round()?;
    let mut seconds = Vec::with_capacity(args.repeat);
    for _ in 0..args.repeat {
        let start = Instant::now();
        let again = round()?;
        seconds.push(start.elapsed().as_secs_f64());
        if again != result {
            return Err("a repeated round gave another result".into());
        }
    }
    let out = serde_json::json!({
        "pairs": args.pairs,
        "size": [args.width, args.height],
        "channels": args.channels,
        "threads": args.threads,
        "mean": result.mean,
        "std": result.std,
        "seconds": seconds,
    });
    println!("{out}");
    Ok(())
}
