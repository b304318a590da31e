//! `NativePipeline`: the engine's `StreamingDataPipeline` for Python. It checks nothing the
//! Python layer already checked except what only the engine knows (the settings' ranges,
//! the error policy, the SQL against the input's schema), starts runs over in-memory Arrow
//! data or files, and gives statistics as JSON (the Python side builds the dataclass).
//!
//! Every call that may block or do I/O (opening files, planning SQL, creating the output
//! folder, waiting for runs to stop) releases the GIL.

use std::str::FromStr;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use arrow::record_batch::RecordBatch;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use sluice::source::{push_channel, MemorySource, PushSender};
use sluice::{
    BoxError, Deliveries, ErrorPolicy, FileFormat, FilesSource, OutputFormat, OutputOptions,
    Source, StreamingDataPipeline,
};
use sluice_sql::{ChunkSql, GlobalSql, Windows};

use crate::arrow_io::import_stream;
use crate::controller::{HookFlags, NativeController, PyHooks};
use crate::errors::{self, ErrorStore};
use crate::function::{PyFunction, Stash};
use crate::gate::CallGate;
use crate::global;
use crate::lane::CallerLane;
use crate::run::{NativeRun, RunShared};

type ChunkFn = Arc<dyn Fn(RecordBatch) -> Result<RecordBatch, BoxError> + Send + Sync>;

/// The engine pipeline behind `sluice.StreamingDataPipeline`.
#[pyclass(frozen, module = "sluice._native")]
pub struct NativePipeline {
    engine: Arc<StreamingDataPipeline>,
    keep_errors: bool,
    /// The Python controller's native half, when one was given (attached to the engine).
    controller: Option<Py<NativeController>>,
    runs: Mutex<Vec<Weak<RunShared>>>,
}

impl NativePipeline {
    #[allow(clippy::too_many_arguments)]
    fn start(
        &self,
        py: Python<'_>,
        source: Box<dyn Source>,
        function: Option<Py<PyAny>>,
        sql: Option<String>,
        output: Option<OutputOptions>,
        deliveries: Option<Deliveries>,
        pass2: Option<ChunkFn>,
    ) -> PyResult<NativeRun> {
        let errors = Arc::new(ErrorStore::default());
        let stash = Arc::new(Stash::default());
        let mut lane = None;
        let chunk_fn: ChunkFn = match (function, sql, pass2) {
            // sql_windows="global": the query already planned with pass 1's values.
            (None, Some(_), Some(planned)) => planned,
            (Some(_), Some(_), _) => {
                return Err(PyValueError::new_err(
                    "give either processing_function or sql, not both",
                ))
            }
            (Some(adapter), None, _) => {
                let workers = self.engine.config().effective_workers();
                let caller_lane = Arc::new(CallerLane::default());
                let f = PyFunction::new(adapter, stash.clone(), errors.clone(), self.keep_errors)
                    .with_gate(CallGate::new(workers))
                    .with_lane(caller_lane.clone());
                let f = Arc::new(f);
                lane = Some((caller_lane, f.clone()));
                Arc::new(move |batch: RecordBatch| f.call(batch))
            }
            (None, Some(sql), None) => {
                let schema = source.schema();
                let planned = py
                    .detach(|| ChunkSql::new(&sql, schema))
                    .map_err(|e| PyValueError::new_err(e.to_string()))?;
                Arc::new(move |batch: RecordBatch| planned.apply(&batch).map_err(BoxError::from))
            }
            (None, None, _) => Arc::new(|batch: RecordBatch| Ok(batch)),
        };
        if let Some(controller) = &self.controller {
            controller.get().run_started();
        }
        let engine = self.engine.clone();
        let stream = py
            .detach(|| engine.start_boxed(source, chunk_fn, output))
            .map_err(errors::to_py)?;
        let run = NativeRun::spawn(stream, self.engine.clone(), errors, stash, lane, deliveries)?;
        let mut runs = self.runs.lock().unwrap_or_else(|p| p.into_inner());
        runs.retain(|r| r.strong_count() > 0);
        runs.push(Arc::downgrade(&run.shared()));
        Ok(run)
    }
}

fn output_options(
    path: Option<String>,
    format: &str,
    rows_per_part: Option<u64>,
    overwrite: bool,
) -> PyResult<Option<OutputOptions>> {
    let Some(path) = path else {
        return Ok(None);
    };
    let format = OutputFormat::from_name(format).map_err(errors::to_py)?;
    let mut options = OutputOptions::new(path).format(format).overwrite(overwrite);
    if let Some(rows) = rows_per_part {
        options = options.rows_per_part(rows);
    }
    Ok(Some(options))
}

#[pymethods]
impl NativePipeline {
    #[new]
    #[pyo3(signature = (
        *, chunk_size, max_memory_mb, enable_parallel, num_workers, ordered, on_error,
        adaptive_batching, max_queue_size, min_chunk_size, max_chunk_size,
        controller = None, hooks = None, hook_flags = (false, false, false)
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        chunk_size: usize,
        max_memory_mb: f64,
        enable_parallel: bool,
        num_workers: Option<usize>,
        ordered: bool,
        on_error: &str,
        adaptive_batching: bool,
        max_queue_size: usize,
        min_chunk_size: Option<usize>,
        max_chunk_size: Option<usize>,
        controller: Option<Py<NativeController>>,
        hooks: Option<Py<PyAny>>,
        hook_flags: (bool, bool, bool),
    ) -> PyResult<Self> {
        let policy = ErrorPolicy::from_str(on_error).map_err(errors::to_py)?;
        let keep_errors = policy == ErrorPolicy::Fail;
        let mut builder = StreamingDataPipeline::builder()
            .chunk_size(chunk_size)
            .max_memory_mb(max_memory_mb)
            .enable_parallel(enable_parallel)
            .ordered(ordered)
            .error_policy(policy)
            .adaptive_batching(adaptive_batching)
            .max_queue_size(max_queue_size);
        if let Some(n) = num_workers {
            builder = builder.num_workers(n);
        }
        if let Some(rows) = min_chunk_size {
            builder = builder.min_chunk_rows(rows);
        }
        if let Some(rows) = max_chunk_size {
            builder = builder.max_chunk_rows(rows);
        }
        let flags = HookFlags {
            should_apply_backpressure: hook_flags.0,
            adapt_batch_size: hook_flags.1,
            record_performance: hook_flags.2,
        };
        if let (Some(object), Some(native)) = (hooks, controller.as_ref()) {
            if PyHooks::any(flags) {
                let native = native.clone_ref(py);
                builder = builder.controller_hooks(Arc::new(PyHooks::new(object, native, flags)));
            }
        }
        let engine = builder.build().map_err(errors::to_py)?;
        if let Some(native) = &controller {
            let workers = engine.config().effective_workers();
            native.get().attach(engine.controller().clone(), workers);
        }
        Ok(NativePipeline {
            engine: Arc::new(engine),
            keep_errors,
            controller,
            runs: Mutex::new(Vec::new()),
        })
    }

    /// Starts a run over table-like Arrow data (anything with `__arrow_c_stream__`).
    /// `function` is the Python adapter; `sql` a per-chunk query; neither: chunks as they are.
    #[pyo3(signature = (data, function = None, sql = None, output_path = None, output_format = "parquet", rows_per_part = None, overwrite = false, sql_windows = None))]
    #[allow(clippy::too_many_arguments)]
    fn run_table(
        &self,
        py: Python<'_>,
        data: &Bound<'_, PyAny>,
        function: Option<Py<PyAny>>,
        sql: Option<String>,
        output_path: Option<String>,
        output_format: &str,
        rows_per_part: Option<u64>,
        overwrite: bool,
        sql_windows: Option<String>,
    ) -> PyResult<NativeRun> {
        let (schema, batches) = import_stream(data)?;
        let windows = global::mode(sql_windows.as_deref()).map_err(PyValueError::new_err)?;
        let pass2 = match (&sql, windows) {
            (Some(sql), Windows::Global) => {
                // In memory, so read twice as it is.
                let again = MemorySource::try_new(schema.clone(), batches.clone())
                    .map_err(errors::to_py)?;
                let engine = self.engine.clone();
                let planned = py.detach(|| {
                    let global = GlobalSql::new(sql, schema.clone()).map_err(|e| e.to_string())?;
                    global::two_pass_function(&engine, global, Box::new(again))
                });
                Some(planned.map_err(PyValueError::new_err)?)
            }
            _ => None,
        };
        let source = MemorySource::try_new(schema, batches).map_err(errors::to_py)?;
        let output = output_options(output_path, output_format, rows_per_part, overwrite)?;
        self.start(py, Box::new(source), function, sql, output, None, pass2)
    }

    /// Starts a run over files (paths, globs or folders), read and decoded by the engine.
    #[pyo3(signature = (paths, file_format = None, function = None, sql = None, output_path = None, output_format = "parquet", rows_per_part = None, overwrite = false, sql_windows = None))]
    #[allow(clippy::too_many_arguments)]
    fn run_files(
        &self,
        py: Python<'_>,
        paths: Vec<String>,
        file_format: Option<String>,
        function: Option<Py<PyAny>>,
        sql: Option<String>,
        output_path: Option<String>,
        output_format: &str,
        rows_per_part: Option<u64>,
        overwrite: bool,
        sql_windows: Option<String>,
    ) -> PyResult<NativeRun> {
        let format = file_format
            .map(|f| FileFormat::from_name(&f))
            .transpose()
            .map_err(errors::to_py)?;
        let windows = global::mode(sql_windows.as_deref()).map_err(PyValueError::new_err)?;
        if let (Some(_), Windows::Global) = (&sql, windows) {
            global::stamps(&paths).map_err(PyValueError::new_err)?;
        }
        let source = py
            .detach(|| FilesSource::open(&paths, format.clone()))
            .map_err(errors::to_py)?;
        let pass2 = match (&sql, windows) {
            (Some(sql), Windows::Global) => {
                let engine = self.engine.clone();
                let schema = source.schema();
                let planned = py.detach(|| {
                    global::files_function(&engine, sql, &paths, format.as_ref(), schema)
                });
                Some(planned.map_err(PyValueError::new_err)?)
            }
            _ => None,
        };
        let output = output_options(output_path, output_format, rows_per_part, overwrite)?;
        self.start(py, Box::new(source), function, sql, output, None, pass2)
    }

    /// Opens a push stream whose columns are `first`'s (anything with
    /// `__arrow_c_stream__`), sends `first`, and returns the sender and the run's results.
    #[pyo3(signature = (first, function = None, sql = None, output_path = None, output_format = "parquet", rows_per_part = None, max_latency = 0.1))]
    #[allow(clippy::too_many_arguments)]
    fn open_push(
        &self,
        py: Python<'_>,
        first: &Bound<'_, PyAny>,
        function: Option<Py<PyAny>>,
        sql: Option<String>,
        output_path: Option<String>,
        output_format: &str,
        rows_per_part: Option<u64>,
        max_latency: f64,
    ) -> PyResult<(NativePushSender, NativeRun)> {
        if !max_latency.is_finite() || max_latency < 0.0 {
            return Err(PyValueError::new_err(format!(
                "max_latency must be a number of seconds >= 0, got {max_latency}"
            )));
        }
        let (schema, batches) = import_stream(first)?;
        let capacity = self.engine.config().effective_workers().max(2);
        let (sender, source) = push_channel(schema, Duration::from_secs_f64(max_latency), capacity);
        let deliveries = self.engine.deliveries(&sender);
        let output = output_options(output_path, output_format, rows_per_part, false)?;
        let run = self.start(
            py,
            Box::new(source),
            function,
            sql,
            output,
            Some(deliveries),
            None,
        )?;
        let sender = NativePushSender { sender };
        sender.send_batches(py, batches)?;
        Ok((sender, run))
    }

    /// Statistics, cumulative over every run, as JSON (`StreamingStats`' fields).
    fn stats_json(&self) -> PyResult<String> {
        serde_json::to_string(&self.engine.stats()).map_err(|e| {
            errors::SluiceError::new_err(format!("cannot serialize the statistics: {e}"))
        })
    }

    /// The settings the engine runs with, as JSON.
    fn config_json(&self) -> String {
        let c = self.engine.config();
        serde_json::json!({
            "chunk_size": c.chunk_size,
            "max_memory_mb": c.max_memory_mb(),
            "enable_parallel": c.enable_parallel,
            "num_workers": c.num_workers,
            "effective_workers": c.effective_workers(),
            "ordered": c.ordered,
            "min_chunk_size": c.min_chunk_rows,
            "max_chunk_size": c.max_chunk_rows,
            "adaptive_batching": c.adaptive_batching,
            "max_queue_size": c.max_queue_size,
            "on_error": format!("{:?}", c.error_policy),
        })
        .to_string()
    }

    /// A controller attached to this pipeline's engine (for reading its state).
    fn engine_controller(&self) -> NativeController {
        NativeController::attached_to(
            self.engine.controller().clone(),
            self.engine.config().effective_workers(),
        )
    }

    /// Stops every run of this pipeline: their iterators end after the chunk in hand.
    fn stop(&self) {
        self.engine.stop();
    }

    /// Stops every run and waits (GIL released, at most `timeout` seconds) for their
    /// threads to finish. Returns false if some did not finish in time.
    #[pyo3(signature = (timeout = 30.0))]
    fn cleanup(&self, py: Python<'_>, timeout: f64) -> bool {
        self.engine.stop();
        let runs: Vec<Arc<RunShared>> = {
            let mut runs = self.runs.lock().unwrap_or_else(|p| p.into_inner());
            let alive = runs.iter().filter_map(Weak::upgrade).collect();
            runs.clear();
            alive
        };
        for run in &runs {
            run.disconnect();
        }
        let limit = Duration::from_secs_f64(timeout.max(0.0));
        // Wait for every run, even after one timed out.
        let finished: Vec<bool> = runs.iter().map(|run| run.wait(py, limit)).collect();
        finished.into_iter().all(|done| done)
    }

    /// Runs whose threads may still be working.
    #[getter]
    fn active_runs(&self) -> usize {
        let runs = self.runs.lock().unwrap_or_else(|p| p.into_inner());
        runs.iter()
            .filter_map(Weak::upgrade)
            .filter(|r| r.is_running())
            .count()
    }
}

/// The sending end of a push stream (`StreamHandle.send`).
#[pyclass(frozen, module = "sluice._native")]
pub struct NativePushSender {
    sender: PushSender,
}

impl NativePushSender {
    fn send_batches(&self, py: Python<'_>, batches: Vec<RecordBatch>) -> PyResult<()> {
        // Blocks while the engine is full: never with the GIL held, a worker may need it.
        py.detach(|| {
            batches
                .into_iter()
                .try_for_each(|batch| self.sender.send(batch))
        })
        .map_err(errors::to_py)
    }
}

#[pymethods]
impl NativePushSender {
    /// Sends a table-like object (anything with `__arrow_c_stream__`); blocks while the
    /// engine is full.
    fn send(&self, py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<()> {
        let (_, batches) = import_stream(data)?;
        self.send_batches(py, batches)
    }

    /// No more input: the run drains what was sent and ends.
    fn close(&self) {
        self.sender.close();
    }

    #[getter]
    fn closed(&self) -> bool {
        self.sender.is_closed()
    }
}
