//! The job layer: one run of sluice described as data (input, transform, engine settings,
//! output) and run the same way by every face: the `sluice` command, the Python package,
//! broker streams and cluster tasks. The faces parse their own arguments into these types
//! and adapt the result (exit codes, exceptions); they build no run of their own.
//!
//! - [`settings`]: the engine's settings, from which every face builds its pipeline;
//! - [`transform`]: a copy, a function or SQL, and the one SQL-to-function adapter;
//! - [`two_pass`] and [`parsed_copy`]: whole-input windows in two passes;
//! - [`output_state`]: what an output folder holds and what a run keeps or removes;
//! - [`observer`]: what a running job tells its face.

pub mod error;
pub mod observer;
pub mod output_state;
pub mod parsed_copy;
pub mod settings;
pub mod transform;
pub mod two_pass;

pub use error::{JobError, Result};
pub use observer::{Observer, PassWatch, Quiet};
pub use output_state::{Plan, RunRecord};
pub use settings::EngineSettings;
pub use transform::{ChunkFunction, Transform};
pub use two_pass::{GlobalRecord, GlobalRun, Pass1, PassStats};
