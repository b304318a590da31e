//! `sluice run --windows global`: pass 1 reads the input once (only the columns the
//! whole-input windows need, for Parquet) and merges every chunk's exact partial states;
//! pass 2 is the usual per-chunk run of the query with those values as constants. The
//! values are kept in the run record, so a run stopped in pass 2 resumes pass 2.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Instant, UNIX_EPOCH};

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use serde::{Deserialize, Serialize};
use sluice::source::ParquetOptions;
use sluice::{BoxError, FileFormat, FilesSource, Source, StreamingDataPipeline, StreamingStats};
use sluice_sql::{GlobalSql, GlobalValues};

use crate::cli::RunArgs;
use crate::error::CliError;
use crate::parsed_copy::{CopyWriter, ParsedCopy};
use crate::progress::{self, Progress};
use crate::run::{ChunkFunction, Ui};
use crate::signals;

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
    /// True when the values came from the run record of an earlier run (`--resume`).
    pub reused: bool,
}

/// A global run being prepared: the query and the inputs as they were at the start.
pub struct GlobalRun {
    pub sql: Arc<GlobalSql>,
    pub stamps: Vec<Stamp>,
}

impl GlobalRun {
    /// Plans the query for whole-input windows, refusing what cannot be read twice.
    pub fn new(
        _args: &RunArgs,
        sql: Option<&str>,
        schema: SchemaRef,
        paths: &[PathBuf],
    ) -> Result<Self, CliError> {
        let Some(sql) = sql else {
            return Err(CliError::Usage(
                "--windows global needs a query (--sql or --sql-text)".into(),
            ));
        };
        let stamps = stamps(paths)?;
        let sql = GlobalSql::new(sql, schema).map_err(|source| CliError::Sql { source })?;
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
    pub fn record(&self, values: &GlobalValues) -> Result<GlobalRecord, CliError> {
        let bytes = values
            .to_bytes()
            .map_err(|source| CliError::Sql { source })?;
        Ok(GlobalRecord {
            values: to_hex(&bytes),
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
    ) -> Result<Option<GlobalValues>, CliError> {
        let Some(earlier) = earlier.filter(|r| !r.values.is_empty()) else {
            return Ok(None);
        };
        if earlier.inputs != self.stamps {
            return Err(CliError::Resume {
                dir: dir.to_path_buf(),
                reason: "an input file changed (size or modification time) since the earlier \
                         run's pass 1; its parts hold values of the old input; use --overwrite"
                    .into(),
            });
        }
        let bytes = from_hex(&earlier.values).ok_or_else(|| CliError::Resume {
            dir: dir.to_path_buf(),
            reason: "the saved pass-1 values are not valid hex".into(),
        })?;
        let values = GlobalValues::from_bytes(&bytes).map_err(|source| CliError::Sql { source })?;
        // Planning pass 2 checks they fit the query's windows.
        self.sql
            .pass2(&values)
            .map_err(|source| CliError::Sql { source })?;
        Ok(Some(values))
    }

    /// Pass 1: every chunk's partial states, merged; in parallel, in the budget (unordered
    /// unless it keeps a copy).
    ///
    /// With `copy_to` (a folder) and a text input, pass 1 parses every column, in input
    /// order, and keeps the rows there for pass 2 ([`ParsedCopy`]); otherwise it parses
    /// only the columns the windows need.
    pub fn pass1(
        &self,
        args: &RunArgs,
        max_memory: Option<u64>,
        format: Option<&FileFormat>,
        copy_to: Option<&Path>,
        ui: Ui,
    ) -> Result<(GlobalValues, PassStats, Option<ParsedCopy>), CliError> {
        let paths: Vec<String> = self
            .stamps
            .iter()
            .map(|s| s.path.display().to_string())
            .collect();
        let mut columns = self.sql.pass1_columns().to_vec();
        if columns.is_empty() {
            // With no column needed (COUNT(*) only) one column still gives the row counts.
            columns.extend(
                self.sql
                    .input_schema()
                    .fields()
                    .first()
                    .map(|f| f.name().clone()),
            );
        }
        let common = common_format(&self.stamps, format);
        let copy_to = copy_to.filter(|_| {
            matches!(
                common,
                Some(FileFormat::Csv(_)) | Some(FileFormat::Ndjson(_))
            )
        });
        let projected = match common {
            Some(_) if copy_to.is_some() => {
                ui.note("pass 1 parses every column and keeps the rows for pass 2");
                format.cloned()
            }
            Some(FileFormat::Parquet(_)) => {
                ui.note(format!("pass 1 reads the Parquet columns {columns:?}"));
                Some(FileFormat::Parquet(ParquetOptions {
                    columns: Some(columns),
                }))
            }
            Some(FileFormat::Csv(options)) => {
                ui.note(format!(
                    "pass 1 parses the CSV columns {columns:?} and skips the others"
                ));
                Some(FileFormat::Csv(options.with_columns(columns)))
            }
            _ => {
                ui.note(format!(
                    "pass 1 needs the columns {columns:?}; {} input is parsed whole",
                    format.map_or("this", |f| f.name())
                ));
                format.cloned()
            }
        };
        let source = FilesSource::open(&paths, projected)
            .map_err(|e| CliError::setup("cannot open the input for pass 1", e))?;
        let total_bytes = source.total_bytes();

        let source_schema = source.schema();
        // The copy is in input order, as pass 2 must read it.
        let mut builder = StreamingDataPipeline::builder()
            .ordered(copy_to.is_some())
            .adaptive_batching(!args.fixed_chunks);
        if let Some(rows) = args.chunk_size {
            builder = builder.chunk_size(rows);
        }
        if let Some(bytes) = max_memory {
            builder = builder.max_memory_bytes(bytes);
        }
        if let Some(workers) = args.workers {
            builder = builder.num_workers(workers);
        }
        let pipeline = Arc::new(
            builder
                .build()
                .map_err(|e| CliError::setup("bad settings", e))?,
        );

        let total = Arc::new(Mutex::new(self.sql.empty_partial()));
        let keep_rows = copy_to.is_some();
        let function: ChunkFunction = {
            let sql = Arc::clone(&self.sql);
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
        let mut copy = match copy_to.map(|dir| CopyWriter::create(dir, &source_schema)) {
            Some(Err(reason)) => {
                ui.say(format!("{reason}; pass 2 will parse the input again"));
                None
            }
            Some(Ok(writer)) => Some(writer),
            None => None,
        };
        ui.say(format!(
            "pass 1/2: whole-input statistics for {} windows",
            self.sql.windows().len()
        ));
        let started = Instant::now();
        let mut stream = pipeline
            .start_boxed(Box::new(source), function, None)
            .map_err(|e| CliError::setup("cannot start pass 1", e))?;
        signals::watch(&pipeline);
        let mut bar = Progress::start_labelled(
            progress::Mode::detect(ui.quiet),
            pipeline.clone(),
            total_bytes,
            "pass 1/2",
        );
        let result = stream.by_ref().try_for_each(|chunk| {
            let chunk = chunk?;
            if let Some(copy) = copy.as_mut() {
                copy.write(&chunk.batch);
            }
            Ok(())
        });
        drop(stream);
        bar.finish();
        result.map_err(|e| CliError::run("pass 1 (whole-input statistics) failed", e))?;
        if signals::interrupted() {
            return Err(CliError::Interrupted);
        }
        let stats = pipeline.stats();
        let partial = total.lock().unwrap_or_else(PoisonError::into_inner).clone();
        let values = self
            .sql
            .finish(&partial)
            .map_err(|source| CliError::Sql { source })?;
        for (window, value) in self.sql.describe(&values) {
            ui.note(format!("{window} = {value}"));
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
                ui.note(format!(
                    "pass 1 kept the parsed rows in {} ({} bytes) for pass 2",
                    copy.path().display(),
                    copy.bytes()
                ));
                Some(copy)
            }
            Some(Err(reason)) => {
                ui.say(format!("{reason}; pass 2 will parse the input again"));
                None
            }
            None => None,
        };
        Ok((values, pass, copy))
    }

    /// Fails when an input's size or modification time is not what pass 1 saw.
    pub fn check_unchanged(&self) -> Result<(), CliError> {
        let paths: Vec<PathBuf> = self.stamps.iter().map(|s| s.path.clone()).collect();
        let now = stamps(&paths)?;
        for (then, now) in self.stamps.iter().zip(&now) {
            if then != now {
                return Err(CliError::InputChanged {
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
    pub fn pass2_function(&self, values: &GlobalValues) -> Result<ChunkFunction, CliError> {
        let sql = Arc::new(
            self.sql
                .pass2(values)
                .map_err(|source| CliError::Sql { source })?,
        );
        Ok(Arc::new(move |batch: RecordBatch| {
            sql.apply(&batch).map_err(BoxError::from)
        }))
    }
}

/// Refuses inputs that cannot be read twice, before anything opens them.
pub fn refuse_unrepeatable(inputs: &[String]) -> Result<(), CliError> {
    let paths = sluice::source::files::expand_inputs(inputs)
        .map_err(|e| CliError::setup("cannot open the input", e))?;
    stamps(&paths).map(drop)
}

/// Size and modification time of every input; refuses what is not a regular file (stdin,
/// a pipe, a socket), which cannot be read twice.
fn stamps(paths: &[PathBuf]) -> Result<Vec<Stamp>, CliError> {
    paths
        .iter()
        .map(|path| {
            let meta = std::fs::metadata(path).map_err(|e| CliError::io("read", path, e))?;
            if !meta.is_file() {
                return Err(CliError::Usage(format!(
                    "--windows global reads the input twice, and {} is not a regular file \
                     (a pipe or stream can be read once); write it to a file first or use \
                     --windows chunk",
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

/// Rows, time and bytes of pass 2, from its pipeline's statistics.
pub fn pass2_stats(stats: &StreamingStats) -> PassStats {
    PassStats {
        pass: 2,
        rows: stats.total_rows_processed,
        seconds: stats.total_processing_time,
        input_bytes_read: stats.input_bytes_read,
        peak_rss_mb: stats.memory_peak_mb,
        reused: false,
    }
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

/// Marks the output folder's run failed (the caller then removes its parts), for an input
/// that changed under pass 2.
pub fn mark_failed(dir: &Path, error: &CliError) -> Result<(), CliError> {
    let Ok(mut manifest) = sluice::Manifest::read_from(dir) else {
        return Ok(());
    };
    manifest.status = sluice::RunStatus::Failed;
    manifest.error = Some(error.one_line());
    manifest
        .write_to(dir)
        .map_err(|e| CliError::run("marking the run failed", e))
}

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn from_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips() {
        let bytes: Vec<u8> = (0..=255).collect();
        assert_eq!(from_hex(&to_hex(&bytes)), Some(bytes));
        assert_eq!(from_hex("abc"), None);
        assert_eq!(from_hex("zz"), None);
    }
}
