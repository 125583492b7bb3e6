//! Times `resize_set` on image files; the Rust half of `bench/downsample_vs_pillow.py`.
//!
//! ```text
//! cargo run --release --example downsample_bench -p gantry-stages -- \
//!     [--size 64x64] [--threads 2] [--repeat 5] [--filters box,bicubic,...] \
//!     [--dump DIR] FILE...
//! ```
//!
//! Every file is decoded before anything is timed (gray PNGs stay gray, everything
//! else becomes RGB) and the images are grouped into one `ImageSet` per shape, in
//! buffers allocated as the downsample stage's are (`pixel_buffer`). Then,
//! for each filter, on a rayon pool of `--threads` threads: one untimed warm-up round,
//! then `--repeat` timed rounds, each one `resize_set` call per set, start to finish,
//! including the allocation of the output sets. Prints one JSON object with every
//! round's wall time. With `--dump`, each filter's outputs are written, in the order
//! of the files on the command line, to `DIR/<filter>.u8` so that the caller can
//! compare them with Pillow's.
//!
//! It also times two rounds that only read memory (`floors` in the JSON): every source
//! byte, and only the source rows that nearest samples, each in order and without
//! prefetching: a yardstick for how memory-bound a filter is, not a bound (nearest,
//! which prefetches rows ahead, can beat the second).

use std::collections::BTreeMap;
use std::error::Error;
use std::path::PathBuf;
use std::time::Instant;

use gantry_datasets::{ImageSet, pixel_buffer};
use gantry_stages::resize::{Filter, ResizeError, resize_set};
use rayon::prelude::*;

/// The gantry binary's allocator, so that the timings are those of what it runs.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Args {
    width: u32,
    height: u32,
    threads: usize,
    repeat: usize,
    filters: Vec<Filter>,
    dump: Option<PathBuf>,
    files: Vec<PathBuf>,
}

fn parse_args() -> Result<Args, Box<dyn Error>> {
    let mut args = Args {
        width: 64,
        height: 64,
        threads: 2,
        repeat: 5,
        filters: Filter::ALL.to_vec(),
        dump: None,
        files: Vec::new(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--size" => {
                let v = value()?;
                let (w, h) = v
                    .split_once('x')
                    .ok_or_else(|| format!("--size {v}: expected WIDTHxHEIGHT"))?;
                args.width = w.parse()?;
                args.height = h.parse()?;
            }
            "--threads" => args.threads = value()?.parse()?,
            "--repeat" => args.repeat = value()?.parse::<usize>()?.max(1),
            "--filters" => {
                args.filters = value()?
                    .split(',')
                    .map(|name| serde_json::from_value(serde_json::Value::from(name)))
                    .collect::<Result<_, _>>()?
            }
            "--dump" => args.dump = Some(value()?.into()),
            flag if flag.starts_with("--") => return Err(format!("unknown flag {flag}").into()),
            _ => args.files.push(arg.into()),
        }
    }
    if args.files.is_empty() {
        return Err("no image files given".into());
    }
    Ok(args)
}

/// The decoded files, grouped by shape; `order[i]` says where file `i` went.
struct Sets {
    sets: Vec<ImageSet>,
    order: Vec<(usize, usize)>,
}

fn load(files: &[PathBuf]) -> Result<Sets, Box<dyn Error>> {
    let mut by_shape: BTreeMap<(u32, u32, u8), usize> = BTreeMap::new();
    let mut sets: Vec<ImageSet> = Vec::new();
    let mut order = Vec::with_capacity(files.len());
    for path in files {
        let image = image::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let (width, height) = (image.width(), image.height());
        let (channels, pixels) = match image {
            image::DynamicImage::ImageLuma8(gray) => (1, gray.into_raw()),
            other => (3, other.into_rgb8().into_raw()),
        };
        let index = *by_shape
            .entry((width, height, channels))
            .or_insert_with(|| {
                sets.push(ImageSet::new(width, height, channels));
                sets.len() - 1
            });
        order.push((index, sets[index].len()));
        sets[index].push(&pixels);
    }
    // In the buffers that `DatasetReader::read` gives the downsample stage.
    for set in &mut sets {
        let mut pixels = pixel_buffer(set.pixels.len());
        pixels.copy_from_slice(&set.pixels);
        set.pixels = pixels;
    }
    Ok(Sets { sets, order })
}

/// The source rows Pillow's nearest filter samples (`floor((i + 0.5) * step)`).
fn nearest_rows(src: u32, dst: u32) -> Vec<usize> {
    let step = f64::from(src) / f64::from(dst);
    (0..dst)
        .map(|i| (((f64::from(i) + 0.5) * step) as usize).min(src as usize - 1))
        .collect()
}

/// A sum of every byte, in `u64` words so that it runs at memory speed.
fn sum_bytes(bytes: &[u8]) -> u64 {
    // SAFETY: every bit pattern is a valid u64; `align_to` only hands out aligned words.
    let (head, words, tail) = unsafe { bytes.align_to::<u64>() };
    let mut acc = [0u64; 8];
    for w in words.chunks_exact(8) {
        for (a, &x) in acc.iter_mut().zip(w) {
            *a = a.wrapping_add(x);
        }
    }
    let rest = words.chunks_exact(8).remainder().iter().copied();
    let bytes = head.iter().chain(tail).map(|&b| u64::from(b));
    acc.into_iter()
        .chain(rest)
        .chain(bytes)
        .fold(0, u64::wrapping_add)
}

fn main() -> Result<(), Box<dyn Error>> {
    let args = parse_args()?;
    let loaded = load(&args.files)?;
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(args.threads)
        .build()?;

    let mut report = serde_json::Map::new();
    for &filter in &args.filters {
        let round = || -> Result<Vec<ImageSet>, ResizeError> {
            loaded
                .sets
                .iter()
                .map(|set| resize_set(set, args.width, args.height, filter))
                .collect()
        };
        let warm = pool.install(round)?;
        let mut seconds = Vec::with_capacity(args.repeat);
        for _ in 0..args.repeat {
            let start = Instant::now();
            let outs = pool.install(round)?;
            seconds.push(start.elapsed().as_secs_f64());
            drop(outs);
        }
        if let Some(dir) = &args.dump {
            std::fs::create_dir_all(dir)?;
            let mut bytes = Vec::new();
            for &(set, i) in &loaded.order {
                bytes.extend_from_slice(warm[set].image(i));
            }
            std::fs::write(dir.join(format!("{}.u8", filter.name())), bytes)?;
        }
        report.insert(
            filter.name().into(),
            serde_json::json!({ "seconds": seconds }),
        );
    }

    // What memory alone costs: reading every source byte (all a box filter needs) and
    // reading only the source rows that nearest samples (each whole, as every cache
    // line of them holds a sampled pixel at these ratios). Timed like the filters.
    let mut floors = serde_json::Map::new();
    for (name, rows_only) in [("read_all", false), ("read_sampled_rows", true)] {
        let round = || -> u64 {
            loaded
                .sets
                .iter()
                .map(|set| {
                    let row = set.width as usize * set.channels as usize;
                    let rows: Vec<usize> = if rows_only {
                        nearest_rows(set.height, args.height)
                    } else {
                        (0..set.height as usize).collect()
                    };
                    set.pixels
                        .par_chunks(set.image_len())
                        .map(|image| {
                            rows.iter()
                                .map(|&y| sum_bytes(&image[y * row..][..row]))
                                .sum::<u64>()
                        })
                        .sum::<u64>()
                })
                .sum()
        };
        std::hint::black_box(pool.install(round));
        let mut seconds = Vec::with_capacity(args.repeat);
        for _ in 0..args.repeat {
            let start = Instant::now();
            std::hint::black_box(pool.install(round));
            seconds.push(start.elapsed().as_secs_f64());
        }
        floors.insert(name.into(), serde_json::json!({ "seconds": seconds }));
    }

    let shapes: Vec<_> = loaded
        .sets
        .iter()
        .map(|s| serde_json::json!([s.width, s.height, s.channels, s.len()]))
        .collect();
    let out = serde_json::json!({
        "images": args.files.len(),
        "threads": args.threads,
        "size": [args.width, args.height],
        "sets": shapes,
        "filters": report,
        "floors": floors,
    });
    println!("{out}");
    Ok(())
}
