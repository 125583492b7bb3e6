//! Inception Score (Salimans et al. 2016) over a table of class probabilities.
//!
//! IS = exp(E_x[KL(p(y|x) ‖ p(y))]): high when each image is classified confidently
//! (low-entropy p(y|x)) and the images cover many classes (high-entropy marginal p(y)).
//! It ranges from 1 (every image gets the same distribution) to the number of classes
//! (each image is certain of one class, classes used equally).
//!
//! The classifier is pluggable: the evaluate stage runs whichever network the pipeline
//! names (Inception-v3 from a local weights file, or a small CNN trained in the pipeline)
//! and passes its softmax outputs here. This module is only the exact arithmetic.
//!
//! ```
//! use gantry_stages::metrics::inception_score::inception_score;
//!
//! // Four confident images, two per class, scored in one split: IS = 2.
//! let probs = [1.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0];
//! let is = inception_score(&probs, 4, 2, 1)?;
//! assert!((is.mean - 2.0).abs() < 1e-12);
//! assert_eq!(is.std, 0.0);
//! # Ok::<(), gantry_stages::metrics::inception_score::IsError>(())
//! ```

/// How far a row's sum may stray from 1: softmax outputs stored as f32 over a thousand
/// classes drift by ~1e-5, while anything beyond 1e-3 is not a probability table (logits,
/// unnormalised scores, a transposed table).
const ROW_SUM_TOLERANCE: f64 = 1e-3;

/// Inception Score over `splits` splits: the mean and population standard deviation of
/// the per-split scores, as reported in papers ("8.09 ± 0.07").
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct InceptionScore {
    /// Mean of the per-split scores.
    pub mean: f64,
    /// Population standard deviation (`numpy.std` default, ddof = 0) of the per-split scores.
    pub std: f64,
    /// Number of splits the score was averaged over.
    pub splits: usize,
}

/// Why an Inception Score could not be computed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum IsError {
    /// The flat table does not hold `n × classes` values.
    #[error(
        "probability table holds {len} values, but {n} rows of {classes} classes need {expected}"
    )]
    Shape {
        /// Values in the buffer.
        len: usize,
        /// Rows the caller announced.
        n: usize,
        /// Classes the caller announced.
        classes: usize,
        /// `n × classes`, saturated if it overflows.
        expected: usize,
    },
    /// No classes: a score over zero classes has no meaning.
    #[error("probability table has no classes")]
    NoClasses,
    /// Every split needs at least one row.
    #[error("cannot cut {n} rows into {splits} non-empty splits (need 1 ≤ splits ≤ rows)")]
    Splits {
        /// Splits asked for.
        splits: usize,
        /// Rows available.
        n: usize,
    },
    /// A probability is NaN, infinite or negative.
    #[error("row {row}, class {class}: probability {value} is not a finite non-negative number")]
    InvalidProbability {
        /// Row (image) index.
        row: usize,
        /// Class index.
        class: usize,
        /// The offending value.
        value: f32,
    },
    /// A row does not sum to 1, so it is not a distribution (logits passed by mistake?).
    #[error(
        "row {row} sums to {sum}, not 1 (tolerance {ROW_SUM_TOLERANCE}): expected softmax probabilities"
    )]
    RowSum {
        /// Row (image) index.
        row: usize,
        /// Its sum.
        sum: f64,
    },
}

/// Inception Score of `probs` (row-major `n × classes`, each row p(y|x) for one image).
///
/// As in the original code (Salimans et al.), split k is rows
/// `[k·n/splits, (k+1)·n/splits)`, its marginal p(y) is the mean of its rows, its score is
/// `exp(mean_i KL(p(y|x_i) ‖ p(y)))`, and the result is the mean and population standard
/// deviation of the split scores. Terms with p(y|x) = 0 contribute 0 (0·log 0 = 0), where
/// the original would produce NaN.
///
/// All arithmetic is f64 and every sum runs in row, then class, order, so the result is
/// the formula evaluated once with ordinary rounding: it matches a float64 evaluation of
/// the same formula to within a few ulps (bit for bit when that evaluation sums in the same
/// order).
pub fn inception_score(
    probs: &[f32],
    n: usize,
    classes: usize,
    splits: usize,
) -> Result<InceptionScore, IsError> {
    let expected = n.checked_mul(classes);
    if expected != Some(probs.len()) {
        return Err(IsError::Shape {
            len: probs.len(),
            n,
            classes,
            expected: expected.unwrap_or(usize::MAX),
        });
    }
    if classes == 0 {
        return Err(IsError::NoClasses);
    }
    if splits == 0 || splits > n {
        return Err(IsError::Splits { splits, n });
    }
    validate(probs, classes)?;

    let scores: Vec<f64> = (0..splits)
        .map(|k| {
            // u128 keeps k·n exact for any table that fits in memory.
            let lo = (k as u128 * n as u128 / splits as u128) as usize;
            let hi = ((k as u128 + 1) * n as u128 / splits as u128) as usize;
            split_score(&probs[lo * classes..hi * classes], classes)
        })
        .collect();

    let count = splits as f64;
    let mean = scores.iter().sum::<f64>() / count;
    let variance = scores.iter().map(|s| (s - mean) * (s - mean)).sum::<f64>() / count;
    Ok(InceptionScore {
        mean,
        std: variance.sqrt(),
        splits,
    })
}

fn validate(probs: &[f32], classes: usize) -> Result<(), IsError> {
    for (row, values) in probs.chunks_exact(classes).enumerate() {
        let mut sum = 0.0f64;
        for (class, &value) in values.iter().enumerate() {
            if !value.is_finite() || value < 0.0 {
                return Err(IsError::InvalidProbability { row, class, value });
            }
            sum += f64::from(value);
        }
        if (sum - 1.0).abs() > ROW_SUM_TOLERANCE {
            return Err(IsError::RowSum { row, sum });
        }
    }
    Ok(())
}

/// exp(mean KL(p(y|x) ‖ p(y))) for one split (a non-empty, validated slab of rows).
fn split_score(part: &[f32], classes: usize) -> f64 {
    let rows = part.len() / classes;
    let mut marginal = vec![0.0f64; classes];
    for row in part.chunks_exact(classes) {
        for (m, &p) in marginal.iter_mut().zip(row) {
            *m += f64::from(p);
        }
    }
    // A class with zero marginal has p = 0 in every row of the split, so its log is
    // never used; -inf is harmless.
    let log_marginal: Vec<f64> = marginal.iter().map(|m| (m / rows as f64).ln()).collect();

    let mut kl_sum = 0.0f64;
    for row in part.chunks_exact(classes) {
        let mut kl = 0.0f64;
        for (&p, &log_m) in row.iter().zip(&log_marginal) {
            if p > 0.0 {
                let p = f64::from(p);
                kl += p * (p.ln() - log_m);
            }
        }
        kl_sum += kl;
    }
    (kl_sum / rows as f64).exp()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_boundaries_follow_the_original() {
        // 5 rows in 2 splits: rows [0, 2) and [2, 5). Split 0 is one class (IS 1), split 1
        // is confident over two classes with marginal (1/3, 2/3).
        let probs = [1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 1.0, 0.0, 1.0];
        let is = inception_score(&probs, 5, 2, 2).expect("valid table");
        let second = ((1.0 / 3.0) * 3.0f64.ln() + (2.0 / 3.0) * 1.5f64.ln()).exp();
        assert!((is.mean - (1.0 + second) / 2.0).abs() < 1e-12);
        assert!((is.std - (second - 1.0) / 2.0).abs() < 1e-12);
    }

    #[test]
    fn rejects_bad_shapes_and_splits() {
        assert!(matches!(
            inception_score(&[0.5; 5], 3, 2, 1),
            Err(IsError::Shape { expected: 6, .. })
        ));
        assert_eq!(inception_score(&[], 0, 0, 1), Err(IsError::NoClasses));
        assert_eq!(
            inception_score(&[1.0, 1.0], 2, 1, 3),
            Err(IsError::Splits { splits: 3, n: 2 })
        );
        assert_eq!(
            inception_score(&[1.0, 1.0], 2, 1, 0),
            Err(IsError::Splits { splits: 0, n: 2 })
        );
    }
}
