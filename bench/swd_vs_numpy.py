#!/usr/bin/env python3
"""Benchmark: sliced Wasserstein distance over 10,000 + 10,000 64x64 RGB images,
gantry (`metrics::swd`) vs the NumPy port of the published algorithm.

Run from anywhere, on a machine with Python 3.9+ and a Rust toolchain:

    python3 bench/swd_vs_numpy.py                 # 10,000 images per set, 2 cores
    python3 bench/swd_vs_numpy.py --images 2000 --rust-repeat 3
    python3 bench/swd_vs_numpy.py --reuse-numpy   # time gantry again, keep NumPy's runs

What it does:

1. Makes (once) a virtual environment `bench/.venv-swd` with numpy, scipy and
   scikit-image from PyPI, and reruns itself inside it. `GANTRY_BENCH_VENV=DIR`
   uses another one.
2. Makes (once) two sets of `--images` 64x64 RGB images in `bench/work/swd`
   (gitignored), raw u8 NHWC: crops of the photographs that ship inside
   scikit-image's wheel (astronaut, coffee, chelsea, rocket, immunohistochemistry,
   retina), of a random side between 64 and 192 pixels, shrunk to 64x64 with
   anti-aliasing. The "fake" set is other crops of the same photographs, blurred
   with one binomial pass, so that the two sets really differ.
3. Builds `cargo build --release --example swd_bench -p gantry-stages` (into
   `$CARGO_TARGET_DIR` when set, like cargo itself).
4. NumPy: `stages/tests/reference/swd/swd_numpy.py` (the port the tests compare
   with; the same algorithm and settings: 7x7 neighbourhoods, 128 per image and
   level, 4 x 128 directions, levels 64/32/16) in a child process with
   `OMP_NUM_THREADS=OPENBLAS_NUM_THREADS=MKL_NUM_THREADS=2`, so its matrix products
   use two threads; its sorts are NumPy's, single-threaded, as they are.
5. gantry: the `swd_bench` example, a rayon pool of 2 threads.
6. Both run pinned to the same two CPUs (the first two this process may use), on
   data already in memory: loading is not timed, everything else is (pyramids,
   descriptors, projections, sorting). The table shows each side's fastest run,
   the ratio, and each side's peak resident memory, and both sides' SWD values (they
   draw different random numbers, so they agree only within the run-to-run spread).

Results go to `bench/results/swd_vs_numpy.md` and `bench/work/swd/results.json`.
"""

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

from _venv import reexec_in_venv

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
WORK = BENCH / "work" / "swd"
REFERENCE = ROOT / "stages" / "tests" / "reference" / "swd"
RESULTS = BENCH / "results" / "swd_vs_numpy.md"
REQUIREMENTS = ["numpy", "scipy", "scikit-image"]
PHOTOS = ["astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "retina"]
SIDE = 64
GOAL = 10.0


def ensure_venv():
    """Rerun this script inside a venv that has the requirements."""
    reexec_in_venv(BENCH / ".venv-swd", ['numpy', 'scipy', 'skimage'], REQUIREMENTS, __file__)


def make_sets(count):
    """Two raw u8 files of `count` crops each, deterministic, made once."""
    import numpy as np
    import skimage.data
    import skimage.transform

    WORK.mkdir(parents=True, exist_ok=True)
    real, fake = WORK / f"real_{count}.u8", WORK / f"fake_{count}.u8"
    if real.exists() and fake.exists():
        return real, fake
    photos = [getattr(skimage.data, name)() for name in PHOTOS]

    def crops(seed):
        rng = np.random.default_rng(seed)
        out = np.empty((count, SIDE, SIDE, 3), np.uint8)
        for k in range(count):
            photo = photos[k % len(photos)]
            h, w, _ = photo.shape
            side = min(int(round(SIDE * rng.uniform(1.0, 3.0))), h, w)
            y, x = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
            small = skimage.transform.resize(
                photo[y : y + side, x : x + side].astype(np.float64),
                (SIDE, SIDE),
                anti_aliasing=True,
                preserve_range=True,
            )
            out[k] = np.clip(np.floor(small + 0.5), 0, 255).astype(np.uint8)
        return out

    def blur(x):
        x = x.astype(np.int64)
        for axis in (2, 1):
            n = x.shape[axis]
            prev = np.take(x, np.clip(np.arange(n) - 1, 0, n - 1), axis=axis)
            nxt = np.take(x, np.clip(np.arange(n) + 1, 0, n - 1), axis=axis)
            x = (prev + 2 * x + nxt + 2) >> 2
        return x.astype(np.uint8)

    print(f"making {count} + {count} crops in {WORK}", file=sys.stderr, flush=True)
    crops(101).tofile(real)
    blur(crops(202)).tofile(fake)
    return real, fake


def build():
    cmd = ["cargo", "build", "--release", "--example", "swd_bench", "-p", "gantry-stages"]
    subprocess.run(cmd, cwd=ROOT, check=True)
    target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    if not target.is_absolute():
        target = ROOT / target
    return target / "release" / "examples" / "swd_bench"


NUMPY_CHILD = r"""
import json, resource, sys, time
import numpy as np
sys.path.insert(0, sys.argv[1])
import swd_numpy
n = int(sys.argv[4])
real = np.fromfile(sys.argv[2], np.uint8).reshape(n, 64, 64, 3)
fake = np.fromfile(sys.argv[3], np.uint8).reshape(n, 64, 64, 3)
start = time.perf_counter()
result = swd_numpy.swd(real, fake, int(sys.argv[5]))
seconds = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"seconds": seconds, "result": result, "peak_rss_kib": peak}))
"""


def child_cpu_seconds():
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_numpy(real, fake, count, seed, cpus):
    env = dict(os.environ, OMP_NUM_THREADS="2", OPENBLAS_NUM_THREADS="2", MKL_NUM_THREADS="2")
    cmd = [sys.executable, "-c", NUMPY_CHILD, str(REFERENCE), str(real), str(fake), str(count), str(seed)]
    before = child_cpu_seconds()
    out = subprocess.run(
        cmd, env=env, check=True, capture_output=True, text=True,
        preexec_fn=lambda: os.sched_setaffinity(0, cpus),
    )
    result = json.loads(out.stdout)
    # The whole child, loading included (a second or so): the CPU time the SWD cost.
    result["cpu_seconds"] = child_cpu_seconds() - before
    return result


def run_gantry(binary, real, fake, seed, repeat, cpus):
    cmd = [str(binary), "--real", str(real), "--fake", str(fake), "--threads", "2",
           "--seed", str(seed), "--repeat", str(repeat)]
    before = child_cpu_seconds()
    out = subprocess.run(
        cmd, check=True, capture_output=True, text=True,
        preexec_fn=lambda: os.sched_setaffinity(0, cpus),
    )
    result = json.loads(out.stdout)
    result["cpu_seconds_per_run"] = (child_cpu_seconds() - before) / max(repeat, 1)
    return result


def fmt_levels(result):
    levels = ", ".join(f"{int(r)}: {d:.2f}" for r, d in result["levels"])
    return f"{levels}; avg {result['average']:.2f}"


def main():
    ensure_venv()
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=10_000, help="images per set")
    parser.add_argument("--numpy-repeat", type=int, default=1)
    parser.add_argument("--rust-repeat", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--reuse-numpy",
        action="store_true",
        help="take the NumPy runs from the last results.json (same --images and --seed) "
        "instead of running the port again: for timing changes to gantry only",
    )
    args = parser.parse_args()

    cpus = sorted(os.sched_getaffinity(0))[:2]
    real, fake = make_sets(args.images)
    binary = build()

    print(f"gantry on CPUs {cpus} ...", file=sys.stderr, flush=True)
    gantry = run_gantry(binary, real, fake, args.seed, args.rust_repeat, cpus)
    numpy_runs = []
    last = WORK / "results.json"
    if args.reuse_numpy and last.exists():
        previous = json.loads(last.read_text())
        if previous.get("images") == args.images and previous.get("seed") == args.seed:
            numpy_runs = previous["numpy"]
            print("reusing the NumPy runs of the last results.json", file=sys.stderr)
    for i in range(args.numpy_repeat if not numpy_runs else 0):
        print(f"NumPy run {i + 1}/{args.numpy_repeat} on CPUs {cpus} ...", file=sys.stderr, flush=True)
        numpy_runs.append(run_numpy(real, fake, args.images, args.seed + i, cpus))

    t_numpy = min(r["seconds"] for r in numpy_runs)
    t_gantry = min(gantry["seconds"])
    ratio = t_numpy / t_gantry
    cpu_numpy = min(r["cpu_seconds"] for r in numpy_runs)
    cpu_gantry = gantry["cpu_seconds_per_run"]
    cpu_ratio = cpu_numpy / cpu_gantry
    load = os.getloadavg()
    met = "yes" if ratio >= GOAL else "no"
    mib = lambda kib: f"{kib / 1024:.0f} MiB" if kib else "n/a"  # noqa: E731
    import numpy

    lines = [
        "# SWD: gantry vs the NumPy port",
        "",
        f"Sliced Wasserstein distance (Karras et al. 2018, Appendix D) between {args.images:,} and "
        f"{args.images:,} 64x64 RGB crops of scikit-image's photographs (the second set blurred), "
        "levels 64/32/16, 128 7x7 neighbourhoods per image and level, 4 x 128 directions. "
        f"Both sides pinned to the same 2 CPUs; data in memory before timing. "
        f"Made by `bench/swd_vs_numpy.py` on {platform.machine()} ({os.cpu_count()} CPUs visible), "
        f"NumPy {numpy.__version__}.",
        "",
        "| implementation | wall seconds | CPU seconds | peak memory | SWD x1e3 (64, 32, 16; avg) |",
        "| --- | ---: | ---: | ---: | --- |",
        f"| NumPy port (2 BLAS threads) | {t_numpy:.2f} | {cpu_numpy:.1f} | "
        f"{mib(numpy_runs[0]['peak_rss_kib'])} | {fmt_levels(numpy_runs[0]['result'])} |",
        f"| gantry `metrics::swd` (2 rayon threads) | {t_gantry:.2f} | {cpu_gantry:.1f} | "
        f"{mib(gantry['peak_rss_kib'])} | {fmt_levels(gantry['result'])} |",
        "",
        "| ratio NumPy / gantry (wall) | ratio (CPU time) | goal | met? |",
        "| ---: | ---: | ---: | --- |",
        f"| {ratio:.1f}x | {cpu_ratio:.1f}x | {GOAL:.0f}x | {met} |",
        "",
        f"Load average when done: {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}. The wall times "
        "count whatever else the two CPUs were running; the CPU times (user + system, of the "
        "whole child process) do not, so on a busy machine their ratio is the steadier one.",
        "",
        f"Runs: NumPy {', '.join('%.2f' % r['seconds'] for r in numpy_runs)} s; "
        f"gantry {', '.join('%.2f' % s for s in gantry['seconds'])} s (fastest shown). "
        "The two sides draw different random numbers, so their SWD values agree only within "
        "the run-to-run spread (see `stages/tests/swd_reference.rs`).",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(text)
    (WORK / "results.json").write_text(
        json.dumps(
            {
                "images": args.images,
                "seed": args.seed,
                "numpy": numpy_runs,
                "gantry": gantry,
                "ratio": ratio,
                "cpu_ratio": cpu_ratio,
            },
            indent=1,
        )
        + "\n"
    )


if __name__ == "__main__":
    main()
