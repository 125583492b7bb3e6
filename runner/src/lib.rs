//! gantry's runner: pipeline files (YAML) → checked DAG → stage keys → execution.
//!
//! Planning (what would run and why: [`plan`]) is apart from execution ([`exec`]), and
//! both from reporting: the executor emits [`exec::Event`]s that the CLI renders as
//! progress bars, log lines or JSON.
//!
//! The runner knows nothing about GANs: stage kinds come from `gantry-stages`.

pub mod error;
pub mod exec;
pub mod logging;
pub mod plan;
pub mod schema;
pub mod spec;
pub mod yaml;

pub use error::SpecError;
pub use gantry_stages::REPORT_FILE;
pub use spec::{Pipeline, load};
