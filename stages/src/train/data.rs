//! Seeded, reproducible batches and latent vectors.
//!
//! Everything random in training is a pure function of (seed, stream, step): the batch
//! order of an epoch, the latent vectors of a step, dropout masks. A run resumed from a
//! checkpoint at step s therefore sees exactly what an uninterrupted run sees from step
//! s on, without saving any RNG state; and burn's global backend RNG, which stages running
//! side by side in one process would share, is never used.

use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use gantry_datasets::ImageSet;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Independent random streams of one training run.
#[derive(Debug, Clone, Copy)]
pub enum Stream {
    Shuffle = 1,
    Latent = 2,
    Dropout = 3,
    Labels = 4,
    Mix = 5,
    Init = 6,
    Fixed = 7,
}

/// A generator for one (seed, stream, index) triple.
pub fn rng(seed: u64, stream: Stream, index: u64) -> ChaCha8Rng {
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    key[8..16].copy_from_slice(&(stream as u64).to_le_bytes());
    key[16..24].copy_from_slice(&index.to_le_bytes());
    key[24..].copy_from_slice(b"gantry\0\0");
    ChaCha8Rng::from_seed(key)
}

/// `n` samples of N(0, 1) (Box–Muller; both values of each pair are used).
pub fn normal(rng: &mut impl Rng, n: usize) -> Vec<f32> {
    let mut v = Vec::with_capacity(n + 1);
    while v.len() < n {
        // 1 - u keeps the log away from zero.
        let u1: f64 = 1.0 - rng.random::<f64>();
        let u2: f64 = rng.random::<f64>();
        let r = (-2.0 * u1.ln()).sqrt();
        let t = std::f64::consts::TAU * u2;
        v.push((r * t.cos()) as f32);
        v.push((r * t.sin()) as f32);
    }
    v.truncate(n);
    v
}

/// A tensor of N(0, 1) values on the CPU backend, a function of `seed` alone: the tests
/// compare operations on the same random inputs, and drawing them from burn's global RNG
/// raced with the other tests of the process.
#[cfg(test)]
pub(crate) fn test_normal<const D: usize>(
    shape: [usize; D],
    seed: u64,
) -> Tensor<super::backend::Cpu, D> {
    let n = shape.iter().product();
    Tensor::from_data(
        TensorData::new(normal(&mut rng(seed, Stream::Fixed, 0), n), shape),
        &Default::default(),
    )
}

/// A [batch, dim] tensor of N(0, 1) latents.
pub fn latents<B: Backend>(
    seed: u64,
    stream: Stream,
    index: u64,
    batch: usize,
    dim: usize,
    device: &B::Device,
) -> Tensor<B, 2> {
    let mut r = rng(seed, stream, index);
    let v = normal(&mut r, batch * dim);
    Tensor::from_data(TensorData::new(v, [batch, dim]), device)
}

/// `n` labels drawn uniformly from `0..classes`.
pub fn random_labels(seed: u64, stream: Stream, index: u64, n: usize, classes: usize) -> Vec<u32> {
    let mut r = rng(seed, stream, index);
    (0..n)
        .map(|_| r.random_range(0..classes.max(1)) as u32)
        .collect()
}

/// Labels as an int tensor.
pub fn label_tensor<B: Backend>(labels: &[u32], device: &B::Device) -> Tensor<B, 1, Int> {
    let v: Vec<i64> = labels.iter().map(|&l| l as i64).collect();
    Tensor::from_data(TensorData::new(v, [labels.len()]), device)
}

/// A dropout mask with keep-probability `1 - p`, already scaled by `1 / (1 - p)`.
pub fn dropout_mask<B: Backend, const D: usize>(
    seed: u64,
    index: u64,
    shape: [usize; D],
    p: f64,
    device: &B::Device,
) -> Tensor<B, D> {
    let n: usize = shape.iter().product();
    let mut r = rng(seed, Stream::Dropout, index);
    let scale = (1.0 / (1.0 - p)) as f32;
    let v: Vec<f32> = (0..n)
        .map(|_| if r.random::<f64>() < p { 0.0 } else { scale })
        .collect();
    Tensor::from_data(TensorData::new(v, shape), device)
}

/// Training images in a fixed, seeded order per epoch.
pub struct Batcher {
    images: ImageSet,
    labels: Option<Vec<u32>>,
    batch: usize,
    seed: u64,
}

/// One batch: images NCHW scaled to [-1, 1], and their labels when the dataset has them.
pub struct Batch<B: Backend> {
    pub images: Tensor<B, 4>,
    pub labels: Option<Vec<u32>>,
}

impl Batcher {
    /// `batch` is clamped to the dataset size.
    pub fn new(images: ImageSet, labels: Option<Vec<u32>>, batch: usize, seed: u64) -> Batcher {
        let batch = batch.clamp(1, images.len().max(1));
        Batcher {
            images,
            labels,
            batch,
            seed,
        }
    }

    pub fn batch_size(&self) -> usize {
        self.batch
    }

    pub fn channels(&self) -> usize {
        self.images.channels as usize
    }

    pub fn size(&self) -> (usize, usize) {
        (self.images.height as usize, self.images.width as usize)
    }

    /// Full batches per epoch (the last partial batch is dropped, as the papers' code does).
    pub fn steps_per_epoch(&self) -> usize {
        (self.images.len() / self.batch).max(1)
    }

    fn order(&self, epoch: u64) -> Vec<usize> {
        let mut idx: Vec<usize> = (0..self.images.len()).collect();
        idx.shuffle(&mut rng(self.seed, Stream::Shuffle, epoch));
        idx
    }

    /// The batch of global step `step` (0-based).
    pub fn batch<B: Backend>(&self, step: usize, device: &B::Device) -> Batch<B> {
        let spe = self.steps_per_epoch();
        let epoch = (step / spe) as u64;
        let within = step % spe;
        let order = self.order(epoch);
        let picked = &order[within * self.batch..(within + 1) * self.batch];
        self.gather(picked, device)
    }

    /// Images `idx` as a batch.
    pub fn gather<B: Backend>(&self, idx: &[usize], device: &B::Device) -> Batch<B> {
        let labels = self
            .labels
            .as_ref()
            .map(|l| idx.iter().map(|&i| l[i]).collect());
        Batch {
            images: images_tensor(&self.images, idx, device),
            labels,
        }
    }
}

/// Images `idx` of `set` (u8 NHWC) as an NCHW tensor scaled to [-1, 1].
pub fn images_tensor<B: Backend>(
    set: &ImageSet,
    idx: &[usize],
    device: &B::Device,
) -> Tensor<B, 4> {
    let (h, w, c) = (
        set.height as usize,
        set.width as usize,
        set.channels as usize,
    );
    let plane = h * w;
    let mut v = vec![0f32; idx.len() * c * plane];
    for (bi, &i) in idx.iter().enumerate() {
        let dst = &mut v[bi * c * plane..(bi + 1) * c * plane];
        for (p, px) in set.image(i).chunks_exact(c).enumerate() {
            for (ch, &b) in px.iter().enumerate() {
                dst[ch * plane + p] = b as f32 / 127.5 - 1.0;
            }
        }
    }
    Tensor::from_data(TensorData::new(v, [idx.len(), c, h, w]), device)
}

/// NCHW images in [-1, 1] back to u8 NHWC, as an [`ImageSet`].
pub fn to_image_set<B: Backend>(images: Tensor<B, 4>) -> Result<ImageSet, String> {
    let [n, c, h, w] = images.dims();
    let data = images
        .into_data()
        .convert::<f32>()
        .into_vec::<f32>()
        .map_err(|e| format!("reading generated images: {e:?}"))?;
    let mut set = ImageSet::new(w as u32, h as u32, c as u8);
    let plane = h * w;
    let mut px = vec![0u8; c * plane];
    for i in 0..n {
        let src = &data[i * c * plane..(i + 1) * c * plane];
        for p in 0..plane {
            for ch in 0..c {
                let v = (src[ch * plane + p] + 1.0) * 127.5;
                px[p * c + ch] = v.round().clamp(0.0, 255.0) as u8;
            }
        }
        set.push(&px);
    }
    Ok(set)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normal_has_unit_moments() {
        let v = normal(&mut rng(1, Stream::Latent, 0), 100_000);
        let mean = v.iter().map(|&x| x as f64).sum::<f64>() / v.len() as f64;
        let var = v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / v.len() as f64;
        assert!(mean.abs() < 0.01, "mean {mean}");
        assert!((var - 1.0).abs() < 0.02, "var {var}");
    }

    #[test]
    fn streams_and_steps_differ_but_repeat() {
        let a = normal(&mut rng(1, Stream::Latent, 5), 8);
        let b = normal(&mut rng(1, Stream::Latent, 5), 8);
        let c = normal(&mut rng(1, Stream::Latent, 6), 8);
        let d = normal(&mut rng(1, Stream::Dropout, 5), 8);
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_ne!(a, d);
    }

    #[test]
    fn an_epoch_visits_every_image_once() {
        let mut set = ImageSet::new(2, 2, 1);
        for i in 0..10u8 {
            set.push(&[i; 4]);
        }
        let b = Batcher::new(set, None, 3, 7);
        assert_eq!(b.steps_per_epoch(), 3);
        let mut seen: Vec<usize> = b.order(0)[..9].to_vec();
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), 9);
        assert_ne!(b.order(0), b.order(1));
    }
}
