#!/usr/bin/env python3
"""Benchmark: MS-SSIM over 1,000 pairs of 256x256 RGB photographs, gantry vs pytorch-msssim.

Run from anywhere, on a machine with Python 3.9+ and a Rust toolchain:

    python3 bench/msssim_vs_pytorch.py                 # 1,000 pairs, 2 threads each side
    python3 bench/msssim_vs_pytorch.py --pairs 200 --threads 2 --torch-repeat 1

What it does:

1. Makes (once) a virtual environment `bench/.venv-ssim` with numpy, scikit-image,
   pillow, torch and pytorch-msssim from PyPI, and reruns itself inside it.
   `GANTRY_BENCH_VENV=DIR` uses another one. (torch from PyPI is large.)
2. Makes (once) `--pairs` pairs of 256x256 RGB images in `bench/work/msssim_pairs.u8`
   (gitignored): side A is a crop of a photograph that ships inside scikit-image's
   wheel (`skimage.data`: astronaut, coffee, chelsea, rocket, retina, hubble, ...) at
   a random scale, flipped or not; side B is that crop blurred, noised, JPEG-compressed
   or another crop. The file holds all A images, then all B images, u8 HWC; both
   sides read this one file.
3. Builds `cargo build --release --example msssim_bench -p gantry-stages` (into
   `$CARGO_TARGET_DIR` when set, like cargo itself).
4. gantry: the `msssim_bench` example, `ms_ssim_paired` (the code the `evaluate`
   stage runs) over all pairs on a rayon pool of `--threads` threads; one untimed
   warm-up round, then `--repeat` timed rounds. Its timing includes turning the u8
   pixels into floats.
5. pytorch-msssim: `torch.set_num_threads(--threads)`, no grad, `ms_ssim(X, Y,
   data_range=255, size_average=False)` on float32 tensors, for each batch size in
   `--batches` (default 1 and 50: on CPU the single-pair batches are often the faster,
   and which one wins varies from run to run); per batch size one untimed warm-up
   batch, then `--torch-repeat` timed rounds over all pairs. The ratio is taken
   against pytorch-msssim's fastest batch size. The u8 -> float32 NCHW conversion is
   done before timing (in pytorch's favour).
6. Both processes are pinned to the same CPUs (the first `--threads` this process may
   use). The table shows the fastest round of each side, the ratio, and whether the
   goal (gantry at least 3x faster) is met; the two means must agree within 1e-3.

Results go to `bench/results/msssim_vs_pytorch.md` and `bench/work/msssim_vs_pytorch.json`.
"""

import argparse
import datetime
import importlib.metadata
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from _machine import cpu_model
from _venv import reexec_in_venv

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
WORK = BENCH / "work"
RESULTS = BENCH / "results"
SIZE = 256
CHANNELS = 3
GOAL = 3.0
TOLERANCE = 1e-3
REQUIREMENTS = ["numpy", "scikit-image", "pillow", "torch", "pytorch-msssim"]


def ensure_venv():
    """Rerun this script inside a venv that has the requirements."""
    reexec_in_venv(BENCH / ".venv-ssim", ['numpy', 'skimage', 'PIL', 'torch', 'pytorch_msssim'], REQUIREMENTS, __file__)


def make_pairs(count):
    """Pairs of real-photo crops and degraded copies, deterministic, made once."""
    import numpy as np
    import skimage.data
    from PIL import Image, ImageFilter

    data = WORK / "msssim_pairs.u8"
    stamp = WORK / "msssim_pairs.json"
    expected = {"pairs": count, "size": SIZE, "channels": CHANNELS, "version": 1}
    if data.exists() and stamp.exists() and json.loads(stamp.read_text()) == expected:
        return data
    WORK.mkdir(parents=True, exist_ok=True)
    photos = [Image.fromarray(p) for p in (
        skimage.data.astronaut(), skimage.data.coffee(), skimage.data.chelsea(),
        skimage.data.rocket(), skimage.data.retina(), skimage.data.hubble_deep_field(),
        skimage.data.immunohistochemistry(), skimage.data.cat(),
    )]
    rng = np.random.default_rng(2024)

    def crop():
        photo = photos[rng.integers(len(photos))]
        smallest = SIZE / min(photo.size)
        scale = rng.uniform(smallest, max(1.0, smallest * 1.5))
        w, h = max(SIZE, round(photo.width * scale)), max(SIZE, round(photo.height * scale))
        im = photo.resize((w, h), Image.Resampling.LANCZOS) if (w, h) != photo.size else photo
        left, top = rng.integers(im.width - SIZE + 1), rng.integers(im.height - SIZE + 1)
        im = im.crop((left, top, left + SIZE, top + SIZE))
        return im.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if rng.integers(2) else im

    def degrade(im):
        kind = rng.integers(4)
        if kind == 0:
            return np.asarray(im.filter(ImageFilter.GaussianBlur(rng.uniform(0.5, 3.0))))
        if kind == 1:
            noisy = np.asarray(im, dtype=np.float64) + rng.normal(0, rng.uniform(3, 30), (SIZE, SIZE, 3))
            return np.clip(np.round(noisy), 0, 255).astype(np.uint8)
        if kind == 2:
            buf = io.BytesIO()
            im.save(buf, format="JPEG", quality=int(rng.integers(5, 60)))
            buf.seek(0)
            return np.asarray(Image.open(buf).convert("RGB"))
        return np.asarray(crop())

    side_a, side_b = [], []
    for _ in range(count):
        a = crop()
        side_a.append(np.asarray(a))
        side_b.append(degrade(a))
    with open(data, "wb") as f:
        for img in side_a + side_b:
            f.write(np.ascontiguousarray(img, dtype=np.uint8).tobytes())
    stamp.write_text(json.dumps(expected))
    return data


def load_pairs(data, count):
    import numpy as np

    raw = np.fromfile(data, dtype=np.uint8).reshape(2, count, SIZE, SIZE, CHANNELS)
    return raw[0], raw[1]


# --- gantry side ------------------------------------------------------------------


def build_gantry():
    target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    if not target.is_absolute():
        target = ROOT / target
    cmd = ["cargo", "build", "--release", "--example", "msssim_bench", "-p", "gantry-stages"]
    subprocess.run(cmd, cwd=ROOT, check=True)
    return target / "release" / "examples" / "msssim_bench"


def time_gantry(binary, data, count, threads, repeat, cpus):
    cmd = [str(binary), "--size", f"{SIZE}x{SIZE}", "--channels", str(CHANNELS),
           "--pairs", str(count), "--threads", str(threads), "--repeat", str(repeat), str(data)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True,
                         preexec_fn=lambda: os.sched_setaffinity(0, cpus))
    return json.loads(out.stdout)


# --- pytorch side -----------------------------------------------------------------


def time_torch(data, count, threads, repeat, batches, cpus):
    import numpy as np
    import torch
    from pytorch_msssim import ms_ssim

    os.sched_setaffinity(0, cpus)
    torch.set_num_threads(threads)
    a, b = load_pairs(data, count)
    # Untimed: u8 NHWC -> float32 NCHW, as a caller would hold them.
    x = torch.from_numpy(np.ascontiguousarray(a.transpose(0, 3, 1, 2))).float()
    y = torch.from_numpy(np.ascontiguousarray(b.transpose(0, 3, 1, 2))).float()
    results = {}
    with torch.no_grad():
        for batch in batches:
            ms_ssim(x[:batch], y[:batch], data_range=255, size_average=False)
            rounds, values = [], None
            for _ in range(repeat):
                start = time.perf_counter()
                out = [ms_ssim(x[i:i + batch], y[i:i + batch], data_range=255,
                               size_average=False)
                       for i in range(0, count, batch)]
                rounds.append(time.perf_counter() - start)
                values = torch.cat(out).double().numpy()
            results[batch] = {"mean": float(values.mean()), "std": float(values.std()),
                              "seconds": rounds}
            print(f"pytorch-msssim, batches of {batch}: {rounds}", file=sys.stderr)
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=2, help="threads per side")
    parser.add_argument("--repeat", type=int, default=3, help="timed rounds, gantry")
    parser.add_argument("--torch-repeat", type=int, default=1, help="timed rounds, pytorch")
    parser.add_argument("--batches", default="1,50", help="pytorch batch sizes to try")
    args = parser.parse_args()
    batches = [int(b) for b in args.batches.split(",")]

    ensure_venv()
    import torch

    available = sorted(os.sched_getaffinity(0))
    if len(available) < args.threads:
        print(f"warning: only {len(available)} CPUs for {args.threads} threads", file=sys.stderr)
    cpus = set(available[: args.threads])

    data = make_pairs(args.pairs)
    binary = build_gantry()
    load_before = os.getloadavg()
    print(f"{args.pairs} pairs of {SIZE}x{SIZE} RGB, {args.threads} threads on CPUs {sorted(cpus)}",
          file=sys.stderr)
    gantry = time_gantry(binary, data, args.pairs, args.threads, args.repeat, cpus)
    print(f"gantry: {gantry['seconds']}", file=sys.stderr)
    torch_runs = time_torch(data, args.pairs, args.threads, args.torch_repeat, batches, cpus)
    load_after = os.getloadavg()

    g = min(gantry["seconds"])
    best = min(torch_runs, key=lambda batch: min(torch_runs[batch]["seconds"]))
    t = min(torch_runs[best]["seconds"])
    ratio = t / g
    diff = max(abs(gantry["mean"] - run["mean"]) for run in torch_runs.values())
    agree = diff <= TOLERANCE
    met = ratio >= GOAL
    rows = [(f"pytorch-msssim, batches of {batch}", min(run["seconds"]), run["mean"])
            for batch, run in torch_runs.items()]
    rows.append(("gantry", g, gantry["mean"]))
    lines = [
        "| implementation | seconds | ms / pair | mean MS-SSIM |",
        "| --- | ---: | ---: | ---: |",
        *[f"| {name} | {s:.2f} | {1000 * s / args.pairs:.2f} | {m:.6f} |" for name, s, m in rows],
        "",
        "| ratio torch (fastest) / gantry | goal | met? | max \\|mean diff\\| | agree (<= 1e-3)? |",
        "| ---: | ---: | :---: | ---: | :---: |",
        f"| {ratio:.1f}x | {GOAL:.0f}x | {'yes' if met else 'NO'} | {diff:.2e} | "
        f"{'yes' if agree else 'NO'} |",
    ]
    print("\n".join(lines))

    info = {
        "pairs": args.pairs,
        "threads": args.threads,
        "cpus": sorted(cpus),
        "cpu": cpu_model(),
        "torch": torch.__version__,
        "pytorch_msssim": importlib.metadata.version("pytorch-msssim"),
        "gantry_rounds": gantry["seconds"],
        "gantry": {"mean": gantry["mean"], "std": gantry["std"]},
        "pytorch": {str(batch): run for batch, run in torch_runs.items()},
        "load_average": {"before": load_before, "after": load_after},
        "ratio": ratio,
        "goal_met": met,
        "means_agree": agree,
    }
    (WORK / "msssim_vs_pytorch.json").write_text(json.dumps(info, indent=1) + "\n")
    RESULTS.mkdir(parents=True, exist_ok=True)
    today = datetime.date.today().isoformat()
    report = [
        "# MS-SSIM: gantry vs pytorch-msssim (CPU)",
        "",
        f"Made by `python3 bench/msssim_vs_pytorch.py` on {today}: {args.pairs} pairs of "
        f"{SIZE}x{SIZE} RGB crops of `skimage.data` photographs against blurred, noised, "
        "JPEG-compressed or other crops; MS-SSIM with 11x11 Gaussian windows (sigma 1.5), "
        "five scales, data range 255.",
        "",
        *lines,
        "",
        f"- CPU: {info['cpu']}; both sides pinned to CPUs {sorted(cpus)}, "
        f"{args.threads} threads each (rayon pool / `torch.set_num_threads`).",
        f"- gantry: `ms_ssim_paired` in the `msssim_bench` example, release build, fastest of "
        f"{args.repeat} rounds after a warm-up; includes u8 -> f32 conversion.",
        f"- pytorch-msssim {info['pytorch_msssim']} on torch {info['torch']} (the PyPI wheel, "
        f"run on the CPU): `ms_ssim(..., size_average=False)` under `no_grad`, fastest of "
        f"{args.torch_repeat} round(s) per batch size after a warm-up batch; float32 tensors "
        "made before timing. The ratio uses its fastest batch size.",
        f"- Load average (1, 5, 15 min) before / after: "
        f"{', '.join(f'{v:.1f}' for v in load_before)} / "
        f"{', '.join(f'{v:.1f}' for v in load_after)} ({os.cpu_count()} CPUs on the machine; "
        "other work on it slows both sides).",
        f"- Rounds (s): gantry {', '.join(f'{s:.2f}' for s in gantry['seconds'])}; "
        + "; ".join(f"pytorch-msssim, batches of {batch}: "
                    + ", ".join(f"{s:.2f}" for s in run["seconds"])
                    for batch, run in torch_runs.items()) + ".",
        "",
    ]
    (RESULTS / "msssim_vs_pytorch.md").write_text("\n".join(report))
    if not agree:
        sys.exit(f"means differ by {diff:.2e} > {TOLERANCE}")


if __name__ == "__main__":
    main()
