#!/usr/bin/env python3
"""Makes the fixtures of `stages/tests/swd_reference.rs`: image sets cut from real
photographs, and the NumPy port's SWD on pairs of them over many seeds.

    python3 -m venv /tmp/venv-swd && /tmp/venv-swd/bin/pip install numpy scipy scikit-image
    /tmp/venv-swd/bin/python stages/tests/reference/swd/make_reference.py

Writes, next to this file:

- `photos_a.png`, `photos_b.png`: 128 RGB images of 64x64 each, as a 16-column grid.
  Each image is a crop of one of scikit-image's bundled photographs (astronaut,
  coffee, chelsea, rocket, immunohistochemistry, retina; in turn) of a random side
  between 64 and 192 pixels at a random place, shrunk to 64x64 with
  `skimage.transform.resize(anti_aliasing=True)` and rounded. The two sets differ
  only in the random numbers (seeds 1 and 2), so they are two samples of one
  distribution.
- `pyramid_a0.bin`: the first image of `photos_a` (64x64x3 u8, HWC) followed by its
  Laplacian pyramid from `swd_numpy.laplacian_pyramid` (levels 64, 32, 16; float32
  little-endian, channel-major), which the unit tests of `metrics::swd` match value
  for value.
- `reference.json`: the shape and FNV-1a-64 hash of every set used (so the Rust
  test can check that it derived the same bytes), and, for every pair below, the SWD (x1e3, per level and average) of
  `swd_numpy.swd` with seeds 0..SEEDS-1, and their mean and sample standard deviation:
  the run-to-run spread that the Rust result must fall within.

The other sets are derived from these two by integer arithmetic that the Rust test
repeats bit for bit (so they need not be stored):

- `blur(x, passes)`: `passes` times, the binomial [1, 2, 1] / 4 along rows and then
  columns, edges replicated, each value rounded as `(a + 2b + c + 2) >> 2`.
- `noise(x, amplitude)`: adds `floor(v + amplitude * (s - 131070) / 37837.23 + 0.5)`,
  clipped to 0..255, where `s` is the sum of the four 16-bit words of
  `splitmix64(i)` for the flat (NHWC) index `i` of the value: a deterministic,
  nearly Gaussian noise of standard deviation `amplitude`.
- `gray(x)`: BT.601 luma in 16-bit fixed point,
  `(19595 r + 38470 g + 7471 b + 32768) >> 16` (gantry's own RGB-to-gray).
"""

import json
import sys
from pathlib import Path

import numpy as np
import skimage.data
import skimage.transform
from PIL import Image

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import swd_numpy  # noqa: E402

SIDE = 64
COUNT = 128
GRID_COLUMNS = 16
SEEDS = 16
PHOTOS = ["astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "retina"]

# name -> (real, fake, how the fake is made, for people reading the JSON)
PAIRS = {
    "same": ("a", "a", "photos_a against itself: the noise floor of the sampling"),
    "other_crops": ("a", "b", "photos_b: other crops of the same photographs"),
    "blur1": ("a", "blur(a, 1)", "photos_a blurred with one binomial pass"),
    "noise8": ("a", "noise(a, 8)", "photos_a plus noise of standard deviation 8"),
    "gray_other_crops": ("gray(a)", "gray(b)", "both sets converted to gray"),
}


def crops(count, seed):
    photos = [getattr(skimage.data, name)() for name in PHOTOS]
    rng = np.random.default_rng(seed)
    out = []
    for k in range(count):
        photo = photos[k % len(photos)]
        h, w, _ = photo.shape
        side = min(int(round(SIDE * rng.uniform(1.0, 3.0))), h, w)
        y = rng.integers(0, h - side + 1)
        x = rng.integers(0, w - side + 1)
        crop = photo[y : y + side, x : x + side].astype(np.float64)
        small = skimage.transform.resize(
            crop, (SIDE, SIDE), anti_aliasing=True, preserve_range=True
        )
        out.append(np.clip(np.floor(small + 0.5), 0, 255).astype(np.uint8))
    return np.stack(out)


def to_grid(images):
    n, h, w, c = images.shape
    rows = n // GRID_COLUMNS
    return images.reshape(rows, GRID_COLUMNS, h, w, c).transpose(0, 2, 1, 3, 4).reshape(
        rows * h, GRID_COLUMNS * w, c
    )


def from_grid(grid, side=SIDE):
    h, w, c = grid.shape
    rows, cols = h // side, w // side
    return grid.reshape(rows, side, cols, side, c).transpose(0, 2, 1, 3, 4).reshape(
        rows * cols, side, side, c
    )


def blur(images, passes):
    x = images.astype(np.int64)
    for _ in range(passes):
        for axis in (2, 1):  # rows (along width) first, then columns
            n = x.shape[axis]
            prev = np.take(x, np.clip(np.arange(n) - 1, 0, n - 1), axis=axis)
            nxt = np.take(x, np.clip(np.arange(n) + 1, 0, n - 1), axis=axis)
            x = (prev + 2 * x + nxt + 2) >> 2
    return x.astype(np.uint8)


def splitmix64(i):
    with np.errstate(over="ignore"):
        z = i.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def noise(images, amplitude):
    h = splitmix64(np.arange(images.size, dtype=np.uint64))
    mask = np.uint64(0xFFFF)
    s = sum(((h >> np.uint64(16 * k)) & mask).astype(np.int64) for k in range(4))
    v = images.reshape(-1).astype(np.float64) + amplitude * ((s - 131070).astype(np.float64) / 37837.23)
    return np.clip(np.floor(v + 0.5), 0, 255).astype(np.uint8).reshape(images.shape)


def gray(images):
    x = images.astype(np.int64)
    y = (19595 * x[..., 0] + 38470 * x[..., 1] + 7471 * x[..., 2] + 32768) >> 16
    return y.astype(np.uint8)[..., None]


def fnv1a64(images):
    """FNV-1a over the bytes, so the Rust test can prove it derived the same set."""
    h = 0xCBF29CE484222325
    for byte in images.tobytes():
        h = ((h ^ byte) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return f"{h:016x}"


def derive(name, sets):
    if name in sets:
        return sets[name]
    func, arg = name[: name.index("(")], name[name.index("(") + 1 : -1]
    args = [a.strip() for a in arg.split(",")]
    base = derive(args[0], sets)
    if func == "blur":
        return blur(base, int(args[1]))
    if func == "noise":
        return noise(base, float(args[1]))
    if func == "gray":
        return gray(base)
    raise ValueError(name)


def main():
    sets = {"a": crops(COUNT, 1), "b": crops(COUNT, 2)}
    for name, images in sets.items():
        Image.fromarray(to_grid(images)).save(HERE / f"photos_{name}.png", optimize=True)
        assert np.array_equal(from_grid(np.asarray(Image.open(HERE / f"photos_{name}.png"))), images)

    first = sets["a"][:1]
    x = np.ascontiguousarray(first.transpose(0, 3, 1, 2), np.float32)
    levels = swd_numpy.laplacian_pyramid(x, 3)
    blob = first.tobytes() + b"".join(np.ascontiguousarray(lv, "<f4").tobytes() for lv in levels)
    (HERE / "pyramid_a0.bin").write_bytes(blob)

    out = {
        "generator": "stages/tests/reference/swd/make_reference.py",
        "implementation": "swd_numpy.py (NumPy port of ProGAN's metrics/sliced_wasserstein.py)",
        "config": {
            "nhood_size": swd_numpy.NHOOD_SIZE,
            "nhoods_per_image": swd_numpy.NHOODS_PER_IMAGE,
            "dir_repeats": swd_numpy.DIR_REPEATS,
            "dirs_per_repeat": swd_numpy.DIRS_PER_REPEAT,
            "min_resolution": swd_numpy.MIN_RESOLUTION,
        },
        "images_per_set": COUNT,
        "seeds": list(range(SEEDS)),
        "pairs": {},
        "sets": {},
    }
    for pair, (real_name, fake_name, what) in PAIRS.items():
        real, fake = derive(real_name, sets), derive(fake_name, sets)
        for name, images in ((real_name, real), (fake_name, fake)):
            out["sets"][name] = {"shape": list(images.shape), "fnv1a64": fnv1a64(images)}
        runs = [swd_numpy.swd(real, fake, seed) for seed in range(SEEDS)]
        resolutions = [r for r, _ in runs[0]["levels"]]
        per_level = np.array([[d for _, d in run["levels"]] for run in runs])
        average = np.array([run["average"] for run in runs])
        out["pairs"][pair] = {
            "real": real_name,
            "fake": fake_name,
            "what": what,
            "levels": [
                {
                    "resolution": int(res),
                    "mean": float(per_level[:, i].mean()),
                    "std": float(per_level[:, i].std(ddof=1)),
                    "runs": [float(v) for v in per_level[:, i]],
                }
                for i, res in enumerate(resolutions)
            ],
            "average": {
                "mean": float(average.mean()),
                "std": float(average.std(ddof=1)),
                "runs": [float(v) for v in average],
            },
        }
        summary = ", ".join(
            f"{lv['resolution']}: {lv['mean']:.3f}±{lv['std']:.3f}" for lv in out["pairs"][pair]["levels"]
        )
        print(f"{pair:18s} {summary}, avg {average.mean():.3f}±{average.std(ddof=1):.3f}", flush=True)
    (HERE / "reference.json").write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
