//! `NativePipeline`: the engine's `StreamingDataPipeline` for Python. It checks nothing the
//! Python layer already checked except what only the engine knows (the settings' ranges,
//! the error policy, the SQL against the input's schema), starts runs over in-memory Arrow
//! data or files, and gives statistics as JSON (the Python side builds the dataclass).
//!
//! Every call that may block or do I/O (opening files, planning SQL, creating the output
//! folder, waiting for runs to stop) releases the GIL.

use std::path::Path;
use std::str::FromStr;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use sluice::source::{push_channel, MemorySource, SkipRows};
use sluice::{ErrorPolicy, FileFormat, FilesSource, OutputOptions, Source, StreamingDataPipeline};
use sluice_job::output_state::RunRecord;
use sluice_job::transform::copy_function;
use sluice_job::two_pass::{self, GlobalRun};
use sluice_job::{ChunkFunction, EngineSettings, JobError, Quiet, Transform};
use sluice_sql::{GlobalSql, Windows};

use crate::arrow_io::import_stream;
use crate::controller::{HookFlags, NativeController, PyHooks};
use crate::errors::{self, ErrorStore};
use crate::function::{PyFunction, Stash};
use crate::gate::CallGate;
use crate::lane::CallerLane;
use crate::output::{two_pass_files, Output, OutputRequest};
use crate::push::NativePushSender;
use crate::run::{NativeRun, RunExtras, RunShared};

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
    /// Starts a run over `source` into the prepared `output` (skipping the input rows an
    /// earlier run committed), and writes the run record once the folder exists.
    #[allow(clippy::too_many_arguments)]
    fn start_with(
        &self,
        py: Python<'_>,
        source: Box<dyn Source>,
        function: Option<Py<PyAny>>,
        sql: Option<String>,
        output: Output,
        mut extras: RunExtras,
        pass2: Option<ChunkFunction>,
    ) -> PyResult<NativeRun> {
        let (source, output, record): (Box<dyn Source>, _, _) = match output {
            Output::Complete(manifest) => {
                return NativeRun::already_complete(self.engine.clone(), &manifest)
            }
            Output::None => (source, None, None),
            Output::Write {
                options,
                skip_rows,
                record,
                lock,
            } => {
                // The folder stays this run's until its pump ends (after the final manifest).
                let earlier = extras.keep_alive.take();
                extras.keep_alive = Some(Box::new((lock, earlier)));
                let source: Box<dyn Source> = if skip_rows > 0 {
                    Box::new(SkipRows::new(source, skip_rows))
                } else {
                    source
                };
                let dir = options.dir.clone();
                (source, Some(options), Some((dir, record)))
            }
        };
        let run = self.start(py, source, function, sql, output, extras, pass2)?;
        if let Some((dir, record)) = record {
            py.detach(|| record.write_to(&dir))
                .map_err(errors::job_to_py)?;
        }
        Ok(run)
    }

    /// The output folder made ready for a run of this pipeline (GIL released).
    fn prepare(
        &self,
        py: Python<'_>,
        request: OutputRequest,
        record: RunRecord,
        input: &SchemaRef,
        written: Option<&SchemaRef>,
    ) -> PyResult<Output> {
        let policy = &self.engine.config().error_policy;
        py.detach(|| request.prepare(record, policy, input, written))
            .map_err(errors::job_to_py)
    }

    /// The schema a per-chunk query writes over chunks of `input` (a bad query is refused).
    fn sql_schema(&self, py: Python<'_>, sql: &str, input: &SchemaRef) -> PyResult<SchemaRef> {
        let transform = Transform::Sql {
            text: sql.into(),
            windows: Windows::Chunk,
        };
        py.detach(|| transform.plan_chunk(input.clone()))
            .map(|(_, schema)| schema)
            .map_err(errors::job_to_py)
    }

    #[allow(clippy::too_many_arguments)]
    fn start(
        &self,
        py: Python<'_>,
        source: Box<dyn Source>,
        function: Option<Py<PyAny>>,
        sql: Option<String>,
        output: Option<OutputOptions>,
        extras: RunExtras,
        pass2: Option<ChunkFunction>,
    ) -> PyResult<NativeRun> {
        let errors = Arc::new(ErrorStore::default());
        let stash = Arc::new(Stash::default());
        let mut lane = None;
        let chunk_fn: ChunkFunction = match (function, sql, pass2) {
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
            (None, Some(text), None) => {
                let schema = source.schema();
                let transform = Transform::Sql {
                    text,
                    windows: Windows::Chunk,
                };
                py.detach(|| transform.plan_chunk(schema))
                    .map_err(|e| PyValueError::new_err(e.to_string()))?
                    .0
            }
            (None, None, _) => copy_function(),
        };
        if let Some(controller) = &self.controller {
            controller.get().run_started();
        }
        let engine = self.engine.clone();
        let stream = py
            .detach(|| engine.start_boxed(source, chunk_fn, output))
            .map_err(errors::to_py)?;
        let run = NativeRun::spawn(stream, self.engine.clone(), errors, stash, lane, extras)?;
        let mut runs = self.runs.lock().unwrap_or_else(|p| p.into_inner());
        runs.retain(|r| r.strong_count() > 0);
        runs.push(Arc::downgrade(&run.shared()));
        Ok(run)
    }
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
        let settings = EngineSettings {
            chunk_size: Some(chunk_size),
            max_memory_mb: Some(max_memory_mb),
            enable_parallel: Some(enable_parallel),
            workers: num_workers,
            ordered: Some(ordered),
            error_policy: Some(policy),
            adaptive_batching: Some(adaptive_batching),
            max_queue_size: Some(max_queue_size),
            min_chunk_rows: min_chunk_size,
            max_chunk_rows: max_chunk_size,
            ..EngineSettings::default()
        };
        let mut builder = settings.builder();
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
    #[pyo3(signature = (data, function = None, sql = None, output_path = None, output_format = "parquet", rows_per_part = None, overwrite = false, sql_windows = None, resume = false))]
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
        resume: bool,
    ) -> PyResult<NativeRun> {
        let (schema, batches) = import_stream(data)?;
        let windows = windows_mode(sql_windows.as_deref())?;
        let config = self.engine.config();
        let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
        let record = RunRecord::for_table(rows as u64, &schema, sql.as_deref(), config.ordered);
        let (pass2, written) = match (&sql, windows) {
            (Some(sql), Windows::Global) => {
                // In memory, so read twice as it is.
                let again = MemorySource::try_new(schema.clone(), batches.clone())
                    .map_err(errors::to_py)?;
                let planned = py
                    .detach(|| {
                        let sql =
                            Arc::new(GlobalSql::new(sql, schema.clone()).map_err(JobError::sql)?);
                        let pass1 =
                            two_pass::run_pass1(&sql, config, Box::new(again), None, None, &Quiet)?;
                        let function = two_pass::pass2_function(&sql, &pass1.values)?;
                        Ok::<_, JobError>((function, sql.output_schema()))
                    })
                    .map_err(errors::job_to_py)?;
                (Some(planned.0), Some(planned.1))
            }
            (Some(sql), Windows::Chunk) => (None, Some(self.sql_schema(py, sql, &schema)?)),
            (None, _) => (None, None),
        };
        let request = OutputRequest {
            path: output_path,
            format: output_format.into(),
            rows_per_part,
            overwrite,
            resume,
        };
        let output = self.prepare(py, request, record, &schema, written.as_ref())?;
        let source = MemorySource::try_new(schema, batches).map_err(errors::to_py)?;
        self.start_with(
            py,
            Box::new(source),
            function,
            sql,
            output,
            RunExtras::default(),
            pass2,
        )
    }

    /// Starts a run over files (paths, globs or folders), read and decoded by the engine.
    #[pyo3(signature = (paths, file_format = None, function = None, sql = None, output_path = None, output_format = "parquet", rows_per_part = None, overwrite = false, sql_windows = None, resume = false))]
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
        resume: bool,
    ) -> PyResult<NativeRun> {
        let format = file_format
            .map(|f| FileFormat::from_name(&f))
            .transpose()
            .map_err(errors::to_py)?;
        let windows = windows_mode(sql_windows.as_deref())?;
        if let (Some(_), Windows::Global) = (&sql, windows) {
            two_pass::refuse_unrepeatable(&paths).map_err(errors::job_to_py)?;
        }
        // Pass 1's values an earlier run saved, read before the folder is prepared.
        let earlier = match (&output_path, resume) {
            (Some(dir), true) => RunRecord::read_from(Path::new(dir))
                .ok()
                .flatten()
                .and_then(|r| r.global),
            _ => None,
        };
        let source = py
            .detach(|| FilesSource::open(&paths, format.clone()))
            .map_err(errors::to_py)?;
        let schema = source.schema();
        let files = source.paths().to_vec();
        let config = self.engine.config();
        let mut record = RunRecord::new(&files, sql.as_deref(), config.ordered);
        let global = match (&sql, windows) {
            (Some(sql), Windows::Global) => Some(
                py.detach(|| GlobalRun::new(Some(sql), schema.clone(), &files))
                    .map_err(errors::job_to_py)?,
            ),
            _ => None,
        };
        record.global = global.as_ref().map(GlobalRun::pending_record);
        let written = match (&sql, &global) {
            (_, Some(run)) => Some(run.sql.output_schema()),
            (Some(sql), None) => Some(self.sql_schema(py, sql, &schema)?),
            (None, None) => None,
        };
        let request = OutputRequest {
            path: output_path,
            format: output_format.into(),
            rows_per_part,
            overwrite,
            resume,
        };
        // The folder is decided first, so earlier output is refused before pass 1 runs.
        let output = self.prepare(py, request, record, &schema, written.as_ref())?;
        let Some(run) = global else {
            return self.start_with(
                py,
                Box::new(source),
                function,
                sql,
                output,
                RunExtras::default(),
                None,
            );
        };
        let (source, pass2, extras, output) = py
            .detach(|| two_pass_files(config, run, source, format.as_ref(), output, earlier))
            .map_err(errors::job_to_py)?;
        self.start_with(py, source, function, sql, output, extras, Some(pass2))
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
        let (sender, source) = push_channel(
            schema.clone(),
            Duration::from_secs_f64(max_latency),
            capacity,
        );
        let deliveries = self.engine.deliveries(&sender);
        let request = OutputRequest {
            path: output_path,
            format: output_format.into(),
            rows_per_part,
            overwrite: false,
            resume: false,
        };
        let record = RunRecord::new(&[], sql.as_deref(), true);
        let output = self.prepare(py, request, record, &schema, None)?;
        let extras = RunExtras {
            deliveries: Some(deliveries),
            ..RunExtras::default()
        };
        let run = self.start_with(py, Box::new(source), function, sql, output, extras, None)?;
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

/// Parses `sql_windows`.
fn windows_mode(text: Option<&str>) -> PyResult<Windows> {
    text.map_or(Ok(Windows::Chunk), str::parse)
        .map_err(PyValueError::new_err)
}
