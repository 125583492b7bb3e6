//! Losses and accuracy shared by the training stages.

use burn::tensor::activation::{log_softmax, softplus};
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor};

/// BCE with logits against all-ones (`real`) or all-zeros, averaged.
pub fn bce_logits<B: Backend>(logits: Tensor<B, 1>, real: bool) -> Tensor<B, 1> {
    // -log σ(x) = softplus(-x); -log(1 - σ(x)) = softplus(x).
    let x = if real { logits.neg() } else { logits };
    softplus(x, 1.0).mean()
}

/// Mean cross-entropy of class logits [N, K] against labels [N].
pub fn cross_entropy<B: Backend>(logits: Tensor<B, 2>, labels: Tensor<B, 1, Int>) -> Tensor<B, 1> {
    let n = labels.dims()[0];
    log_softmax(logits, 1)
        .gather(1, labels.reshape([n, 1]))
        .mean()
        .neg()
}

/// The index of the largest value (the first one on ties).
pub fn argmax(row: &[f32]) -> usize {
    row.iter()
        .enumerate()
        .fold((0, f32::NEG_INFINITY), |(bi, bv), (i, &v)| {
            if v > bv { (i, v) } else { (bi, bv) }
        })
        .0
}

/// How many rows of `scores` ([N·K], row-major) have their largest value at the label.
pub fn hits(scores: &[f32], classes: usize, labels: &[u32]) -> usize {
    scores
        .chunks(classes.max(1))
        .zip(labels)
        .filter(|(row, l)| argmax(row) == **l as usize)
        .count()
}

/// [`hits`] of a logits tensor.
pub fn tensor_hits<B: Backend>(logits: Tensor<B, 2>, labels: &[u32]) -> usize {
    let k = logits.dims()[1];
    let v: Vec<f32> = logits
        .into_data()
        .convert::<f32>()
        .into_vec()
        .unwrap_or_default();
    hits(&v, k, labels)
}
