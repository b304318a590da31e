//! Whole-input windows (`AGG(x) OVER ()` over every input row) in two passes, the one
//! implementation the command, Python and cluster drivers use. Pass 1 reads the input once
//! (only the columns the windows need, for Parquet; every column, kept in a parsed Arrow
//! copy, for CSV and NDJSON) and merges every chunk's exact partial states; pass 2 is the
//! usual per-chunk run of the query with those values as constants. The values are kept in
//! the run record, so a run stopped in pass 2 resumes pass 2.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Instant, UNIX_EPOCH};

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use serde::{Deserialize, Serialize};
use sluice::source::ParquetOptions;
use sluice::{
    BoxError, FileFormat, FilesSource, PipelineConfig, Source, StreamingDataPipeline,
    StreamingStats,
};
use sluice_sql::{GlobalSql, GlobalValues};

use crate::error::{JobError, Result};
use crate::observer::Observer;
use crate::parsed_copy::{CopyWriter, ParsedCopy};
use crate::settings::sibling_config;
use crate::transform::{sql_function, ChunkFunction};

/// An input file as pass 1 saw it; a different size or mtime later fails the run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stamp {
    pub path: PathBuf,
    pub bytes: u64,
    pub modified_ns: u128,
}

/// What the run record keeps of pass 1.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GlobalRecord {
    /// The windows' values as one Arrow IPC row, hex: exact for every type. Empty until
    /// pass 1 has finished.
    pub values: String,
    /// The windows, as DataFusion shows them, with their values (for people).
    pub windows: Vec<(String, String)>,
    pub inputs: Vec<Stamp>,
}

/// Rows, time and bytes of one pass.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PassStats {
    pub pass: u32,
    pub rows: u64,
    pub seconds: f64,
    pub input_bytes_read: u64,
    pub peak_rss_mb: f64,
    /// True when the values came from the run record of an earlier run (resume).
    pub reused: bool,
}

impl PassStats {
    /// Rows, time and bytes of pass 2, from its pipeline's statistics.
    pub fn pass2(stats: &StreamingStats) -> Self {
        PassStats {
            pass: 2,
            rows: stats.total_rows_processed,
            seconds: stats.total_processing_time,
            input_bytes_read: stats.input_bytes_read,
            peak_rss_mb: stats.memory_peak_mb,
            reused: false,
        }
    }
}

/// What pass 1 leaves for pass 2.
pub struct Pass1 {
    pub values: GlobalValues,
    pub stats: PassStats,
    /// The rows pass 1 parsed (CSV, NDJSON), for pass 2 to read instead of the input.
    pub copy: Option<ParsedCopy>,
}

/// A two-pass job over files being prepared: the query and the inputs as they were at the
/// start.
pub struct GlobalRun {
    pub sql: Arc<GlobalSql>,
    pub stamps: Vec<Stamp>,
}

impl GlobalRun {
    /// Plans the query for whole-input windows, refusing what cannot be read twice.
    pub fn new(sql: Option<&str>, schema: SchemaRef, paths: &[PathBuf]) -> Result<Self> {
        let Some(sql) = sql else {
            return Err(JobError::Usage(
                "--windows global needs a query (--sql or --sql-text)".into(),
            ));
        };
        let stamps = stamps(paths)?;
        let sql = GlobalSql::new(sql, schema).map_err(JobError::sql)?;
        Ok(GlobalRun {
            sql: Arc::new(sql),
            stamps,
        })
    }

    /// The record of a run whose pass 1 has not finished yet.
    pub fn pending_record(&self) -> GlobalRecord {
        GlobalRecord {
            values: String::new(),
            windows: Vec::new(),
            inputs: self.stamps.clone(),
        }
    }

    /// The record holding pass 1's values.
    pub fn record(&self, values: &GlobalValues) -> Result<GlobalRecord> {
        let bytes = values.to_bytes().map_err(JobError::sql)?;
        Ok(GlobalRecord {
            values: hex::encode(bytes),
            windows: self.sql.describe(values),
            inputs: self.stamps.clone(),
        })
    }

    /// The values an earlier run of this query saved, if it finished pass 1 on these very
    /// inputs; an error if the inputs changed since.
    pub fn saved_values(
        &self,
        earlier: Option<&GlobalRecord>,
        dir: &Path,
    ) -> Result<Option<GlobalValues>> {
        let Some(earlier) = earlier.filter(|r| !r.values.is_empty()) else {
            return Ok(None);
        };
        if earlier.inputs != self.stamps {
            return Err(JobError::Resume {
                dir: dir.to_path_buf(),
                reason: "an input file changed (size or modification time) since the earlier \
                         run's pass 1; its parts hold values of the old input; use --overwrite"
                    .into(),
            });
        }
        let bytes = hex::decode(&earlier.values).map_err(|_| JobError::Resume {
            dir: dir.to_path_buf(),
            reason: "the saved pass-1 values are not valid hex".into(),
        })?;
        let values = GlobalValues::from_bytes(&bytes).map_err(JobError::sql)?;
        // Planning pass 2 checks they fit the query's windows.
        self.sql.pass2(&values).map_err(JobError::sql)?;
        Ok(Some(values))
    }

    /// Pass 1 over the files: every chunk's partial states, merged; in parallel, in the
    /// budget of `config` (unordered unless it keeps a copy).
    ///
    /// With `copy_to` (a folder) and a text input, pass 1 parses every column, in input
    /// order, and keeps the rows there for pass 2 ([`ParsedCopy`]); otherwise it parses
    /// only the columns the windows need.
    pub fn pass1(
        &self,
        config: &PipelineConfig,
        format: Option<&FileFormat>,
        copy_to: Option<&Path>,
        observer: &dyn Observer,
    ) -> Result<Pass1> {
        let paths: Vec<String> = self
            .stamps
            .iter()
            .map(|s| s.path.display().to_string())
            .collect();
        let columns = pass1_columns(&self.sql);
        let common = common_format(&self.stamps, format);
        let copy_to = copy_to.filter(|_| {
            matches!(
                common,
                Some(FileFormat::Csv(_)) | Some(FileFormat::Ndjson(_))
            )
        });
        let projected = match common {
            Some(_) if copy_to.is_some() => {
                observer.note("pass 1 parses every column and keeps the rows for pass 2");
                format.cloned()
            }
            Some(FileFormat::Parquet(_)) => {
                observer.note(&format!("pass 1 reads the Parquet columns {columns:?}"));
                Some(FileFormat::Parquet(ParquetOptions {
                    columns: Some(columns),
                }))
            }
            Some(FileFormat::Csv(options)) => {
                observer.note(&format!(
                    "pass 1 parses the CSV columns {columns:?} and skips the others"
                ));
                Some(FileFormat::Csv(options.with_columns(columns)))
            }
            _ => {
                observer.note(&format!(
                    "pass 1 needs the columns {columns:?}; {} input is parsed whole",
                    format.map_or("this", |f| f.name())
                ));
                format.cloned()
            }
        };
        let source = FilesSource::open(&paths, projected)
            .map_err(|e| JobError::setup("cannot open the input for pass 1", e))?;
        let total_bytes = source.total_bytes();
        let copy = match copy_to.map(|dir| CopyWriter::create(dir, &source.schema())) {
            Some(Err(reason)) => {
                observer.say(&format!("{reason}; pass 2 will parse the input again"));
                None
            }
            Some(Ok(writer)) => Some(writer),
            None => None,
        };
        run_pass1(
            &self.sql,
            config,
            Box::new(source),
            total_bytes,
            copy,
            observer,
        )
    }

    /// Fails when an input's size or modification time is not what pass 1 saw.
    pub fn check_unchanged(&self) -> Result<()> {
        let paths: Vec<PathBuf> = self.stamps.iter().map(|s| s.path.clone()).collect();
        let now = stamps(&paths)?;
        for (then, now) in self.stamps.iter().zip(&now) {
            if then != now {
                return Err(JobError::InputChanged {
                    path: then.path.clone(),
                    detail: format!(
                        "{} bytes, modified at {} ns when pass 1 read it; now {} bytes, {} ns",
                        then.bytes, then.modified_ns, now.bytes, now.modified_ns
                    ),
                });
            }
        }
        Ok(())
    }

    /// The per-chunk function of pass 2.
    pub fn pass2_function(&self, values: &GlobalValues) -> Result<ChunkFunction> {
        pass2_function(&self.sql, values)
    }
}

/// Pass 1 over any source read to the end on an engine of its own beside `config`'s (its
/// statistics kept out of the caller's); with `copy`, every chunk is also kept for pass 2
/// (the engine is then ordered, as pass 2 must read the copy).
pub fn run_pass1(
    sql: &Arc<GlobalSql>,
    config: &PipelineConfig,
    source: Box<dyn Source>,
    total_bytes: Option<u64>,
    mut copy: Option<CopyWriter>,
    observer: &dyn Observer,
) -> Result<Pass1> {
    let keep_rows = copy.is_some();
    let pipeline = Arc::new(
        StreamingDataPipeline::new(sibling_config(config, keep_rows))
            .map_err(|e| JobError::setup("bad settings", e))?,
    );
    let total = Arc::new(Mutex::new(sql.empty_partial()));
    let function: ChunkFunction = {
        let sql = Arc::clone(sql);
        let total = Arc::clone(&total);
        Arc::new(move |batch: RecordBatch| {
            let partial = sql.partial(&batch).map_err(BoxError::from)?;
            total
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .merge(&partial);
            if keep_rows {
                Ok(batch)
            } else {
                Ok(RecordBatch::new_empty(batch.schema()))
            }
        })
    };
    observer.say(&format!(
        "pass 1/2: whole-input statistics for {} windows",
        sql.windows().len()
    ));
    let started = Instant::now();
    let mut stream = pipeline
        .start_boxed(source, function, None)
        .map_err(|e| JobError::setup("cannot start pass 1", e))?;
    let mut watch = observer.pass_started(&pipeline, total_bytes, "pass 1/2");
    let result = stream.by_ref().try_for_each(|chunk| {
        let chunk = chunk?;
        if let Some(copy) = copy.as_mut() {
            copy.write(&chunk.batch);
        }
        Ok(())
    });
    drop(stream);
    watch.finish();
    result.map_err(|e| JobError::run("pass 1 (whole-input statistics) failed", e))?;
    if observer.interrupted() {
        return Err(JobError::Interrupted);
    }
    let stats = pipeline.stats();
    let partial = total.lock().unwrap_or_else(PoisonError::into_inner).clone();
    let values = sql.finish(&partial).map_err(JobError::sql)?;
    for (window, value) in sql.describe(&values) {
        observer.note(&format!("{window} = {value}"));
    }
    let pass = PassStats {
        pass: 1,
        rows: partial.rows(),
        seconds: started.elapsed().as_secs_f64(),
        input_bytes_read: stats.input_bytes_read,
        peak_rss_mb: stats.memory_peak_mb,
        reused: false,
    };
    let copy = match copy.map(CopyWriter::finish) {
        Some(Ok(copy)) => {
            observer.note(&format!(
                "pass 1 kept the parsed rows in {} ({} bytes) for pass 2",
                copy.path().display(),
                copy.bytes()
            ));
            Some(copy)
        }
        Some(Err(reason)) => {
            observer.say(&format!("{reason}; pass 2 will parse the input again"));
            None
        }
        None => None,
    };
    Ok(Pass1 {
        values,
        stats: pass,
        copy,
    })
}

/// The per-chunk function of pass 2: the query with pass 1's values as constants.
pub fn pass2_function(sql: &GlobalSql, values: &GlobalValues) -> Result<ChunkFunction> {
    let planned = sql.pass2(values).map_err(JobError::sql)?;
    Ok(sql_function(planned))
}

/// The columns pass 1 reads: those the windows need, or (COUNT(*) only) the first, which
/// still gives the row counts.
fn pass1_columns(sql: &GlobalSql) -> Vec<String> {
    let mut columns = sql.pass1_columns().to_vec();
    if columns.is_empty() {
        columns.extend(
            sql.input_schema()
                .fields()
                .first()
                .map(|f| f.name().clone()),
        );
    }
    columns
}

/// Refuses inputs that cannot be read twice, before anything opens them.
pub fn refuse_unrepeatable(inputs: &[String]) -> Result<()> {
    let paths = sluice::source::files::expand_inputs(inputs)
        .map_err(|e| JobError::setup("cannot open the input", e))?;
    stamps(&paths).map(drop)
}

/// Size and modification time of every input; refuses what is not a regular file (stdin,
/// a pipe, a socket), which cannot be read twice.
pub fn stamps(paths: &[PathBuf]) -> Result<Vec<Stamp>> {
    paths
        .iter()
        .map(|path| {
            let meta = std::fs::metadata(path).map_err(|e| JobError::io("read", path, e))?;
            if !meta.is_file() {
                return Err(JobError::Usage(format!(
                    "whole-input windows read the input twice, and {} is not a regular file \
                     (a pipe or stream can be read once); write it to a file first or use \
                     per-chunk windows",
                    path.display()
                )));
            }
            let modified_ns = meta
                .modified()
                .ok()
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_nanos());
            Ok(Stamp {
                path: std::fs::canonicalize(path).unwrap_or_else(|_| path.clone()),
                bytes: meta.len(),
                modified_ns,
            })
        })
        .collect()
}

/// The one format every input is read as: the format given, or the one all extensions name
/// (CSV options included, so `.csv` and `.tsv` inputs mixed have none).
fn common_format(stamps: &[Stamp], format: Option<&FileFormat>) -> Option<FileFormat> {
    if let Some(format) = format {
        return Some(format.clone());
    }
    let mut formats = stamps.iter().map(|s| FileFormat::from_path(&s.path).ok());
    let first = formats.next()??;
    let same = |other: &FileFormat| match (&first, other) {
        (FileFormat::Csv(a), FileFormat::Csv(b)) => a.delimiter == b.delimiter,
        (a, b) => a.name() == b.name(),
    };
    formats
        .all(|f| f.as_ref().is_some_and(same))
        .then_some(first)
}

/// One line per pass for the report.
pub fn report(passes: &[PassStats]) -> String {
    passes
        .iter()
        .map(|p| {
            if p.reused {
                format!("pass {}/2: values reused from the earlier run\n", p.pass)
            } else {
                format!(
                    "pass {}/2: {} rows in {:.2}s, {} bytes read, peak RSS {:.1} MiB\n",
                    p.pass, p.rows, p.seconds, p.input_bytes_read, p.peak_rss_mb
                )
            }
        })
        .collect()
}
