//! Where a Python run writes: the output folder decided by the job layer's one owner of
//! its state (refused, overwritten or resumed before any data is read, under the folder's
//! one-writer lock), and what pass 2 of whole-input windows over files reads.

use std::path::Path;
use std::sync::Mutex;

use arrow::datatypes::SchemaRef;
use pyo3::prelude::*;
use sluice::sink::FolderLock;
use sluice::{
    ErrorPolicy, FileFormat, FilesSource, OutputFormat, OutputOptions, PipelineConfig, Source,
};
use sluice_job::output_state::{self, RunRecord};
use sluice_job::parsed_copy;
use sluice_job::two_pass::GlobalRun;
use sluice_job::{ChunkFunction, GlobalRecord, JobError, Quiet};

use crate::errors;
use crate::run::RunExtras;

/// Where and how a run writes its output, as Python gave it.
pub struct OutputRequest {
    pub path: Option<String>,
    pub format: String,
    pub rows_per_part: Option<u64>,
    pub overwrite: bool,
    pub resume: bool,
}

/// The output of a run made ready by the folder's one owner ([`output_state`]).
pub enum Output {
    None,
    /// The earlier run into the folder completed (`resume=True`): nothing to do.
    Complete(sluice::Manifest),
    /// Write here, after skipping the input rows the earlier run committed; the record is
    /// written once the run has created the folder. `lock` is held until the run ends.
    Write {
        options: OutputOptions,
        skip_rows: u64,
        record: RunRecord,
        lock: FolderLock,
    },
}

impl OutputRequest {
    /// Decides what to do with the folder (refuse, overwrite, resume) before any data is
    /// read. `output` is the schema the run writes, when known before it runs (SQL).
    pub fn prepare(
        &self,
        record: RunRecord,
        policy: &ErrorPolicy,
        input: &SchemaRef,
        output: Option<&SchemaRef>,
    ) -> Result<Output, JobError> {
        let Some(path) = &self.path else {
            if self.resume {
                return Err(JobError::Usage("resume=True needs output_path".into()));
            }
            return Ok(Output::None);
        };
        if self.resume && !record.ordered {
            return Err(JobError::Usage(
                "resume=True needs ordered output: the parts of an unordered run are not a \
                 prefix of the input"
                    .into(),
            ));
        }
        let format = OutputFormat::from_name(&self.format)
            .map_err(|e| JobError::setup("bad output_format", e))?;
        let letters = match policy {
            ErrorPolicy::DeadLetter(dir) => Some(dir.as_path()),
            _ => None,
        };
        let dir = Path::new(path);
        let prepared = output_state::prepare(
            dir,
            self.resume,
            self.overwrite,
            &record,
            Some(format),
            input,
            output.map(|s| s.as_ref()),
            letters,
        )?;
        if let Some(manifest) = prepared.complete {
            return Ok(Output::Complete(manifest));
        }
        let mut options = prepared.output;
        if let Some(rows) = self.rows_per_part {
            options = options.rows_per_part(rows);
        }
        Ok(Output::Write {
            options,
            skip_rows: prepared.skip_rows,
            record,
            lock: prepared.lock,
        })
    }
}

/// Pass 1 of whole-input windows over files (or the values an earlier run saved, when
/// resuming), and what pass 2 reads: the rows pass 1 kept of a CSV or NDJSON input (in
/// the output folder, or a temporary one), else the files again.
pub fn two_pass_files(
    config: &PipelineConfig,
    run: GlobalRun,
    source: FilesSource,
    format: Option<&FileFormat>,
    output: Output,
    earlier: Option<GlobalRecord>,
) -> Result<(Box<dyn Source>, ChunkFunction, RunExtras, Output), JobError> {
    let dir = match &output {
        Output::Write { options, .. } => Some(options.dir.clone()),
        _ => None,
    };
    let saved = match &dir {
        Some(dir) => run.saved_values(earlier.as_ref(), dir)?,
        None => None,
    };
    let (values, copy, scratch) = match saved {
        Some(values) => (values, None, None),
        None => {
            let scratch = match &dir {
                Some(dir) => {
                    parsed_copy::remove_stale(dir);
                    None
                }
                None => Some(
                    tempfile::tempdir()
                        .map_err(|e| JobError::io("create a folder in", std::env::temp_dir(), e))?,
                ),
            };
            let copy_to: Option<&Path> = dir
                .as_deref()
                .or_else(|| scratch.as_ref().map(|t| t.path()));
            let pass1 = run.pass1(config, format, copy_to, &Quiet)?;
            (pass1.values, pass1.copy, scratch)
        }
    };
    run.check_unchanged()?;
    let function = run.pass2_function(&values)?;
    let output = match output {
        Output::Write {
            options,
            skip_rows,
            mut record,
            lock,
        } => {
            record.global = Some(run.record(&values)?);
            Output::Write {
                options,
                skip_rows,
                record,
                lock,
            }
        }
        other => other,
    };
    let source: Box<dyn Source> = match &copy {
        Some(copy) => Box::new(
            FilesSource::open(&[copy.path().display().to_string()], Some(FileFormat::Ipc))
                .map_err(|e| JobError::setup("cannot open the rows pass 1 kept", e))?,
        ),
        None => Box::new(source),
    };
    // An input that changed during pass 2 fails the run like bad data does.
    let at_end = move || {
        run.check_unchanged().map_err(|error| {
            let line = error.one_line();
            if let Some(dir) = &dir {
                let _ = output_state::mark_failed(dir, &line);
            }
            line
        })
    };
    let extras = RunExtras {
        deliveries: None,
        // The copy before its temporary folder.
        keep_alive: Some(Box::new((copy, scratch))),
        at_end: Some(Box::new(at_end)),
    };
    Ok((source, function, extras, output))
}

/// The output folder's one-writer lock, as the distributed driver holds it: from
/// [`prepare_output`] until its run has ended ([`OutputLock::release`], or when the
/// object goes away, or the process ends).
#[pyclass(module = "sluice._native")]
pub struct OutputLock {
    lock: Mutex<Option<FolderLock>>,
}

#[pymethods]
impl OutputLock {
    /// Lets another writer have the folder (again and again: does nothing once released).
    fn release(&self) {
        let lock = self.lock.lock().unwrap_or_else(|p| p.into_inner()).take();
        drop(lock);
    }

    /// True until released.
    #[getter]
    fn held(&self) -> bool {
        self.lock
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (*_args))]
    fn __exit__(&self, _args: &Bound<'_, pyo3::types::PyTuple>) -> bool {
        self.release();
        false
    }
}

/// Takes the folder's one-writer lock (`BlockingIOError` naming the holder's pid while
/// another run writes it) and makes `path` ready for a fresh run by the folder's one
/// owner: earlier output (a manifest or part files) is refused with `FileExistsError`, or
/// removed with `overwrite=True`. For the distributed driver, whose tasks write the parts:
/// it holds the returned lock until its run has ended.
#[pyfunction]
#[pyo3(signature = (path, overwrite = false))]
pub fn prepare_output(py: Python<'_>, path: String, overwrite: bool) -> PyResult<OutputLock> {
    py.detach(|| {
        let dir = Path::new(&path);
        let lock = output_state::lock(dir)?;
        let record = RunRecord::new(&[], None, true);
        // Without resume, a folder holding output is refused by `plan`.
        if let output_state::Plan::Fresh = output_state::plan(dir, false, overwrite, &record)? {
            output_state::clear(dir, &[])?;
        }
        Ok(OutputLock {
            lock: Mutex::new(Some(lock)),
        })
    })
    .map_err(errors::job_to_py)
}
