//! `sluice._native`: the PyO3 bindings the Python package `sluice` is built on.
//!
//! This module is deliberately thin. The seed-compatible API (argument checking, pandas /
//! Polars conversion, `StreamingStats`, the subclassable `BackpressureController`) lives in
//! Python (`python/sluice/`); this crate only runs the Rust engine for it:
//!
//! ```text
//!  Python caller ──NativePipeline.run_table / run_files──► sluice engine (reader + workers)
//!       ▲                                                        │ each chunk, on a worker:
//!       │                                                        ▼ attach, call the Python
//!  NativeRun.__next__ ◄── bounded channel ◄── pump thread    adapter (or ChunkSql, no GIL)
//!  (waits with the GIL      (drives the engine's ChunkStream,     │
//!   released, checks         writes part files; never holds      │ a GIL-bound function:
//!   signals every 50 ms)     the GIL)                            │ the chunk goes to the
//!       ▲──────────────────── lane (calls run by the caller) ◄───┘ caller instead
//! ```
//!
//! What it is not: it does no pandas or Polars work itself (that is Python's, in
//! `sluice._convert`), and it never blocks while holding the GIL: waiting, reading,
//! decoding, SQL and writing all run with the GIL released, and Rust only attaches to call
//! the user's function or a custom controller's overrides.
//!
//! Files: [`pipeline`] (the engine pipeline object), [`run`] (one run as a Python iterator),
//! [`function`] (the user's function as an engine `ChunkFn`), [`gate`] (how many calls run
//! at once), [`lane`] (calls handed to the caller's thread), [`controller`] (the
//! backpressure controller and the hooks that call a Python subclass), [`arrow_io`]
//! (pyarrow in and out, zero-copy), [`errors`] (engine errors as Python exceptions).

mod arrow_io;
mod controller;
mod errors;
mod function;
mod gate;
mod lane;
mod output;
mod pipeline;
mod push;
mod run;

use pyo3::prelude::*;

/// The extension module `sluice._native`.
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add_class::<pipeline::NativePipeline>()?;
    m.add_class::<run::NativeRun>()?;
    m.add_class::<push::NativePushSender>()?;
    m.add_class::<controller::NativeController>()?;
    m.add_class::<output::OutputLock>()?;
    m.add_function(wrap_pyfunction!(output::prepare_output, m)?)?;
    m.add("SluiceError", py.get_type::<errors::SluiceError>())?;
    m.add("ChunkError", py.get_type::<errors::ChunkError>())?;
    m.add("StoppedError", py.get_type::<errors::StoppedError>())?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
