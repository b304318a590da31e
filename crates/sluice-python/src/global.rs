//! `sql_windows="global"`: pass 1 of a whole-input query, run to the end on an engine of its
//! own (same settings, unordered, its statistics kept out of the caller's), then the query
//! planned with the values as constants for the caller's run (pass 2). Files must be
//! regular files and unchanged between the passes; in-memory tables are read twice as is.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::UNIX_EPOCH;

use arrow::record_batch::RecordBatch;
use sluice::source::files::expand_inputs;
use sluice::source::ParquetOptions;
use sluice::{BoxError, FileFormat, FilesSource, Source, StreamingDataPipeline};
use sluice_sql::{GlobalSql, Windows};

type ChunkFn = Arc<dyn Fn(RecordBatch) -> Result<RecordBatch, BoxError> + Send + Sync>;

/// Parses `sql_windows`.
pub fn mode(text: Option<&str>) -> Result<Windows, String> {
    text.map_or(Ok(Windows::Chunk), str::parse)
}

/// Size and modification time of each file; refuses what is not a regular file.
pub fn stamps(paths: &[String]) -> Result<Vec<(PathBuf, u64, u128)>, String> {
    let files = expand_inputs(paths).map_err(|e| e.to_string())?;
    files
        .into_iter()
        .map(|path| {
            let meta = std::fs::metadata(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            if !meta.is_file() {
                return Err(format!(
                    "sql_windows=\"global\" reads the input twice, and {} is not a regular \
                     file (a pipe or stream can be read once)",
                    path.display()
                ));
            }
            let modified = meta
                .modified()
                .ok()
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_nanos());
            Ok((path, meta.len(), modified))
        })
        .collect()
}

/// A Parquet projection of the columns pass 1 needs, when every file is Parquet.
pub fn pass1_format(
    sql: &GlobalSql,
    files: &[(PathBuf, u64, u128)],
    format: Option<&FileFormat>,
) -> Option<FileFormat> {
    let parquet = match format {
        Some(f) => matches!(f, FileFormat::Parquet(_)),
        None => files
            .iter()
            .all(|(p, _, _)| matches!(FileFormat::from_path(p), Ok(FileFormat::Parquet(_)))),
    };
    if !parquet {
        return format.cloned();
    }
    let mut columns = sql.pass1_columns().to_vec();
    if columns.is_empty() {
        columns.extend(
            sql.input_schema()
                .fields()
                .first()
                .map(|f| f.name().clone()),
        );
    }
    Some(FileFormat::Parquet(ParquetOptions {
        columns: Some(columns),
    }))
}

/// Runs pass 1 over `source` to the end on an engine like `engine` and returns pass 2's
/// per-chunk function.
pub fn two_pass_function(
    engine: &StreamingDataPipeline,
    sql: GlobalSql,
    source: Box<dyn Source>,
) -> Result<ChunkFn, String> {
    let sql = Arc::new(sql);
    let mut config = engine.config().clone();
    // Order does not matter to exact merges; the caller's hooks and error policy belong
    // to its own run (a chunk pass 1 cannot read fails the query).
    config.ordered = false;
    config.hooks = None;
    config.error_policy = sluice::ErrorPolicy::Fail;
    let pass1 = StreamingDataPipeline::new(config).map_err(|e| e.to_string())?;
    let total = Arc::new(Mutex::new(sql.empty_partial()));
    let function: ChunkFn = {
        let sql = Arc::clone(&sql);
        let total = Arc::clone(&total);
        Arc::new(move |batch: RecordBatch| {
            let partial = sql.partial(&batch).map_err(BoxError::from)?;
            total
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .merge(&partial);
            Ok(RecordBatch::new_empty(batch.schema()))
        })
    };
    pass1
        .start_boxed(source, function, None)
        .and_then(|stream| stream.run_to_end())
        .map_err(|e| format!("pass 1 (whole-input statistics) failed: {e}"))?;
    let partial = total.lock().unwrap_or_else(PoisonError::into_inner).clone();
    let values = sql.finish(&partial).map_err(|e| e.to_string())?;
    let planned = sql.pass2(&values).map_err(|e| e.to_string())?;
    Ok(Arc::new(move |batch: RecordBatch| {
        planned.apply(&batch).map_err(BoxError::from)
    }))
}

/// Pass 1 over files: opened again (projected for Parquet), checked unchanged afterwards.
pub fn files_function(
    engine: &StreamingDataPipeline,
    sql: &str,
    paths: &[String],
    format: Option<&FileFormat>,
    schema: arrow::datatypes::SchemaRef,
) -> Result<ChunkFn, String> {
    let before = stamps(paths)?;
    let global = GlobalSql::new(sql, schema).map_err(|e| e.to_string())?;
    let projected = pass1_format(&global, &before, format);
    let source = FilesSource::open(paths, projected).map_err(|e| e.to_string())?;
    let function = two_pass_function(engine, global, Box::new(source))?;
    if stamps(paths)? != before {
        return Err(
            "an input file changed (size or modification time) during pass 1 of \
             sql_windows=\"global\""
                .into(),
        );
    }
    Ok(function)
}
