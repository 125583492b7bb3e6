#!/usr/bin/env python3
"""Makes the Inception-v3 reference fixtures for gantry's Rust Inception implementation.

    python3 -m venv bench/.venv-ssim
    bench/.venv-ssim/bin/pip install numpy torch torchvision pytorch-fid
    bench/.venv-ssim/bin/python stages/tests/reference/inception/make_reference.py

(any venv with torch, a matching torchvision and pytorch-fid will do; nothing is
downloaded: both networks get deterministic, formula-defined weights instead of the
pretrained ones). It runs on the CPU with 2 threads and writes, next to itself:

- `reference.json`: outputs of two networks, in eval mode, float32, on the CPU:
  - `torchvision`: `torchvision.models.inception_v3(weights=None, aux_logits=False,
    transform_input=False, init_weights=False, num_classes=1000)`.
  - `fid`: pytorch-fid's FID Inception, built the way `pytorch_fid.inception.
    fid_inception_v3` builds it (torchvision Inception with num_classes=1008,
    aux_logits=False, then Mixed_5b/5c/5d -> FIDInceptionA, 6b-6e -> FIDInceptionC,
    7b -> FIDInceptionE_1, 7c -> FIDInceptionE_2) but without the weight download.
  For both, on the input tensor "input": `features` (the 2048 values after the final
  adaptive average pool, flattened) and `logits` (the output of `fc`).
  - `fid_preprocessed_u8`: the 2048-d pool3 output of `pytorch_fid.inception.
    InceptionV3(output_blocks=[3], resize_input=True, normalize_input=True)` whose
    inner network is the `fid` one above, fed the u8 images "images_u8" the way
    pytorch-fid's `fid_score.py` feeds them (see `preprocessing` in the JSON).
  Every output also has a `summary` (min, max, mean |x|) and `f64_max_abs_diff`: how far
  the float32 result is from the same network evaluated in float64, a hint of how much
  float32 rounding alone explains.
  `state_dict_keys` lists, per model, the sorted (name, shape) pairs of its state dict,
  which is what a real weights file of that model holds.
- `tiny_state_dict.pth`: `torch.save` of a two-tensor OrderedDict ("a.weight" [2, 3] =
  [[1, 2, 3], [4, 5, 6]], "b.running_var" [3] = [0.5, 1.5, 2.5], float32), to check
  that the Rust loader reads PyTorch zip pickles written by real torch.

The deterministic numbers (see `FORMULAS`) use only integer arithmetic up to one
exact conversion to float64, so the Rust side can regenerate the same weights and
inputs bit for bit. torch is only needed here; the Rust tests read the JSON.
"""

import collections
import importlib.metadata
import json
import math
import re
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torchvision
from pytorch_fid import inception as pfi

HERE = Path(__file__).resolve().parent
MASK64 = (1 << 64) - 1
GOLDEN = 0x9E3779B97F4A7C15

FORMULAS = """\
fnv1a64(name): FNV-1a 64-bit over the UTF-8 bytes of name (offset 0xcbf29ce484222325, \
prime 0x100000001b3, mod 2^64). \
splitmix64(x): z = x + 0x9E3779B97F4A7C15; z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9; \
z = (z ^ (z >> 27)) * 0x94D049BB133111EB; return z ^ (z >> 31) (all mod 2^64). \
u(name, i) for the row-major flat index i in PyTorch's shape: \
h = splitmix64(fnv1a64(name) ^ (i * 0x9E3779B97F4A7C15 mod 2^64)); \
u = f64(h >> 11) * 2^-53, in [0, 1). s = 2*u - 1 (f64, exact). \
Each value below is evaluated in float64 (IEEE, in the order written) and rounded to \
float32 once at the end. \
*.conv.weight [out, in, kh, kw]: s * sqrt(6.0 / (in*kh*kw)) (the sqrt is the f64 sqrt of \
the f64 quotient). *.bn.weight: 0.5 + u. *.bn.bias: 0.2 * s. *.bn.running_mean: 0.1 * s. \
*.bn.running_var: 0.5 + u. *.bn.num_batches_tracked: left as constructed (0, unused). \
BatchNorm eps is 0.001 (torchvision BasicConv2d). \
fc.weight [classes, 2048]: s * sqrt(3.0 / 2048). fc.bias: 0.1 * s. \
Input "input" [2, 3, 299, 299] (NCHW): s as float32, fed straight to the network. \
Input "images_u8" [2, 32, 32, 3] (NHWC): u8 floor(u * 256) (= h >> 56)."""

PREPROCESSING_U8 = """\
images_u8 (N, H, W, C u8) -> torch.from_numpy(...).permute(0, 3, 1, 2).to(float32).div(255) \
(float32 division, as torchvision.transforms.ToTensor in pytorch_fid.fid_score does), \
then pytorch_fid.inception.InceptionV3.forward: \
F.interpolate(x, size=(299, 299), mode='bilinear', align_corners=False) \
(antialias False, the default), then x = 2 * x - 1, then blocks 0..3 \
(block 3 ends in AdaptiveAvgPool2d((1, 1))); output flattened to [N, 2048]."""


def fnv1a64(name):
    h = 0xCBF29CE484222325
    for byte in name.encode("utf-8"):
        h = ((h ^ byte) * 0x100000001B3) & MASK64
    return h


def splitmix64(x):
    """splitmix64 over a numpy uint64 array (wraps mod 2^64)."""
    z = x + np.uint64(GOLDEN)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def hashes(name, count):
    with np.errstate(over="ignore"):
        i = np.arange(count, dtype=np.uint64)
        return splitmix64(np.uint64(fnv1a64(name)) ^ (i * np.uint64(GOLDEN)))


def uniform(name, shape):
    """u(name, i) in [0, 1) as float64, shaped like `shape` (row-major)."""
    h = hashes(name, math.prod(shape))
    return ((h >> np.uint64(11)).astype(np.float64) * 2.0 ** -53).reshape(shape)


def formula_value(name, shape):
    u = uniform(name, shape)
    s = 2.0 * u - 1.0
    if name.endswith(".conv.weight"):
        _, cin, kh, kw = shape
        v = s * math.sqrt(6.0 / (cin * kh * kw))
    elif name.endswith(".bn.weight") or name.endswith(".bn.running_var"):
        v = 0.5 + u
    elif name.endswith(".bn.bias"):
        v = 0.2 * s
    elif name.endswith(".bn.running_mean"):
        v = 0.1 * s
    elif name == "fc.weight":
        v = s * math.sqrt(3.0 / 2048)
    elif name == "fc.bias":
        v = 0.1 * s
    else:
        raise SystemExit(f"no formula for state-dict entry {name} {list(shape)}")
    return torch.from_numpy(v.astype(np.float32))


def load_formula_weights(model):
    state = model.state_dict()
    new = collections.OrderedDict()
    for name, tensor in state.items():
        if name.endswith(".num_batches_tracked"):
            new[name] = tensor
        else:
            new[name] = formula_value(name, tuple(tensor.shape))
            assert new[name].shape == tensor.shape and new[name].dtype == tensor.dtype
    model.load_state_dict(new, strict=True)
    return model.eval()


def torchvision_inception():
    model = torchvision.models.inception_v3(weights=None, aux_logits=False,
                                           transform_input=False, init_weights=False,
                                           num_classes=1000)
    return load_formula_weights(model)


def fid_inception():
    """pytorch_fid.inception.fid_inception_v3's construction, minus the download."""
    model = pfi._inception_v3(num_classes=1008, aux_logits=False, weights=None)
    model.Mixed_5b = pfi.FIDInceptionA(192, pool_features=32)
    model.Mixed_5c = pfi.FIDInceptionA(256, pool_features=64)
    model.Mixed_5d = pfi.FIDInceptionA(288, pool_features=64)
    model.Mixed_6b = pfi.FIDInceptionC(768, channels_7x7=128)
    model.Mixed_6c = pfi.FIDInceptionC(768, channels_7x7=160)
    model.Mixed_6d = pfi.FIDInceptionC(768, channels_7x7=160)
    model.Mixed_6e = pfi.FIDInceptionC(768, channels_7x7=192)
    model.Mixed_7b = pfi.FIDInceptionE_1(1280)
    model.Mixed_7c = pfi.FIDInceptionE_2(2048)
    return load_formula_weights(model)


def fid_wrapper(inner):
    """pytorch-fid's own InceptionV3 with its `fid_inception_v3` swapped for `inner`.

    InceptionV3.__init__ looks `fid_inception_v3` up in its module when it runs, so
    patching the module attribute makes it compose its blocks from `inner` exactly as
    it would from the downloaded network.
    """
    original = pfi.fid_inception_v3
    pfi.fid_inception_v3 = lambda: inner
    try:
        wrapper = pfi.InceptionV3(output_blocks=[3], resize_input=True,
                                            normalize_input=True)
    finally:
        pfi.fid_inception_v3 = original
    return wrapper.eval()


def features_and_logits(model, x):
    """Pool features (after avgpool, flattened) and fc logits, via a forward hook."""
    seen = {}
    hook = model.avgpool.register_forward_hook(
        lambda _m, _i, out: seen.__setitem__("pool", torch.flatten(out, 1)))
    try:
        logits = model(x)
    finally:
        hook.remove()
    return seen["pool"], logits


def rounded(t):
    return [[float(f"{v:.8g}") for v in row] for row in t.tolist()]


def summary(t):
    return {"min": float(f"{t.min().item():.8g}"), "max": float(f"{t.max().item():.8g}"),
            "mean_abs": float(f"{t.abs().mean().item():.8g}")}


def checked(label, t32, t64):
    s = summary(t32)
    diff = (t32.double() - t64).abs().max().item()
    s["f64_max_abs_diff"] = float(f"{diff:.3g}")
    print(f"{label:<30} min {s['min']:+.6g}  max {s['max']:+.6g}  mean|x| {s['mean_abs']:.6g}"
          f"  |f32-f64| {diff:.3g}")
    if label.endswith("features") and (s["max"] > 1e6 or s["mean_abs"] < 1e-6):
        print(f"WARNING: {label} exploded or vanished")
    return s


def spot_values():
    """A few generated numbers, bit for bit, to debug a port of the generator."""
    spots = []
    cases = [("input", (2, 3, 299, 299)), ("images_u8", (2, 32, 32, 3)),
             ("Conv2d_1a_3x3.conv.weight", (32, 3, 3, 3)),
             ("Mixed_7c.branch_pool.bn.running_var", (192,)), ("fc.weight", (1008, 2048))]
    for name, shape in cases:
        count = math.prod(shape)
        h = hashes(name, count)
        if name == "input":
            values = (2.0 * uniform(name, shape) - 1.0).astype(np.float32).reshape(-1)
        elif name == "images_u8":
            values = (h >> np.uint64(56)).astype(np.uint8)
        else:
            values = formula_value(name, shape).numpy().reshape(-1)
        for i in (0, 1, count - 1):
            spot = {"name": name, "shape": list(shape), "index": i, "fnv1a64": f"{fnv1a64(name):#018x}",
                    "hash": f"{int(h[i]):#018x}"}
            if values.dtype == np.uint8:
                spot["value"] = int(values[i])
            else:
                spot["value"] = float(values[i])
                spot["f32_bits"] = f"{int(values[i:i + 1].view(np.uint32)[0]):#010x}"
            spots.append(spot)
    return spots


def state_dict_keys(model):
    return [[name, list(t.shape)] for name, t in sorted(model.state_dict().items())]


def write_tiny_state_dict():
    tiny = collections.OrderedDict([
        ("a.weight", torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], dtype=torch.float32)),
        ("b.running_var", torch.tensor([0.5, 1.5, 2.5], dtype=torch.float32)),
    ])
    path = HERE / "tiny_state_dict.pth"
    torch.save(tiny, path)
    print(f"{path.name}: {path.stat().st_size} bytes")


def main():
    torch.set_num_threads(2)
    torch.manual_seed(0)  # only the constructors' throwaway init; every tensor is replaced

    x = torch.from_numpy((2.0 * uniform("input", (2, 3, 299, 299)) - 1.0).astype(np.float32))
    images_u8 = (hashes("images_u8", 2 * 32 * 32 * 3) >> np.uint64(56)).astype(np.uint8)
    images_u8 = images_u8.reshape(2, 32, 32, 3)
    assert np.array_equal(images_u8, np.floor(uniform("images_u8", (2, 32, 32, 3)) * 256))
    u8_input = torch.from_numpy(images_u8).permute(0, 3, 1, 2).to(torch.float32).div(255)

    tv, fid = torchvision_inception(), fid_inception()
    reference = {
        "made_by": "stages/tests/reference/inception/make_reference.py",
        "torch_version": torch.__version__,
        "torchvision_version": torchvision.__version__,
        "pytorch_fid_version": importlib.metadata.version("pytorch-fid"),
        "numpy_version": np.__version__,
        "formulas": FORMULAS,
        "inputs": {"input": {"shape": [2, 3, 299, 299], "layout": "NCHW", "dtype": "float32"},
                   "images_u8": {"shape": [2, 32, 32, 3], "layout": "NHWC", "dtype": "u8"}},
        "spot_values": spot_values(),
        "state_dict_keys": {"torchvision": state_dict_keys(tv), "fid": state_dict_keys(fid)},
    }
    with torch.no_grad():
        for label, model in (("torchvision", tv), ("fid", fid)):
            feats, logits = features_and_logits(model, x)
            feats64, logits64 = features_and_logits(model.double(), x.double())
            model.float()
            reference[label] = {
                "input": "input",
                "features": rounded(feats), "logits": rounded(logits),
                "features_summary": checked(f"{label} features", feats, feats64),
                "logits_summary": checked(f"{label} logits", logits, logits64),
            }

        wrapper = fid_wrapper(fid)
        pool3 = torch.flatten(wrapper(u8_input)[0], 1)
        pool3_64 = torch.flatten(wrapper.double()(u8_input.double())[0], 1)
        wrapper.float()
        reference["fid_preprocessed_u8"] = {
            "input": "images_u8",
            "preprocessing": PREPROCESSING_U8,
            "features": rounded(pool3),
            "features_summary": checked("fid_preprocessed_u8 features", pool3, pool3_64),
        }

        # Consistency: the wrapper without resize/normalise is the fid network's trunk.
        wrapper.resize_input = wrapper.normalize_input = False
        direct = torch.flatten(wrapper(x)[0], 1)
        fid_feats, _ = features_and_logits(fid, x)
        print(f"wrapper vs fid trunk on 'input': max |diff| "
              f"{(direct - fid_feats).abs().max().item():.3g}")

    tv_keys = dict((k, tuple(s)) for k, s in reference["state_dict_keys"]["torchvision"])
    fid_keys = dict((k, tuple(s)) for k, s in reference["state_dict_keys"]["fid"])
    for k in sorted(set(tv_keys) | set(fid_keys)):
        if tv_keys.get(k) != fid_keys.get(k):
            print(f"state-dict difference: {k}: torchvision {tv_keys.get(k)} fid {fid_keys.get(k)}")
    print(f"{len(tv_keys)} torchvision keys, {len(fid_keys)} fid keys")

    path = HERE / "reference.json"
    text = json.dumps(reference, indent=1)
    # One line per innermost list (a feature row, a (name, shape) pair).
    text = re.sub(r"\[[^\[\]{}]*\]", lambda m: re.sub(r"\n\s*", "", m.group(0)), text)
    text = re.sub(r'\[\s*"[^"]*",\s*\[[^\[\]]*\]\s*\]', lambda m: re.sub(r"\n\s*", "", m.group(0)), text)
    assert json.loads(text) == reference
    path.write_text(text + "\n")
    print(f"{path.name}: {path.stat().st_size} bytes")
    write_tiny_state_dict()


if __name__ == "__main__":
    main()
