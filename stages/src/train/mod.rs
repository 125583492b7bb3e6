//! Training machinery shared by every GAN stage: backends, seeded batches and latents,
//! optimizers, weight initialisation, checkpoints that resume and extend, the loss log,
//! plots, and the loop that ties them together.

pub mod adam;
pub mod backend;
pub mod checkpoint;
pub mod conv;
pub mod data;
pub mod driver;
pub mod init;
pub mod log;
pub mod loss;
pub mod nets;
pub mod norm;
pub mod optim;
pub mod plot;
pub mod pointwise;

pub use driver::{Gan, Outcome, Schedule};
