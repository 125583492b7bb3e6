#!/usr/bin/env python3
"""Makes the SSIM / MS-SSIM reference fixtures that `stages/tests/ssim_reference.rs` checks.

    python3 -m venv /work/venv-ssim
    /work/venv-ssim/bin/pip install numpy scikit-image pillow torch pytorch-msssim
    /work/venv-ssim/bin/python stages/tests/reference/ssim/make_reference.py

(any venv with those packages will do). It writes, next to itself:

- `images/*.png`: real photographs from `skimage.data` (astronaut, coffee, chelsea,
  rocket, camera, moon, coins, brick), resized with Pillow's Lanczos filter to
  256x256, 200x180 (width x height), 128x128 and 64x64, and degraded copies of each
  (Gaussian blur, Gaussian noise, JPEG), gray and RGB. Every degraded copy is made
  from the u8 original and rounded back to u8, so the PNGs are exactly what both
  sides score.
- `reference.json`: for every pair (original, other image), the reference values:
  - `ssim_skimage`: `skimage.metrics.structural_similarity(a, b,
    gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255,
    channel_axis=-1 or None)`, in float64.
  - `ms_ssim_pytorch`: `pytorch_msssim.ms_ssim(a, b, data_range=255, win_size=11,
    win_sigma=1.5)` on float32 tensors (N=1, C, H, W), the way people call it; and
    `ms_ssim_pytorch_f64` on float64 tensors, to show how much of a difference is
    float32 rounding. Only for images of 161 pixels and more, which is all that
    pytorch-msssim accepts.
  - `ms_ssim_shrunk_torch`, for the 64x64 and 128x128 pairs that pytorch-msssim
    refuses: gantry's documented small-image rule (the window shrinks to
    `n = min(11, w, h)` taps with sigma `1.5 * n / 11` at scales narrower than 11
    pixels, taps centred at `i - (n - 1) / 2`), evaluated with pytorch-msssim's own
    `_ssim` and PyTorch's `avg_pool2d`. Not an outside reference, but a second
    implementation of the documented rule on top of the trusted code.
- `series`: pairs ordered by increasing blur or noise, for the monotonicity test.

torch is only needed here; the Rust tests read the PNGs and the JSON.
"""

import importlib
import importlib.metadata
import io
import json
from pathlib import Path

import numpy as np
import pytorch_msssim
import skimage
import skimage.data
import skimage.filters
import torch
import torch.nn.functional as F
from PIL import Image
from skimage.metrics import structural_similarity

HERE = Path(__file__).resolve().parent
IMAGES = HERE / "images"
# `pytorch_msssim.ssim` is the function; its module holds `_ssim`.
SSIM_MODULE = importlib.import_module("pytorch_msssim.ssim")
WEIGHTS = [0.0448, 0.2856, 0.3001, 0.2363, 0.1333]


def resized(photo, box, size):
    """Crop `box` (left, top, right, bottom) of a photo and resize it to `size` (w, h)."""
    return np.asarray(Image.fromarray(photo).crop(box).resize(size, Image.Resampling.LANCZOS))


def blur(img, sigma):
    axis = -1 if img.ndim == 3 else None
    out = skimage.filters.gaussian(img.astype(np.float64), sigma=sigma, channel_axis=axis,
                                   preserve_range=True)
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def noise(img, sigma, seed):
    rng = np.random.default_rng(seed)
    out = img.astype(np.float64) + rng.normal(0.0, sigma, img.shape)
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def jpeg(img, quality):
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=quality)
    buf.seek(0)
    return np.asarray(Image.open(buf).convert("RGB" if img.ndim == 3 else "L"))


def tensor(img, dtype):
    t = torch.from_numpy(np.array(img)).to(dtype)
    t = t.permute(2, 0, 1) if img.ndim == 3 else t[None]
    return t[None]


def ssim_skimage(a, b):
    return float(structural_similarity(
        a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
        data_range=255, channel_axis=-1 if a.ndim == 3 else None))


def ms_ssim_pytorch(a, b, dtype):
    with torch.no_grad():
        return float(pytorch_msssim.ms_ssim(tensor(a, dtype), tensor(b, dtype), data_range=255,
                                            win_size=11, win_sigma=1.5))


def shrunk_window(n, sigma, channels):
    coords = torch.arange(n, dtype=torch.float64) - (n - 1) / 2
    g = torch.exp(-(coords ** 2) / (2 * sigma ** 2))
    g = (g / g.sum()).to(torch.float32)
    return g.reshape(1, 1, 1, n).repeat(channels, 1, 1, 1)


def ms_ssim_shrunk_torch(a, b):
    """pytorch-msssim's ms_ssim loop with gantry's documented window shrink."""
    x, y = tensor(a, torch.float32), tensor(b, torch.float32)
    channels = x.shape[1]
    values = []
    with torch.no_grad():
        for level in range(len(WEIGHTS)):
            h, w = x.shape[-2:]
            n = min(11, h, w)
            win = shrunk_window(n, 1.5 * n / 11, channels)
            ssim, cs = SSIM_MODULE._ssim(x, y, data_range=255, win=win,
                                                 size_average=False, K=(0.01, 0.03))
            if level < len(WEIGHTS) - 1:
                values.append(torch.relu(cs))
                padding = [s % 2 for s in x.shape[2:]]
                x = F.avg_pool2d(x, kernel_size=2, padding=padding)
                y = F.avg_pool2d(y, kernel_size=2, padding=padding)
        values.append(torch.relu(ssim))
        stacked = torch.stack(values, dim=0)
        weights = torch.tensor(WEIGHTS).view(-1, 1, 1)
        return float(torch.prod(stacked ** weights, dim=0).mean())


def main():
    IMAGES.mkdir(parents=True, exist_ok=True)
    for old in IMAGES.glob("*.png"):
        old.unlink()
    d = skimage.data
    astronaut, coffee, chelsea, rocket = d.astronaut(), d.coffee(), d.chelsea(), d.rocket()
    camera, moon, coins, brick = d.camera(), d.moon(), d.coins(), d.brick()

    # (name, original, other photo, degradations, series?)
    cases = [
        ("astronaut_256", resized(astronaut, (0, 0, 512, 512), (256, 256)),
         resized(coffee, (100, 0, 500, 400), (256, 256)), False),
        ("camera_256", resized(camera, (0, 0, 512, 512), (256, 256)),
         resized(moon, (0, 0, 512, 512), (256, 256)), False),
        ("chelsea_200x180", resized(chelsea, (60, 0, 393, 300), (200, 180)),
         resized(rocket, (150, 100, 450, 370), (200, 180)), False),
        ("coins_200x180", resized(coins, (20, 0, 357, 303), (200, 180)),
         resized(brick, (0, 0, 400, 360), (200, 180)), True),
        ("astronaut_128", resized(astronaut, (120, 20, 380, 280), (128, 128)),
         resized(coffee, (150, 50, 450, 350), (128, 128)), False),
        ("coins_128", resized(coins, (40, 20, 340, 300), (128, 128)),
         resized(camera, (100, 50, 400, 350), (128, 128)), False),
        ("astronaut_64", resized(astronaut, (150, 30, 330, 210), (64, 64)),
         resized(chelsea, (120, 40, 300, 220), (64, 64)), False),
        ("camera_64", resized(camera, (180, 60, 380, 260), (64, 64)),
         resized(coins, (40, 40, 240, 240), (64, 64)), False),
    ]

    pairs, series = [], {}
    for seed, (name, original, other, with_series) in enumerate(cases):
        variants = [("blur1.5", blur(original, 1.5)), ("noise15", noise(original, 15, seed)),
                    ("jpeg15", jpeg(original, 15)), ("other", other)]
        if with_series:
            blurs = [(f"blur{s}", blur(original, s)) for s in (0.7, 3.0)]
            noises = [(f"noise{s}", noise(original, s, 100 + s)) for s in (5, 40)]
            variants += blurs + noises
            series[f"{name}_blur"] = [f"{name}_{v}" for v in ("blur0.7", "blur1.5", "blur3.0")]
            series[f"{name}_noise"] = [f"{name}_{v}" for v in ("noise5", "noise15", "noise40")]
        Image.fromarray(original).save(IMAGES / f"{name}.png", optimize=True)
        h, w = original.shape[:2]
        channels = 3 if original.ndim == 3 else 1
        for suffix, img in variants:
            pair_name = f"{name}_{suffix}"
            Image.fromarray(img).save(IMAGES / f"{pair_name}.png", optimize=True)
            entry = {
                "name": pair_name,
                "a": f"images/{name}.png",
                "b": f"images/{pair_name}.png",
                "width": w,
                "height": h,
                "channels": channels,
                "ssim_skimage": ssim_skimage(original, img),
                "ms_ssim_pytorch": None,
                "ms_ssim_pytorch_f64": None,
                "ms_ssim_shrunk_torch": None,
            }
            if min(h, w) >= 161:
                entry["ms_ssim_pytorch"] = ms_ssim_pytorch(original, img, torch.float32)
                entry["ms_ssim_pytorch_f64"] = ms_ssim_pytorch(original, img, torch.float64)
            else:
                entry["ms_ssim_shrunk_torch"] = ms_ssim_shrunk_torch(original, img)
            pairs.append(entry)
            print(f"{pair_name:<28} ssim {entry['ssim_skimage']:.6f}  ms-ssim "
                  f"{entry['ms_ssim_pytorch'] or entry['ms_ssim_shrunk_torch']:.6f}")

    reference = {
        "made_by": "stages/tests/reference/ssim/make_reference.py",
        "versions": {"scikit-image": skimage.__version__, "torch": torch.__version__,
                     "pytorch-msssim": importlib.metadata.version("pytorch-msssim"),
                     "numpy": np.__version__},
        "settings": {"win_size": 11, "sigma": 1.5, "k1": 0.01, "k2": 0.03, "data_range": 255,
                     "weights": WEIGHTS},
        "pairs": pairs,
        "series": series,
    }
    (HERE / "reference.json").write_text(json.dumps(reference, indent=1) + "\n")
    total = sum(p.stat().st_size for p in IMAGES.glob("*.png"))
    print(f"{len(pairs)} pairs, {len(list(IMAGES.glob('*.png')))} PNGs, {total / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
