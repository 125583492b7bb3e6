//! Fréchet distance between Gaussian fits of two feature sets: the math behind FID.
//!
//! FID (Heusel et al. 2017) fits a Gaussian to the features of real and of generated
//! images and reports the Fréchet (2-Wasserstein) distance between the two Gaussians:
//!
//! ```text
//! d² = |μ₁ − μ₂|² + tr Σ₁ + tr Σ₂ − 2 · tr (Σ₁ Σ₂)^½
//! ```
//!
//! [`FeatureStats`] streams feature vectors in batches and keeps only the running mean and
//! co-moment matrix, so memory is O(d²) however many images are scored. [`frechet_distance`]
//! evaluates the formula with a trace term that stays accurate when the covariances are
//! singular (fewer samples than features, dead features), which is where the usual
//! `scipy.linalg.sqrtm` route loses digits or returns complex numbers.
//!
//! This module does not extract features; the evaluate stage feeds it whatever network
//! it uses (Inception-v3 pool features or an in-pipeline classifier).
//!
//! ```
//! use gantry_stages::metrics::frechet::{FeatureStats, frechet_distance};
//!
//! let mut real = FeatureStats::new(2);
//! real.add_batch(&[0.0, 1.0, 1.0, 0.0, 2.0, 2.0], 3)?;
//! let mut fake = FeatureStats::new(2);
//! fake.add_batch(&[5.0, 1.0, 6.0, 0.0, 7.0, 2.0], 3)?;
//! // Same covariance, means 5 apart along the first axis.
//! assert!((frechet_distance(&real, &fake)? - 25.0).abs() < 1e-9);
//! # Ok::<(), gantry_stages::metrics::frechet::FrechetError>(())
//! ```

use nalgebra::{DMatrix, DMatrixView, DMatrixViewMut, DVector};
use rayon::prelude::*;

/// Rows folded into the running statistics per step: bounds the scratch memory of
/// [`FeatureStats::add_batch`] to `CHUNK_ROWS × dim` values whatever the batch size, and is
/// large enough for the co-moment product to run at matrix-multiply speed.
const CHUNK_ROWS: usize = 256;

/// Columns of the co-moment matrix updated by one parallel task; the split only decides
/// who computes an entry, never the order of its sum, so results do not depend on the
/// number of threads.
const COLUMN_BLOCK: usize = 64;

/// Why feature statistics or a Fréchet distance could not be computed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FrechetError {
    /// The flat feature buffer does not hold `count × dim` values.
    #[error("feature batch holds {len} values, but {count} rows of {dim} features need {expected}")]
    BatchShape {
        /// Values in the buffer.
        len: usize,
        /// Rows the caller announced.
        count: usize,
        /// Feature dimension of the statistics.
        dim: usize,
        /// `count × dim`, saturated if it overflows.
        expected: usize,
    },
    /// A feature is NaN or infinite; one bad image would otherwise poison the whole metric.
    #[error(
        "feature vector {row} (counting from the first one fed), feature {feature} is {value}: \
         features must be finite"
    )]
    NonFinite {
        /// Index of the feature vector over everything fed to these statistics so far.
        row: usize,
        /// Index within the vector.
        feature: usize,
        /// The offending value.
        value: f32,
    },
    /// Two statistics with different feature dimensions were combined.
    #[error("feature dimensions differ: {left} vs {right}")]
    DimensionMismatch {
        /// Dimension of the first statistics.
        left: usize,
        /// Dimension of the second statistics.
        right: usize,
    },
    /// A covariance needs at least two samples.
    #[error("a feature set has {count} vector(s); at least 2 are needed to estimate a covariance")]
    TooFewSamples {
        /// Vectors in the smaller set.
        count: usize,
    },
}

/// Running mean and covariance of feature vectors, fed in batches.
///
/// Memory is O(dim²), not O(n·dim). Everything accumulates in f64. Each chunk of rows is
/// centred on its own mean before its outer products are summed, and chunks are combined
/// with the pairwise update of Chan, Golub & LeVeque (1979), so there is no
/// `E[x²] − E[x]²` cancellation even when the features sit far from zero. Two statistics
/// built on different threads combine with [`FeatureStats::merge`].
#[derive(Debug, Clone)]
pub struct FeatureStats {
    dim: usize,
    count: usize,
    mean: DVector<f64>,
    /// Σᵢ (xᵢ − mean)(xᵢ − mean)ᵀ over everything seen so far.
    comoment: DMatrix<f64>,
}

impl FeatureStats {
    /// Empty statistics for feature vectors of length `dim`.
    pub fn new(dim: usize) -> Self {
        Self {
            dim,
            count: 0,
            mean: DVector::zeros(dim),
            comoment: DMatrix::zeros(dim, dim),
        }
    }

    /// Adds `count` feature vectors stored row-major in `features` (`count × dim` values).
    ///
    /// On error nothing is added.
    pub fn add_batch(&mut self, features: &[f32], count: usize) -> Result<(), FrechetError> {
        let expected = count.checked_mul(self.dim);
        if expected != Some(features.len()) {
            return Err(FrechetError::BatchShape {
                len: features.len(),
                count,
                dim: self.dim,
                expected: expected.unwrap_or(usize::MAX),
            });
        }
        // Validate the whole batch first so a failure leaves the statistics untouched.
        if let Some(pos) = features.iter().position(|v| !v.is_finite()) {
            return Err(FrechetError::NonFinite {
                row: self.count + pos / self.dim,
                feature: pos % self.dim,
                value: features[pos],
            });
        }
        if self.dim == 0 {
            self.count += count;
            return Ok(());
        }
        for chunk in features.chunks(CHUNK_ROWS * self.dim) {
            self.add_chunk(chunk);
        }
        Ok(())
    }

    /// Folds one chunk in: its centred outer products go straight into the accumulator,
    /// then the Chan correction for the shift between the chunk mean and the running mean.
    fn add_chunk(&mut self, chunk: &[f32]) {
        let dim = self.dim;
        let rows = chunk.len() / dim;

        let mut chunk_mean = DVector::<f64>::zeros(dim);
        for row in chunk.chunks_exact(dim) {
            for (m, &v) in chunk_mean.iter_mut().zip(row) {
                *m += f64::from(v);
            }
        }
        chunk_mean /= rows as f64;

        // Row-major rows×dim is column-major dim×rows: one sample per column.
        let mut centred = DMatrix::<f64>::zeros(dim, rows);
        for (col, row) in centred
            .as_mut_slice()
            .chunks_exact_mut(dim)
            .zip(chunk.chunks_exact(dim))
        {
            for ((c, &v), m) in col.iter_mut().zip(row).zip(chunk_mean.iter()) {
                *c = f64::from(v) - m;
            }
        }
        // An explicit transpose, not a strided view: nalgebra's small-matrix gemm path
        // walks strided operands past their end.
        let centred_t = centred.transpose();

        self.comoment
            .as_mut_slice()
            .par_chunks_mut(dim * COLUMN_BLOCK)
            .enumerate()
            .for_each(|(block, out)| {
                let first = block * COLUMN_BLOCK;
                let width = out.len() / dim;
                let mut out = DMatrixViewMut::from_slice(out, dim, width);
                out.gemm(1.0, &centred, &centred_t.columns(first, width), 1.0);
            });

        self.absorb_mean(&chunk_mean, rows);
    }

    /// Chan's pairwise update for a part with `other_count` samples and mean `other_mean`
    /// whose own co-moment has already been added to `self.comoment`.
    fn absorb_mean(&mut self, other_mean: &DVector<f64>, other_count: usize) {
        let total = self.count + other_count;
        let delta = other_mean - &self.mean;
        let weight = self.count as f64 * other_count as f64 / total as f64;
        if weight > 0.0 {
            self.comoment.ger(weight, &delta, &delta, 1.0);
        }
        self.mean
            .axpy(other_count as f64 / total as f64, &delta, 1.0);
        self.count = total;
    }

    /// Adds everything `other` has seen, as if its batches had been fed to `self`.
    pub fn merge(&mut self, other: &FeatureStats) -> Result<(), FrechetError> {
        if self.dim != other.dim {
            return Err(FrechetError::DimensionMismatch {
                left: self.dim,
                right: other.dim,
            });
        }
        if other.count == 0 {
            return Ok(());
        }
        self.comoment += &other.comoment;
        self.absorb_mean(&other.mean, other.count);
        Ok(())
    }

    /// Number of feature vectors seen.
    pub fn count(&self) -> usize {
        self.count
    }

    /// Feature dimension.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Mean feature vector (zeros before any vector is added).
    pub fn mean(&self) -> Vec<f64> {
        self.mean.as_slice().to_vec()
    }

    /// Unbiased (n − 1) covariance, as `numpy.cov(x, rowvar=False)`.
    ///
    /// With fewer than two vectors no spread can be estimated and the matrix is all zeros
    /// (numpy would return NaN); [`frechet_distance`] refuses such sets.
    pub fn covariance(&self) -> DMatrix<f64> {
        if self.count < 2 {
            return DMatrix::zeros(self.dim, self.dim);
        }
        let scale = 0.5 / (self.count - 1) as f64;
        // The blocked products need not round (i, j) and (j, i) identically; averaging
        // makes the result exactly symmetric, which the factorisation assumes.
        (&self.comoment + self.comoment.transpose()) * scale
    }
}

/// Fréchet distance between N(μ₁, Σ₁) and N(μ₂, Σ₂) fitted to two feature sets:
/// `|μ₁ − μ₂|² + tr Σ₁ + tr Σ₂ − 2 · tr (Σ₁ Σ₂)^½`.
///
/// # The trace term
///
/// For positive semi-definite Σ₁ = L Lᵀ, the non-zero eigenvalues of Σ₁Σ₂ = L (Lᵀ Σ₂)
/// are those of Lᵀ Σ₂ L (AB and BA share them), a symmetric positive semi-definite
/// matrix. So they are real and non-negative, the principal square root of Σ₁Σ₂ has
/// eigenvalues √λᵢ, and tr (Σ₁Σ₂)^½ = Σᵢ √λᵢ. We compute:
///
/// 1. L by pivoted Cholesky of Σ₁, stopped at its numerical rank r (LAPACK `dpstrf`'s
///    tolerance); with n samples r ≤ n − 1, so the rest works on r×r matrices.
/// 2. M = Lᵀ Σ₂ L (r×r), and its eigenvalues μⱼ by a symmetric eigensolver;
/// 3. tr (Σ₁Σ₂)^½ = Σⱼ √max(μⱼ, 0).
///
/// Every step is a stable symmetric operation and nothing is inverted, so singular
/// covariances (n < dim, dead features) need no special care: the neglected part of Σ₁
/// is rounding noise, and the √ turns noise of relative size ε in M into at most about
/// √ε · √‖M‖ per eigenvalue, far below 10⁻³ of the distance.
///
/// # Agreement with the reference implementations
///
/// pytorch-fid and the TTUR code take `trace(scipy.linalg.sqrtm(Σ₁ @ Σ₂))` (a Schur
/// decomposition of the non-symmetric product), keep the real part when rounding leaves
/// a small imaginary one (they raise if the diagonal's is above 10⁻³), and retry with
/// Σ + 10⁻⁶·I when sqrtm returns NaN or inf. Without the offset, that is the same Σ √λᵢ
/// rounded differently, and the committed references (`stages/tests/reference/fid/`, scipy
/// 1.17 and 1.11) agree with this function to better than 10⁻⁶ relative, 2048-d singular
/// sets included. The offset, taken by scipy < 1.16 when the two sets have different dead
/// features, adds about √(10⁻⁶·σ²) for each direction where one covariance vanishes and
/// the other has variance σ²: 3.6·10⁻⁴ relative in that reference case. We never add it —
/// this route has no failure to fall back from, and the value without it is the one the
/// formula defines. (scipy < 1.16 also leaves imaginary parts from 10 to 10⁷⁹ on singular
/// 256- and 2048-d products, where pytorch-fid raises; this function does not.)
///
/// Swapping the arguments gives the same bits (the set with fewer samples, or else the
/// smaller total variance, is factored). Identical sets may give a rounding-sized
/// negative number: it is reported as computed, not clamped.
pub fn frechet_distance(a: &FeatureStats, b: &FeatureStats) -> Result<f64, FrechetError> {
    if a.dim != b.dim {
        return Err(FrechetError::DimensionMismatch {
            left: a.dim,
            right: b.dim,
        });
    }
    let fewest = a.count.min(b.count);
    if fewest < 2 {
        return Err(FrechetError::TooFewSamples { count: fewest });
    }
    if a.dim == 0 {
        return Ok(0.0);
    }

    let mean_term: f64 = a
        .mean
        .iter()
        .zip(b.mean.iter())
        .map(|(x, y)| (x - y) * (x - y))
        .sum();
    let (first, second) = canonical_order(a, b);
    let s1 = first.covariance();
    let s2 = second.covariance();
    let traces = s1.trace() + s2.trace();
    let cross = trace_sqrt_product(&s1, &s2);
    Ok(mean_term + traces - 2.0 * cross)
}

/// Orders the pair so that the result does not depend on argument order, and so that the
/// covariance of lower rank (fewer samples) is the one factored, which keeps the trace
/// computation's r×r problem small.
fn canonical_order<'s>(
    a: &'s FeatureStats,
    b: &'s FeatureStats,
) -> (&'s FeatureStats, &'s FeatureStats) {
    let key = |s: &FeatureStats| (s.count, s.comoment.trace());
    match key(a).0.cmp(&key(b).0) {
        std::cmp::Ordering::Less => (a, b),
        std::cmp::Ordering::Greater => (b, a),
        std::cmp::Ordering::Equal if key(a).1 <= key(b).1 => (a, b),
        std::cmp::Ordering::Equal => (b, a),
    }
}

/// tr (s1·s2)^½ for symmetric positive semi-definite `s1`, `s2`; see [`frechet_distance`].
fn trace_sqrt_product(s1: &DMatrix<f64>, s2: &DMatrix<f64>) -> f64 {
    let factor = pivoted_cholesky(s1); // [dim, r]
    let rank = factor.ncols();
    if rank == 0 {
        // Σ₁ = 0: the product and its square root vanish.
        return 0.0;
    }
    let factor_t = factor.transpose(); // explicit, for the reason given in `add_chunk`
    let s2_view: DMatrixView<f64> = s2.as_view();
    let s2_factor = par_product(&s2_view, &factor.as_view()); // [dim, r]
    let m = par_product(&factor_t.as_view(), &s2_factor.as_view()); // [r, r] = Lᵀ Σ₂ L
    if rank == 1 {
        return m[(0, 0)].max(0.0).sqrt();
    }
    // Lᵀ Σ₂ L is symmetric up to rounding and the solver reads only its lower triangle.
    // It terminates on any finite input, and every entry here is a finite combination of
    // validated features.
    m.symmetric_eigenvalues()
        .iter()
        .map(|&mu| mu.max(0.0).sqrt())
        .sum()
}

/// Pivoted (semi-definite) Cholesky: L with `s ≈ L Lᵀ`, one column per pivot, stopping
/// when every remaining diagonal entry of the Schur complement is at most
/// dim · ε · max diag(s), LAPACK `dpstrf`'s default tolerance. What is left is rounding
/// noise on the null space of `s`, so the number of columns is its numerical rank.
///
/// Columns are computed left-looking, each from the original column of `s` minus the
/// contributions of the earlier pivots, which keeps the work at O(dim · rank²).
fn pivoted_cholesky(s: &DMatrix<f64>) -> DMatrix<f64> {
    let dim = s.nrows();
    let mut residual: Vec<f64> = s.diagonal().iter().copied().collect();
    let largest = residual.iter().fold(0.0f64, |m, &v| m.max(v));
    let tolerance = dim as f64 * f64::EPSILON * largest;
    let mut pivoted = vec![false; dim];
    let mut columns: Vec<f64> = Vec::new();
    let mut rank = 0;
    while rank < dim {
        let Some((p, diag)) = residual
            .iter()
            .copied()
            .enumerate()
            .filter(|&(i, _)| !pivoted[i])
            .max_by(|a, b| a.1.total_cmp(&b.1))
        else {
            break;
        };
        if diag <= tolerance {
            break;
        }
        let pivot = diag.sqrt();
        let mut col: Vec<f64> = s.column(p).iter().copied().collect();
        let weights: Vec<f64> = (0..rank).map(|j| columns[j * dim + p]).collect();
        par_subtract_combination(&mut col, &columns, &weights);
        pivoted[p] = true;
        for (i, c) in col.iter_mut().enumerate() {
            if pivoted[i] {
                // Earlier pivots are exact zeros of this column in exact arithmetic.
                *c = 0.0;
            } else {
                *c /= pivot;
                residual[i] -= *c * *c;
            }
        }
        col[p] = pivot;
        columns.extend_from_slice(&col);
        rank += 1;
    }
    DMatrix::from_vec(dim, rank, columns)
}

/// `col -= Σⱼ weights[j] · column j of `columns`` (column-major, `col.len()` rows), split
/// by rows across threads; each entry is summed in the same order whatever the split.
fn par_subtract_combination(col: &mut [f64], columns: &[f64], weights: &[f64]) {
    const ROWS: usize = 256;
    let dim = col.len();
    col.par_chunks_mut(ROWS)
        .enumerate()
        .for_each(|(block, part)| {
            let first = block * ROWS;
            for (j, &w) in weights.iter().enumerate() {
                if w != 0.0 {
                    let start = j * dim + first;
                    let source = &columns[start..start + part.len()];
                    for (c, &l) in part.iter_mut().zip(source) {
                        *c -= w * l;
                    }
                }
            }
        });
}

/// `a · b`, output columns computed in parallel blocks.
fn par_product(a: &DMatrixView<f64>, b: &DMatrixView<f64>) -> DMatrix<f64> {
    let (rows, cols) = (a.nrows(), b.ncols());
    let mut out = DMatrix::<f64>::zeros(rows, cols);
    if rows == 0 || cols == 0 {
        return out;
    }
    out.as_mut_slice()
        .par_chunks_mut(rows * COLUMN_BLOCK)
        .enumerate()
        .for_each(|(block, part)| {
            let width = part.len() / rows;
            let mut part = DMatrixViewMut::from_slice(part, rows, width);
            part.gemm(1.0, a, &b.columns(block * COLUMN_BLOCK, width), 0.0);
        });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(dim: usize, rows: &[f32]) -> FeatureStats {
        let mut s = FeatureStats::new(dim);
        s.add_batch(rows, rows.len() / dim).expect("valid batch");
        s
    }

    #[test]
    fn covariance_matches_hand_computation() {
        let s = stats(2, &[1.0, 2.0, 3.0, 6.0, 5.0, 4.0]);
        assert_eq!(s.mean(), vec![3.0, 4.0]);
        let c = s.covariance();
        // Deviations (-2,-2), (0,2), (2,0): sums 8, 4, 8 over n − 1 = 2.
        assert!((c[(0, 0)] - 4.0).abs() < 1e-12);
        assert!((c[(0, 1)] - 2.0).abs() < 1e-12);
        assert!((c[(1, 1)] - 4.0).abs() < 1e-12);
    }

    #[test]
    fn diagonal_covariances_have_closed_form() {
        // N(0, diag(a)) vs N(0, diag(b)): Σ (√a − √b)².
        let a = stats(2, &[2.0, 0.0, -2.0, 0.0, 0.0, 3.0, 0.0, -3.0]);
        let b = stats(2, &[1.0, 0.0, -1.0, 0.0, 0.0, 1.0, 0.0, -1.0]);
        let (va, vb) = (8.0f64 / 3.0, 2.0f64 / 3.0);
        let (wa, wb) = (18.0f64 / 3.0, 2.0f64 / 3.0);
        let expected = (va.sqrt() - vb.sqrt()).powi(2) + (wa.sqrt() - wb.sqrt()).powi(2);
        let got = frechet_distance(&a, &b).expect("valid sets");
        assert!((got - expected).abs() < 1e-12, "{got} vs {expected}");
    }

    #[test]
    fn a_set_without_spread_leaves_only_the_other_trace() {
        let still = stats(3, &[1.0, 2.0, 3.0].repeat(5));
        let moving = stats(
            3,
            &[
                0.0, 0.0, 0.0, 2.0, 1.0, 0.0, 1.0, 3.0, 4.0, 1.0, 0.0, 8.0, 1.0, 1.0, 1.0, 2.0,
                2.0, 2.0,
            ],
        );
        let gap: f64 = still
            .mean()
            .iter()
            .zip(moving.mean())
            .map(|(a, b)| (a - b) * (a - b))
            .sum();
        let expected = gap + moving.covariance().trace();
        for (a, b) in [(&still, &moving), (&moving, &still)] {
            let got = frechet_distance(a, b).expect("valid sets");
            assert!(
                (got - expected).abs() < 1e-12 * expected,
                "{got} vs {expected}"
            );
        }
    }

    #[test]
    fn rank_one_covariances_in_one_dimension() {
        // 1-d: the distance is (μ₁ − μ₂)² + (σ₁ − σ₂)².
        let a = stats(1, &[0.0, 2.0, 4.0]);
        let b = stats(1, &[10.0, 11.0]);
        let expected = (2.0f64 - 10.5).powi(2) + (2.0f64 - 0.5f64.sqrt()).powi(2);
        let got = frechet_distance(&a, &b).expect("valid sets");
        assert!(
            (got - expected).abs() < 1e-12 * expected,
            "{got} vs {expected}"
        );
    }

    #[test]
    fn rejects_bad_input() {
        let mut s = FeatureStats::new(3);
        assert!(matches!(
            s.add_batch(&[0.0; 5], 2),
            Err(FrechetError::BatchShape { expected: 6, .. })
        ));
        match s.add_batch(&[0.0, 1.0, 2.0, 3.0, f32::NAN, 5.0], 2) {
            Err(FrechetError::NonFinite {
                row: 1,
                feature: 1,
                value,
            }) => assert!(value.is_nan()),
            other => panic!("expected NonFinite at row 1, feature 1, got {other:?}"),
        }
        assert_eq!(s.count(), 0, "a rejected batch adds nothing");
        let one = stats(3, &[1.0, 2.0, 3.0]);
        assert_eq!(
            frechet_distance(&one, &one),
            Err(FrechetError::TooFewSamples { count: 1 })
        );
        let other = FeatureStats::new(4);
        assert!(matches!(
            frechet_distance(&one, &other),
            Err(FrechetError::DimensionMismatch { left: 3, right: 4 })
        ));
        assert!(s.clone().merge(&other).is_err());
    }
}
