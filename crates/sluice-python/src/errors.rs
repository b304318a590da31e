//! Engine errors as Python exceptions, and the store that lets a Python exception raised by
//! the user's function on a worker thread be raised again, unchanged, in the caller.
//!
//! The engine reports a failed chunk as text (`SluiceError::ChunkFailed { cause, .. }`).
//! Text would lose the exception's type and traceback, so under the `fail` policy the
//! worker keeps the `PyErr` in an [`ErrorStore`] and puts a token (`[python exception #N]`)
//! in the cause; the consumer finds the token, takes the original exception back, adds a
//! note naming the chunk and its input rows, and raises it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use pyo3::exceptions::{
    PyBlockingIOError, PyFileExistsError, PyFileNotFoundError, PyOSError, PyRuntimeError,
    PyValueError,
};
use pyo3::prelude::*;
use sluice::SluiceError as EngineError;
use sluice_job::JobError;

pyo3::create_exception!(
    sluice,
    SluiceError,
    PyRuntimeError,
    "An error of the sluice engine (bad input data, a failed write, a failed chunk)."
);
pyo3::create_exception!(
    sluice,
    ChunkError,
    SluiceError,
    "A chunk failed in the engine (per-chunk SQL, or a panic), under on_error='fail'."
);

pyo3::create_exception!(
    sluice,
    StoppedError,
    SluiceError,
    "The run was stopped (stop_processing() or cleanup()) before its input ended: the chunks \
     handed out so far are all there is, and the output folder's manifest says `stopped`."
);

const TOKEN_PREFIX: &str = "[python exception #";

/// Python exceptions of failed chunks, waiting for the consumer to raise them.
#[derive(Default)]
pub struct ErrorStore {
    next: AtomicU64,
    errors: Mutex<HashMap<u64, PyErr>>,
}

impl ErrorStore {
    /// Keeps `err` and returns the text to give the engine: the exception's one-line
    /// summary followed by its token.
    pub fn keep(&self, summary: &str, err: PyErr) -> String {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.lock().insert(id, err);
        format!("{summary} {TOKEN_PREFIX}{id}]")
    }

    /// The exception whose token is in `cause`, if it is still here.
    pub fn take(&self, cause: &str) -> Option<PyErr> {
        let start = cause.rfind(TOKEN_PREFIX)? + TOKEN_PREFIX.len();
        let end = start + cause[start..].find(']')?;
        let id: u64 = cause[start..end].parse().ok()?;
        self.lock().remove(&id)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, PyErr>> {
        self.errors.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Removes the token from a cause, for messages shown to a person.
pub fn strip_token(cause: &str) -> &str {
    match cause.rfind(TOKEN_PREFIX) {
        Some(i) => cause[..i].trim_end(),
        None => cause,
    }
}

/// Adds a note (Python 3.11+ `add_note`) to an exception; on older Pythons, does nothing.
pub fn add_note(py: Python<'_>, err: &PyErr, note: &str) {
    let value = err.value(py);
    if value.hasattr("add_note").unwrap_or(false) {
        let _ = value.call_method1("add_note", (note,));
    }
}

/// An engine error as the Python exception a caller would expect: bad settings and bad
/// input are `ValueError`, missing files `FileNotFoundError`, I/O `OSError`, a failed
/// chunk `ChunkError`, anything else `SluiceError`.
pub fn to_py(err: EngineError) -> PyErr {
    let message = err.to_string();
    match err {
        EngineError::InvalidSetting { .. }
        | EngineError::BadInput { .. }
        | EngineError::SchemaMismatch { .. }
        | EngineError::UnknownFormat { .. }
        | EngineError::Arrow { .. } => PyValueError::new_err(message),
        EngineError::NoInput { .. } => PyFileNotFoundError::new_err(message),
        EngineError::Open { ref source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
            PyFileNotFoundError::new_err(message)
        }
        EngineError::Open { .. } | EngineError::Read { .. } | EngineError::Write { .. } => {
            PyOSError::new_err(message)
        }
        EngineError::ChunkFailed {
            chunk,
            first_row,
            end_row,
            cause,
        } => ChunkError::new_err(format!(
            "chunk {chunk} (input rows {first_row}..{end_row}) failed: {}",
            strip_token(&cause)
        )),
        EngineError::OutputExists { .. } => {
            PyFileExistsError::new_err(format!("{message} (pass overwrite=True to replace it)"))
        }
        EngineError::OutputLocked { .. } => PyBlockingIOError::new_err(message),
        EngineError::Stopped => StoppedError::new_err(message),
        EngineError::Source { .. } => SluiceError::new_err(message),
    }
}

/// A job-layer error as the Python exception a caller would expect: earlier output that
/// nothing says to replace is `FileExistsError`, I/O `OSError`, a stop `StoppedError`, an
/// engine error as [`to_py`] maps it, anything else (bad SQL, a resume that does not fit,
/// a changed input) `ValueError`.
pub fn job_to_py(err: JobError) -> PyErr {
    match err {
        JobError::OutputExists { dir, what } => PyFileExistsError::new_err(format!(
            "{} already holds the output of an earlier run ({what}) (pass resume=True to \
             continue it or overwrite=True to replace it)",
            dir.display()
        )),
        JobError::Io { .. } => PyOSError::new_err(err.one_line()),
        JobError::Interrupted => StoppedError::new_err(err.one_line()),
        JobError::Setup { source, .. } if !matches!(source, EngineError::Stopped) => to_py(source),
        other => PyValueError::new_err(other.one_line()),
    }
}
