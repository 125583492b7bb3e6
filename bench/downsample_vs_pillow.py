#!/usr/bin/env python3
"""Benchmark (c): downsampling real photos to 64x64 with each filter, gantry vs Pillow.

Run from anywhere, on a machine with Python 3.9+ and a Rust toolchain:

    python3 bench/downsample_vs_pillow.py            # all six filters, 2 workers
    python3 bench/downsample_vs_pillow.py --workers 2 --repeat 5 --filters box,lanczos

What it does:

1. Makes (once) a virtual environment `bench/.venv` with pillow, scikit-image and
   numpy from PyPI, and reruns itself inside it. `GANTRY_BENCH_VENV=DIR` uses
   another one.
2. Makes (once) 200 photos in `bench/work/photos` (gitignored): crops of the
   photographs that ship inside scikit-image's wheel (`skimage.data`: astronaut,
   coffee, chelsea, rocket, retina, ...), 100 at 256x256 and 100 at 512x512,
   three quarters RGB and one quarter gray, at random scales, saved as PNG.
3. Builds `cargo build --release --example downsample_bench -p gantry-stages`
   (into `$CARGO_TARGET_DIR` when set, like cargo itself), unless `--binary PATH`
   names one already built.
4. Pillow: a `multiprocessing.Pool` of `--workers` processes. Each worker decodes its
   half of the files once, untimed; a timed round is then every worker calling
   `Image.resize((64, 64), filter)` on each of its decoded images, started together
   behind a barrier. A round's time is the slowest worker's time from the barrier
   to its last resize. Only resizing is timed: no decoding, no encoding, no
   inter-process traffic.
5. gantry: the `downsample_bench` example on the same files with a rayon pool of
   `--workers` threads. It decodes everything first, untimed; a timed round is
   `resize_set` (the code the `downsample` stage runs) over the images, grouped by
   shape, including the allocation of the outputs.
6. Both sides run one untimed warm-up round and then `--repeat` timed rounds per
   filter, in `--passes` alternating passes (gantry, Pillow, gantry, ...), so that
   both meet the same swings in this VM's memory speed; the table shows each side's
   fastest round divided by the number of images, and the speedup in each pass
   alone. Both sides are pinned to the same CPUs (the first `--workers` ones this process may
   use). gantry's outputs are also compared with Pillow's, pixel by pixel.

The results are also written to `bench/work/downsample_vs_pillow.json`.
"""

import argparse
import json
import multiprocessing as mp
import os
import subprocess
import sys
import time
from pathlib import Path

from _venv import reexec_in_venv

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
WORK = BENCH / "work"
PHOTOS = WORK / "photos"
FILTERS = ["box", "bilinear", "bicubic", "lanczos", "hamming", "nearest"]
SIZE = (64, 64)
PHOTO_SIZES = (256, 512)
PHOTOS_PER_SIZE = 100
REQUIREMENTS = ["pillow", "scikit-image", "numpy"]


def ensure_venv():
    """Rerun this script inside a venv that has the requirements."""
    reexec_in_venv(BENCH / ".venv", ['PIL', 'skimage', 'numpy'], REQUIREMENTS, __file__)


def make_photos():
    """Crops of skimage.data's photographs, deterministic, made once."""
    import numpy as np
    import skimage.data
    from PIL import Image

    stamp = PHOTOS / "done.json"
    expected = {"sizes": list(PHOTO_SIZES), "per_size": PHOTOS_PER_SIZE, "version": 1}
    if stamp.exists() and json.loads(stamp.read_text()) == expected:
        return sorted(PHOTOS.glob("*.png"))
    PHOTOS.mkdir(parents=True, exist_ok=True)
    for old in PHOTOS.glob("*.png"):
        old.unlink()

    rgb = {
        "astronaut": skimage.data.astronaut(),
        "coffee": skimage.data.coffee(),
        "chelsea": skimage.data.chelsea(),
        "rocket": skimage.data.rocket(),
        "retina": skimage.data.retina(),
        "hubble": skimage.data.hubble_deep_field(),
        "ihc": skimage.data.immunohistochemistry(),
        "motorcycle": skimage.data.stereo_motorcycle()[0],
    }
    gray = {
        "camera": skimage.data.camera(),
        "moon": skimage.data.moon(),
        "brick": skimage.data.brick(),
        "grass": skimage.data.grass(),
        "gravel": skimage.data.gravel(),
        "coins": skimage.data.coins(),
        "clock": skimage.data.clock(),
    }
    rng = np.random.default_rng(2024)
    for size in PHOTO_SIZES:
        for i in range(PHOTOS_PER_SIZE):
            pool = gray if i % 4 == 3 else rgb
            name = list(pool)[rng.integers(len(pool))]
            photo = Image.fromarray(pool[name])
            # Scale so that a size x size crop fits, with some variety above that.
            smallest = size / min(photo.size)
            scale = rng.uniform(smallest, max(smallest * 1.15, 1.0))
            if abs(scale - 1.0) > 1e-3:
                photo = photo.resize(
                    (max(size, round(photo.width * scale)), max(size, round(photo.height * scale))),
                    Image.Resampling.LANCZOS,
                )
            left = rng.integers(photo.width - size + 1)
            top = rng.integers(photo.height - size + 1)
            crop = photo.crop((left, top, left + size, top + size))
            if rng.integers(2):
                crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            crop.save(PHOTOS / f"{size}_{i:03d}_{name}.png")
    stamp.write_text(json.dumps(expected))
    return sorted(PHOTOS.glob("*.png"))


# --- Pillow side ------------------------------------------------------------------

_worker = {}


def _init_worker(files, workers, barrier, cpus):
    os.sched_setaffinity(0, cpus)
    _worker.update(files=files, workers=workers, barrier=barrier, images={})


def _pillow_round(task):
    from PIL import Image

    part, filter_name = task
    images = _worker["images"].get(part)
    if images is None:
        # Untimed: decode this worker's share once and keep it.
        images = []
        for path in _worker["files"][part :: _worker["workers"]]:
            im = Image.open(path)
            im.load()
            images.append(im)
        _worker["images"][part] = images
    resample = Image.Resampling[filter_name.upper()]
    _worker["barrier"].wait()
    start = time.perf_counter()
    for im in images:
        im.resize(SIZE, resample)
    return time.perf_counter() - start


def time_pillow(files, filters, workers, repeat, cpus):
    barrier = mp.Barrier(workers)
    results = {}
    with mp.Pool(workers, _init_worker, (files, workers, barrier, cpus)) as pool:
        for name in filters:
            rounds = []
            for r in range(repeat + 1):
                # chunksize=1 and the barrier make each worker take one part.
                times = pool.map(_pillow_round, [(p, name) for p in range(workers)], 1)
                if r > 0:
                    rounds.append(max(times))
            results[name] = rounds
    return results


def pillow_outputs(files, name):
    import numpy as np
    from PIL import Image

    resample = Image.Resampling[name.upper()]
    outs = []
    for path in files:
        with Image.open(path) as im:
            outs.append(np.asarray(im.resize(SIZE, resample)).reshape(-1))
    return np.concatenate(outs)


# --- gantry side ------------------------------------------------------------------


def build_gantry():
    target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    if not target.is_absolute():
        target = ROOT / target
    cmd = ["cargo", "build", "--release", "--example", "downsample_bench", "-p", "gantry-stages"]
    subprocess.run(cmd, cwd=ROOT, check=True)
    return target / "release" / "examples" / "downsample_bench"


def time_gantry(binary, files, filters, workers, repeat, cpus, dump):
    cmd = [
        str(binary),
        "--size",
        f"{SIZE[0]}x{SIZE[1]}",
        "--threads",
        str(workers),
        "--repeat",
        str(repeat),
        "--filters",
        ",".join(filters),
        "--dump",
        str(dump),
        *map(str, files),
    ]
    out = subprocess.run(
        cmd, check=True, capture_output=True, text=True, preexec_fn=lambda: os.sched_setaffinity(0, cpus)
    )
    report = json.loads(out.stdout)
    floors = {name: f["seconds"] for name, f in report["floors"].items()}
    return {name: report["filters"][name]["seconds"] for name in filters}, floors


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workers", type=int, default=2, help="processes / threads per side")
    parser.add_argument("--repeat", type=int, default=5, help="timed rounds per filter and pass")
    parser.add_argument("--passes", type=int, default=3,
                        help="gantry, then Pillow, this many times over; fastest round of all")
    parser.add_argument("--filters", default=",".join(FILTERS))
    parser.add_argument("--binary", help="a downsample_bench already built (skips cargo)")
    args = parser.parse_args()
    filters = args.filters.split(",")
    unknown = set(filters) - set(FILTERS)
    if unknown:
        parser.error(f"unknown filters: {', '.join(sorted(unknown))}")

    ensure_venv()
    import numpy as np
    import PIL

    available = sorted(os.sched_getaffinity(0))
    if len(available) < args.workers:
        print(f"warning: only {len(available)} CPUs for {args.workers} workers", file=sys.stderr)
    cpus = set(available[: args.workers])

    files = make_photos()
    binary = Path(args.binary).resolve() if args.binary else build_gantry()
    print(f"{len(files)} photos, {args.workers} workers on CPUs {sorted(cpus)}, Pillow {PIL.__version__}",
          file=sys.stderr)

    dump = WORK / "gantry_out"
    # This VM's memory speed drifts by up to 3x within minutes, which moves the
    # memory-bound filters most. Alternating the two sides over several passes gives
    # both the same stretches of time; each side's fastest round of all counts.
    gantry = {name: [] for name in filters}
    pillow = {name: [] for name in filters}
    floors = {}
    per_pass = []
    for _ in range(max(1, args.passes)):
        g, f = time_gantry(binary, files, filters, args.workers, args.repeat, cpus, dump)
        p = time_pillow(files, filters, args.workers, args.repeat, cpus)
        for name in filters:
            gantry[name] += g[name]
            pillow[name] += p[name]
        for name, rounds in f.items():
            floors.setdefault(name, []).extend(rounds)
        per_pass.append({name: min(p[name]) / min(g[name]) for name in filters})

    n = len(files)
    rows = []
    for name in filters:
        expected = pillow_outputs(files, name)
        got = np.fromfile(dump / f"{name}.u8", dtype=np.uint8)
        if got.shape != expected.shape:
            max_diff = None
        else:
            max_diff = int(np.abs(got.astype(np.int16) - expected.astype(np.int16)).max())
        p, g = min(pillow[name]), min(gantry[name])
        rows.append({"filter": name, "pillow_s": p, "gantry_s": g, "max_diff": max_diff,
                     "speedup_per_pass": [r[name] for r in per_pass]})

    header = (f"{'filter':<10}{'Pillow s/image':>16}{'gantry s/image':>16}{'speedup':>10}"
              f"{'max |diff|':>12}   speedup in each pass")
    print(header)
    print("-" * len(header))
    for row in rows:
        print(
            f"{row['filter']:<10}{row['pillow_s'] / n:>16.3e}{row['gantry_s'] / n:>16.3e}"
            f"{row['pillow_s'] / row['gantry_s']:>9.1f}x{str(row['max_diff']):>12}   "
            + ", ".join(f"{x:.1f}x" for x in row["speedup_per_pass"])
        )
    total_p = sum(r["pillow_s"] for r in rows)
    total_g = sum(r["gantry_s"] for r in rows)
    print("-" * len(header))
    print(f"{'all':<10}{total_p / n:>16.3e}{total_g / n:>16.3e}{total_p / total_g:>9.1f}x")
    print(f"({n} photos to {SIZE[0]}x{SIZE[1]}; fastest of {args.passes} passes x {args.repeat} rounds; "
          f"{args.workers} workers each side; 'all' = the six filters one after another)")

    # Memory reference rounds: the time to read, in order and without prefetching, the
    # bytes a filter must read. Box reads every source byte; nearest reads whole rows (at
    # these ratios every cache line of a sampled row holds a sampled pixel). Code that
    # prefetches can beat them (gantry's nearest does), so they are a yardstick, not a
    # bound; and this VM's memory speed moves by up to 3x between runs.
    floor = {"box": min(floors["read_all"]), "nearest": min(floors["read_sampled_rows"])}
    print("\nmemory reference (same images, same threads, only reading the source bytes "
          "in order, no prefetching):")
    for name, f in floor.items():
        if name not in pillow:
            continue
        g, p = min(gantry[name]), min(pillow[name])
        print(f"  {name:<8} read {f / n:.3e} s/image; gantry at {f / g:.0%} of that speed; "
              f"Pillow / read = {p / f:.1f}x")

    result = {
        "photos": n,
        "size": SIZE,
        "workers": args.workers,
        "repeat": args.repeat,
        "passes": args.passes,
        "pillow_version": PIL.__version__,
        "rows": rows,
        "rounds": {"pillow": pillow, "gantry": gantry, "memory_floors": floors},
    }
    (WORK / "downsample_vs_pillow.json").write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
