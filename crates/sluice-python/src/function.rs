//! The user's Python function as the engine's per-chunk function.
//!
//! A worker thread attaches to the interpreter only for the call (or, once the gate has
//! found the function GIL-bound, hands the chunk to the caller's thread: `lane.rs`). The
//! call hands the chunk to the Python adapter (`sluice._convert`) as a zero-copy `pyarrow.RecordBatch`; the adapter
//! converts it to the chunk format (pandas, Polars, Arrow), calls the user's function,
//! checks and converts the result, and returns `(original_result_or_None, arrow_result,
//! held_bytes)`. The Arrow result goes back into the engine (memory accounting, part files);
//! the original object is kept in the [`Stash`] so the caller gets back exactly what the
//! function returned, not a second conversion of it. When nothing needs Arrow (no output
//! files), the adapter skips the conversion (`arrow_result` is None) and the engine carries a
//! placeholder of the same rows that weighs `held_bytes`.
//!
//! A Python exception becomes the engine's error text; under `on_error='fail'` the
//! exception itself is kept in the [`ErrorStore`] to be raised in the caller unchanged.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use arrow::array::{ArrayRef, NullArray};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use sluice::BoxError;

use crate::arrow_io::{batch_to_pyarrow, import_batch};
use crate::errors::ErrorStore;
use crate::gate::{CallCost, CallGate};
use crate::lane::CallerLane;

/// Identifies an output batch while it travels through the engine: the address of its
/// first column (an `Arc` the engine never rebuilds) and its row count.
type StashKey = (usize, usize);

/// The objects the user's function returned, by the Arrow batch made from each.
#[derive(Default)]
pub struct Stash {
    objects: Mutex<HashMap<StashKey, Py<PyAny>>>,
}

impl Stash {
    fn key(batch: &RecordBatch) -> Option<StashKey> {
        if batch.num_columns() == 0 {
            return None;
        }
        let column = Arc::as_ptr(batch.column(0)) as *const () as usize;
        Some((column, batch.num_rows()))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<StashKey, Py<PyAny>>> {
        self.objects.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn put(&self, batch: &RecordBatch, object: Py<PyAny>) {
        if let Some(key) = Self::key(batch) {
            self.lock().insert(key, object);
        }
    }

    /// The object the function returned for `batch`, if it was kept.
    pub fn take(&self, batch: &RecordBatch) -> Option<Py<PyAny>> {
        let key = Self::key(batch)?;
        self.lock().remove(&key)
    }
}

/// A Python adapter callable run on every chunk by the engine's workers.
pub struct PyFunction {
    adapter: Py<PyAny>,
    stash: Arc<Stash>,
    errors: Arc<ErrorStore>,
    /// Keep exceptions to raise them in the caller (the `fail` policy).
    keep_errors: bool,
    /// How many workers may call at once (see `gate.rs`); none: no limit.
    gate: Option<CallGate>,
    /// Where calls go to the caller's thread once the gate settles on one at a time.
    lane: Option<Arc<CallerLane>>,
}

impl PyFunction {
    pub fn new(
        adapter: Py<PyAny>,
        stash: Arc<Stash>,
        errors: Arc<ErrorStore>,
        keep_errors: bool,
    ) -> Self {
        PyFunction {
            adapter,
            stash,
            errors,
            keep_errors,
            gate: None,
            lane: None,
        }
    }

    pub fn with_gate(mut self, gate: CallGate) -> Self {
        self.gate = Some(gate);
        self
    }

    /// Lets calls run on the caller's thread when the gate finds them one-at-a-time work.
    pub fn with_lane(mut self, lane: Arc<CallerLane>) -> Self {
        self.lane = Some(lane);
        self
    }

    /// Runs the adapter on one chunk (attaching to the interpreter for the call only, and
    /// waiting, without the GIL, for the gate to let the call in).
    pub fn call(&self, batch: RecordBatch) -> Result<RecordBatch, BoxError> {
        let rows = batch.num_rows();
        let batch = match (&self.gate, &self.lane) {
            (Some(gate), Some(lane)) if gate.one_at_a_time() => {
                let probe = gate.wants_gil_probe().then_some(|| probe_gil(gate));
                match lane.call(batch, || gate.one_at_a_time(), probe) {
                    Ok(result) => return result,
                    // No caller waiting: run it here, one at a time.
                    Err(batch) => batch,
                }
            }
            _ => batch,
        };
        let call = || {
            Python::attach(|py| {
                self.call_attached(py, batch)
                    .map_err(|err| BoxError::from(self.describe(py, err)))
            })
        };
        match &self.gate {
            Some(gate) => gate.run(rows, call),
            None => call(),
        }
    }

    /// Runs the adapter on one chunk on the current thread, which holds the GIL (the
    /// caller's, serving the lane), taking a place in the gate like a worker's call. A
    /// failure is the Python exception itself: the caller must see a KeyboardInterrupt
    /// raised inside the function; [`Self::chunk_error`] makes any other into the engine's
    /// error.
    pub fn call_here(&self, py: Python<'_>, batch: RecordBatch) -> PyResult<RecordBatch> {
        let Some(gate) = &self.gate else {
            return self.call_attached(py, batch);
        };
        let rows = batch.num_rows();
        // A worker that took its chunk back may hold the one place: wait without the GIL.
        let place = py.detach(|| gate.enter());
        let (result, cost) = CallCost::measure(|| self.call_attached(py, batch));
        place.leave(rows, cost);
        result
    }

    /// The engine's error for an exception the function raised on a chunk.
    pub fn chunk_error(&self, py: Python<'_>, err: PyErr) -> BoxError {
        BoxError::from(self.describe(py, err))
    }

    fn call_attached(&self, py: Python<'_>, batch: RecordBatch) -> PyResult<RecordBatch> {
        let chunk = batch_to_pyarrow(py, &batch)?;
        drop(batch);
        let returned = self.adapter.bind(py).call1((chunk,))?;
        let (original, arrow, held_bytes): (Bound<'_, PyAny>, Bound<'_, PyAny>, u64) =
            returned.extract()?;
        let result = if arrow.is_none() {
            held_placeholder(original.len()?, held_bytes)?
        } else {
            import_batch(&arrow)?
        };
        if !original.is_none() {
            self.stash.put(&result, original.unbind());
        }
        Ok(result)
    }

    /// The engine's text for a failed call: the exception's summary and a token to find the
    /// exception again (`fail`), or the whole traceback (for logs and dead-letter files).
    fn describe(&self, py: Python<'_>, err: PyErr) -> String {
        if self.keep_errors {
            let summary = format_exception_only(py, &err);
            self.errors.keep(&summary, err)
        } else {
            format_traceback(py, &err).unwrap_or_else(|| format_exception_only(py, &err))
        }
    }
}

/// Whether the GIL is free now (a call holds it elsewhere, or not): taking it at once says
/// free; waiting for it means a thread held it, until it let go (pandas does, for numpy's
/// inner loops, every few hundred µs) or the interpreter's switch interval. Measured here:
/// a free GIL is taken in 3-30 µs; during the seed's pandas function, mostly 50-1200 µs.
fn probe_gil(gate: &CallGate) {
    const AT_ONCE: std::time::Duration = std::time::Duration::from_micros(30);
    let start = std::time::Instant::now();
    // Attaching can panic only while the interpreter shuts down: then no answer.
    if std::panic::catch_unwind(|| Python::attach(|_| ())).is_ok() {
        gate.record_gil_probe(start.elapsed() < AT_ONCE);
    }
}

/// The batch that stands in the engine for a result kept only as the Python object: `rows`
/// rows of a null column (no buffers), weighing `held_bytes` for the memory budget.
fn held_placeholder(rows: usize, held_bytes: u64) -> PyResult<RecordBatch> {
    let metadata = HashMap::from([(
        sluice::HELD_BYTES_METADATA_KEY.to_string(),
        held_bytes.to_string(),
    )]);
    let schema = Schema::new_with_metadata(
        vec![Field::new("__sluice_held__", DataType::Null, true)],
        metadata,
    );
    let column: ArrayRef = Arc::new(NullArray::new(rows));
    RecordBatch::try_new(Arc::new(schema), vec![column])
        .map_err(|e| PyValueError::new_err(format!("cannot stand in for the result: {e}")))
}

/// `"TypeName: message"`.
fn format_exception_only(py: Python<'_>, err: &PyErr) -> String {
    let type_name = err
        .get_type(py)
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "Exception".to_string());
    let message = err
        .value(py)
        .str()
        .map(|s| s.to_string())
        .unwrap_or_default();
    if message.is_empty() {
        type_name
    } else {
        format!("{type_name}: {message}")
    }
}

/// The exception with its traceback, as Python prints it.
fn format_traceback(py: Python<'_>, err: &PyErr) -> Option<String> {
    let traceback = py.import("traceback").ok()?;
    let lines = traceback
        .call_method1("format_exception", (err.value(py),))
        .ok()?;
    let text: Vec<String> = lines.extract().ok()?;
    Some(text.concat().trim_end().to_string())
}
