"""A NumPy port of the sliced Wasserstein distance of Karras et al. 2018 (ProGAN,
Appendix D), the reference that gantry's `metrics::swd` is checked and timed against.

Written from the paper and from reading the authors' published
`metrics/sliced_wasserstein.py`; the conventions below are theirs:

- Images are uint8 pixels converted to float32 as they are (0..255); nothing is
  rescaled, because the per-channel normalisation below makes the result
  independent of the pixel scale anyway.
- Laplacian pyramid: `pyr_down` convolves with the 5x5 binomial filter
  [1,4,6,4,1]^T [1,4,6,4,1] / 256 (scipy.ndimage, mode="mirror", i.e. reflection
  about the edge pixel, the edge not repeated) and keeps every second row and
  column; `pyr_up` puts the coarse level on the even pixels of a zero image of
  twice the size and convolves with 4x the same filter. Level i is
  G_i - pyr_up(G_{i+1}); the coarsest level is the Gaussian level itself. Levels
  are made while the side is at least 16 (64x64 images give 64, 32, 16).
- Per image and level: 128 neighbourhoods of 7x7 pixels at uniformly random
  centres (drawn with replacement, fully inside the level), flattened as
  (channel, row, column).
- Per level and set: every descriptor component is centred and scaled by the mean
  and the (population) standard deviation of its channel over all descriptors of
  that level of that set.
- Per level: 4 repeats of 128 directions drawn from an isotropic Gaussian and
  normalised to unit length (float64, then cast to float32 like the original),
  shared by both sets; project (float32 matmul), sort each direction's
  projections, mean absolute difference of the sorted values over descriptors and
  directions, mean over the repeats. Reported x1e3, plus the mean over levels.

The random stream is NumPy's PCG64 (`np.random.default_rng(seed)`), not the global
legacy generator, so runs with the same seed repeat exactly. gantry draws its own
numbers (ChaCha), so the two agree only in distribution: compare them within the
run-to-run spread over seeds, never bit for bit.

Images are fed in minibatches (like the original's `feed`), so scipy's working
memory stays at a minibatch; the descriptors of every level of both sets are kept,
as in the original.
"""

import numpy as np
import scipy.ndimage

NHOOD_SIZE = 7
NHOODS_PER_IMAGE = 128
DIR_REPEATS = 4
DIRS_PER_REPEAT = 128
MIN_RESOLUTION = 16

_G1 = np.float32([1, 4, 6, 4, 1]) / 16.0
_G2 = np.outer(_G1, _G1).astype(np.float32)  # == [1,4,6,4,1]^T [1,4,6,4,1] / 256


def pyr_down(x):
    """(n, c, h, w) float32 -> (n, c, h/2, w/2)."""
    y = scipy.ndimage.convolve(x, _G2[None, None], mode="mirror")
    return y[:, :, ::2, ::2]


def pyr_up(x):
    """(n, c, h, w) float32 -> (n, c, 2h, 2w)."""
    n, c, h, w = x.shape
    z = np.zeros((n, c, 2 * h, 2 * w), np.float32)
    z[:, :, ::2, ::2] = x
    return scipy.ndimage.convolve(z, 4.0 * _G2[None, None], mode="mirror")


def laplacian_pyramid(x, num_levels):
    """Levels from the finest down; the last one is the Gaussian level itself."""
    levels = [x]
    for _ in range(1, num_levels):
        coarse = pyr_down(levels[-1])
        levels[-1] = levels[-1] - pyr_up(coarse)
        levels.append(coarse)
    return levels


def resolutions(side, min_resolution=MIN_RESOLUTION):
    res = []
    while side >= min_resolution:
        res.append(side)
        side //= 2
    return res


def descriptors(level, rng, nhood_size=NHOOD_SIZE, nhoods_per_image=NHOODS_PER_IMAGE):
    """(n, c, h, w) -> (n * nhoods_per_image, c, nhood_size, nhood_size)."""
    n, c, h, w = level.shape
    r = nhood_size // 2
    count = n * nhoods_per_image
    img = np.repeat(np.arange(n), nhoods_per_image)
    cy = rng.integers(r, h - r, size=count)
    cx = rng.integers(r, w - r, size=count)
    off = np.arange(-r, r + 1)
    rows = cy[:, None, None, None] + off[None, None, :, None]
    cols = cx[:, None, None, None] + off[None, None, None, :]
    chans = np.arange(c)[None, :, None, None]
    return level[img[:, None, None, None], chans, rows, cols]


def normalise(desc):
    """Per-channel mean/std over every descriptor of a level of a set; flattened."""
    desc = desc - desc.mean(axis=(0, 2, 3), keepdims=True)
    desc = desc / desc.std(axis=(0, 2, 3), keepdims=True)
    return desc.reshape(desc.shape[0], -1)


def sliced_wasserstein(a, b, rng, dir_repeats=DIR_REPEATS, dirs_per_repeat=DIRS_PER_REPEAT):
    assert a.shape == b.shape
    per_repeat = []
    for _ in range(dir_repeats):
        dirs = rng.standard_normal((a.shape[1], dirs_per_repeat))
        dirs /= np.sqrt(np.sum(dirs * dirs, axis=0, keepdims=True))
        dirs = dirs.astype(np.float32)
        pa = np.sort(a @ dirs, axis=0)
        pb = np.sort(b @ dirs, axis=0)
        per_repeat.append(np.mean(np.abs(pa - pb)))
    return float(np.mean(per_repeat))


def set_descriptors(images, num_levels, rng, batch=256):
    """images: (n, h, w, c) uint8 -> one (descriptors, dim) float32 array per level."""
    per_level = [[] for _ in range(num_levels)]
    for start in range(0, len(images), batch):
        x = np.ascontiguousarray(images[start : start + batch].transpose(0, 3, 1, 2), np.float32)
        for i, level in enumerate(laplacian_pyramid(x, num_levels)):
            per_level[i].append(descriptors(level, rng))
    return [normalise(np.concatenate(d, axis=0)) for d in per_level]


def swd(real, fake, seed, min_resolution=MIN_RESOLUTION):
    """SWD x1e3 per level (finest first) and their mean. real, fake: (n, h, w, c) uint8."""
    assert real.shape == fake.shape and real.dtype == np.uint8
    rng = np.random.default_rng(seed)
    res = resolutions(real.shape[1], min_resolution)
    desc_real = set_descriptors(real, len(res), rng)
    desc_fake = set_descriptors(fake, len(res), rng)
    dists = [1e3 * sliced_wasserstein(a, b, rng) for a, b in zip(desc_real, desc_fake)]
    return {"levels": list(zip(res, dists)), "average": float(np.mean(dists))}
