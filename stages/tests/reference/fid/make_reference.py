#!/usr/bin/env python3
"""Reference values for gantry's FID and Inception Score math.

Writes, next to this script:

* `<set>.f32`: feature sets and probability tables, raw little-endian float32, row-major;
* `reference.json`: shapes, the FID of each pair of sets by the scipy `sqrtm` route that
  pytorch-fid and the TTUR code use, and the Inception Score of each table.

The large 2048-feature sets are not stored (4 MB each): they come from an integer-only
generator (splitmix64, exact integer arithmetic, a power-of-two scale) that
`stages/tests/fid_parity.rs` reimplements; their FNV-1a hash is recorded so the Rust side
can prove it rebuilt the very same bits.

    /work/venv-fid/bin/python make_reference.py                 # numpy, scipy: everything
    /other/venv/bin/python make_reference.py --reuse-data       # add another scipy's FIDs

`--reuse-data` reads the stored sets instead of regenerating them (numpy's random streams
are not promised to stay the same across versions) and adds this scipy's results beside
the ones already in reference.json; older scipy (< 1.16) takes the eps-offset fallback on
the dead-feature pair, which is how that branch gets covered.
"""

import argparse
import json
import math
import sys
import warnings
from pathlib import Path

import numpy as np
import scipy
import scipy.linalg

HERE = Path(__file__).resolve().parent
MASK64 = (1 << 64) - 1
GOLDEN = 0x9E3779B97F4A7C15


# ---------------------------------------------------------------- integer generator


def splitmix64(seed, count):
    """Outputs 0..count of splitmix64 seeded with `seed`, vectorised (it is counter-based)."""
    idx = np.arange(1, count + 1, dtype=np.uint64)
    with np.errstate(over="ignore"):
        z = np.uint64(seed) + idx * np.uint64(GOLDEN)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return z


def uniform_ints(draws, lo, hi):
    """Integers in [lo, hi) from raw draws: high 32 bits modulo the span."""
    return (draws >> np.uint64(32)).astype(np.int64) % (hi - lo) + lo


def generated_set(spec):
    """Correlated features from integers only, so Rust can rebuild them bit for bit.

    Draw order: factors×dim loadings in [-4, 4], then per sample `factors` factor values in
    [-512, 512) followed by 3 draws per feature in [-512, 512) (summed: a bell-shaped
    noise). Feature j = (1 + j % period)·noise + Σ_k loading[k][j]·factor[k] + shift·(j % 5),
    divided by 1024. Every value is an integer below 2^24 before the power-of-two
    division, so float32 holds it exactly.
    """
    n, dim, k = spec["n"], spec["dim"], spec["factors"]
    per_sample = k + 3 * dim
    draws = splitmix64(spec["seed"], k * dim + n * per_sample)
    loadings = uniform_ints(draws[: k * dim], -4, 5).reshape(k, dim)
    body = draws[k * dim :].reshape(n, per_sample)
    factors = uniform_ints(body[:, :k], -512, 512)
    noise = uniform_ints(body[:, k:], -512, 512).reshape(n, dim, 3).sum(axis=2)
    j = np.arange(dim, dtype=np.int64)
    x = (1 + j % spec["period"]) * noise + factors @ loadings + spec["shift"] * (j % 5)
    assert np.abs(x).max() < 2**24
    return (x.astype(np.float64) / 1024.0).astype(np.float32)


def fnv1a64(data):
    h = 0xCBF29CE484222325
    for byte in data:
        h = ((h ^ byte) * 0x100000001B3) & MASK64
    return f"{h:016x}"


# ---------------------------------------------------------------- stored sets


def gaussian_set(rng, n, dim, scale, shift, dead=()):
    """n samples of a correlated Gaussian: a random mixing matrix times decaying scales."""
    mixing = rng.standard_normal((dim, dim)) / math.sqrt(dim)
    spectrum = scale / np.sqrt(1.0 + np.arange(dim))
    x = (rng.standard_normal((n, dim)) * spectrum) @ mixing.T + shift
    # Dead features (constant, like ReLU units that never fire) give exactly zero rows and
    # columns in the covariance: the singular case older scipy sqrtm returns NaN/inf for.
    x[:, list(dead)] = 0.5
    return x.astype(np.float32)


def stored_sets():
    rng = np.random.default_rng(20240611)
    sets = {}
    # Full rank (n ≫ d), different covariances and shifted means.
    sets["d64_a"] = gaussian_set(rng, 1000, 64, 1.0, 0.0)
    sets["d64_b"] = gaussian_set(rng, 1000, 64, 1.5, 0.25)
    # Singular: n < d, as when scoring a few hundred images with 2048-d features.
    sets["d256_a"] = gaussian_set(rng, 100, 256, 1.0, 0.0)
    sets["d256_b"] = gaussian_set(rng, 100, 256, 0.8, -0.1)
    # Singular with the same 40 dead features in both sets: older scipy sqrtm leaves an
    # imaginary part of order 10 here, which pytorch-fid rejects.
    sets["d256_dead_a"] = gaussian_set(rng, 100, 256, 1.0, 0.0, dead=range(40))
    sets["d256_dead_b"] = gaussian_set(rng, 100, 256, 1.2, 0.1, dead=range(40))
    # Different dead features in each set: older scipy sqrtm returns non-finite values and
    # the eps·I offset fallback runs.
    sets["d32_dead_a"] = gaussian_set(rng, 200, 32, 1.0, 0.0, dead=range(0, 4))
    sets["d32_dead_b"] = gaussian_set(rng, 200, 32, 1.0, 0.2, dead=range(4, 8))
    return sets


GENERATED = {
    "gen2048_a": {"seed": 1, "n": 500, "dim": 2048, "factors": 8, "period": 7, "shift": 0},
    "gen2048_b": {"seed": 2, "n": 500, "dim": 2048, "factors": 8, "period": 5, "shift": 64},
}

PAIRS = [
    ("d64_shifted", "d64_a", "d64_b"),
    ("d64_same", "d64_a", "d64_a"),
    ("d256_singular", "d256_a", "d256_b"),
    ("d256_dead", "d256_dead_a", "d256_dead_b"),
    ("d32_dead_disjoint", "d32_dead_a", "d32_dead_b"),
    ("d2048_singular", "gen2048_a", "gen2048_b"),
]


def probability_tables():
    rng = np.random.default_rng(7)
    tables = {}
    tables["is_dirichlet"] = rng.dirichlet(np.full(10, 0.3), size=1000)
    sparse = rng.dirichlet(np.full(50, 0.05), size=2000)
    # Exact zeros (softmax underflow, one-hot labels): the 0·log 0 = 0 convention.
    sparse[rng.random(sparse.shape) < 0.5] = 0.0
    sparse[sparse.sum(axis=1) == 0.0, 0] = 1.0
    tables["is_sparse_zeros"] = sparse / sparse.sum(axis=1, keepdims=True)
    return {k: v.astype(np.float32) for k, v in tables.items()}


# ---------------------------------------------------------------- the formulas


def fid_scipy_route(x1, x2, eps=1e-6):
    """FID as pytorch-fid / TTUR compute it, restated: sqrtm of the product, eps fallback,
    real part if the imaginary residue is small. Statistics in float64."""
    mu1, mu2 = x1.mean(axis=0), x2.mean(axis=0)
    s1, s2 = np.cov(x1, rowvar=False), np.cov(x2, rowvar=False)
    info = {"eps_fallback": False, "complex": False, "max_abs_imag_diag": 0.0, "rejected": False}

    def root(m):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return scipy.linalg.sqrtm(m, disp=False)[0]

    covmean = root(s1 @ s2)
    if not np.isfinite(covmean).all():
        info["eps_fallback"] = True
        offset = np.eye(s1.shape[0]) * eps
        covmean = root((s1 + offset) @ (s2 + offset))
    if np.iscomplexobj(covmean):
        imag = np.diagonal(covmean).imag
        info["complex"] = True
        info["max_abs_imag_diag"] = float(np.abs(imag).max())
        info["rejected"] = not np.allclose(imag, 0, atol=1e-3)
        covmean = covmean.real
    diff = mu1 - mu2
    fid = diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * np.trace(covmean)
    return float(fid), info


def fid_eigh(x1, x2):
    """The same distance through symmetric eigendecompositions (for information)."""
    mu1, mu2 = x1.mean(axis=0), x2.mean(axis=0)
    s1, s2 = np.cov(x1, rowvar=False), np.cov(x2, rowvar=False)
    w, u = np.linalg.eigh(s1)
    half = (u * np.sqrt(np.clip(w, 0, None))) @ u.T
    mu = np.linalg.eigvalsh(half @ s2 @ half)
    diff = mu1 - mu2
    tr = np.sqrt(np.clip(mu, 0, None)).sum()
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * tr)


def inception_score_numpy(p, splits):
    """The original formula, vectorised, with 0·log 0 = 0."""
    scores = []
    n = p.shape[0]
    for k in range(splits):
        part = p[k * n // splits : (k + 1) * n // splits]
        marginal = part.mean(axis=0, keepdims=True)
        with np.errstate(divide="ignore", invalid="ignore"):
            terms = np.where(part > 0, part * (np.log(part) - np.log(marginal)), 0.0)
        scores.append(np.exp(terms.sum(axis=1).mean()))
    return float(np.mean(scores)), float(np.std(scores))


def inception_score_sequential(p, splits):
    """The same formula with plain left-to-right sums (rows, then classes) and libm's
    log/exp: the summation order gantry uses, so the two should agree to the last bit."""
    rows = p.tolist()
    n, classes = len(rows), len(rows[0])
    scores = []
    for k in range(splits):
        part = rows[k * n // splits : (k + 1) * n // splits]
        marginal = [0.0] * classes
        for row in part:
            for c in range(classes):
                marginal[c] += row[c]
        log_m = [math.log(m / len(part)) if m > 0 else -math.inf for m in marginal]
        kl_sum = 0.0
        for row in part:
            kl = 0.0
            for c in range(classes):
                if row[c] > 0:
                    kl += row[c] * (math.log(row[c]) - log_m[c])
            kl_sum += kl
        scores.append(math.exp(kl_sum / len(part)))
    mean = 0.0
    for s in scores:
        mean += s
    mean /= splits
    var = 0.0
    for s in scores:
        var += (s - mean) * (s - mean)
    return mean, math.sqrt(var / splits)


# ---------------------------------------------------------------- main


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reuse-data", action="store_true")
    args = parser.parse_args()

    out = HERE / "reference.json"
    ref = json.loads(out.read_text()) if args.reuse_data else {}
    if args.reuse_data:
        data = {
            name: np.fromfile(HERE / meta["file"], dtype="<f4").reshape(meta["n"], meta["dim"])
            for name, meta in ref["sets"].items()
            if "file" in meta
        }
    else:
        data = stored_sets()
        ref = {
            "note": "generated by make_reference.py; do not edit by hand",
            "numpy": np.__version__,
            "sets": {},
            "fid": [],
            "inception_score": [],
        }
        for name, x in data.items():
            x.astype("<f4").tofile(HERE / f"{name}.f32")
            ref["sets"][name] = {"file": f"{name}.f32", "n": x.shape[0], "dim": x.shape[1]}
    for name, spec in GENERATED.items():
        x = generated_set(spec)
        digest = fnv1a64(x.astype("<f4").tobytes())
        if args.reuse_data and ref["sets"][name]["fnv1a64"] != digest:
            sys.exit(f"{name}: generator output changed")
        ref["sets"][name] = {"generator": spec, "n": spec["n"], "dim": spec["dim"], "fnv1a64": digest}
        data[name] = x

    by_name = {case["name"]: case for case in ref["fid"]}
    for name, a, b in PAIRS:
        x1, x2 = data[a].astype(np.float64), data[b].astype(np.float64)
        fid, info = fid_scipy_route(x1, x2)
        case = by_name.setdefault(name, {"name": name, "a": a, "b": b, "scipy": {}})
        case["scipy"][scipy.__version__] = {"fid": fid, **info}
        case["eigh_float64"] = fid_eigh(x1, x2)
        print(f"{name}: scipy {scipy.__version__} {fid!r} {info}; eigh {case['eigh_float64']!r}")
    ref["fid"] = list(by_name.values())

    if not args.reuse_data:
        for name, p in probability_tables().items():
            p.astype("<f4").tofile(HERE / f"{name}.f32")
            p64 = p.astype(np.float64)
            mean, std = inception_score_numpy(p64, 10)
            smean, sstd = inception_score_sequential(p64, 10)
            ref["inception_score"].append(
                {
                    "name": name,
                    "file": f"{name}.f32",
                    "n": p.shape[0],
                    "classes": p.shape[1],
                    "splits": 10,
                    "numpy": {"mean": mean, "std": std},
                    "sequential": {"mean": smean, "std": sstd},
                }
            )
            print(f"{name}: numpy {mean!r} ± {std!r}; sequential {smean!r} ± {sstd!r}")

    out.write_text(json.dumps(ref, indent=1) + "\n")


if __name__ == "__main__":
    main()
