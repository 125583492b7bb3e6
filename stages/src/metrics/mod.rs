//! Image-set metrics, each checked against a trusted reference implementation.
//!
//! - [`swd`]: sliced Wasserstein distance over Laplacian-pyramid patches (Karras et al.
//!   2018, Appendix D).
//! - [`ssim`]: SSIM and MS-SSIM (Wang, Simoncelli, Bovik 2003), paired and the ProGAN
//!   diversity mode.
//! - [`frechet`]: Fréchet distance between Gaussian fits of two feature sets (FID).
//! - [`inception`]: Inception-v3 (torchvision's or pytorch-fid's) from a local weights
//!   file, the feature extractor of the Inception Score and FID.
//! - [`inception_score`]: exp(E[KL(p(y|x) ‖ p(y))]) over splits.

pub mod frechet;
pub mod inception;
pub mod inception_score;
pub mod ssim;
pub mod swd;
