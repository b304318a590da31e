//! Helpers for the command's tests: the binary, small generated inputs in every format,
//! and reading an output folder back (parts in manifest order) with arrow and parquet.
#![allow(dead_code)]

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command as StdCommand, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{Array, ArrayRef, Float64Array, Int64Array, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use parquet::file::properties::WriterProperties;
use serde_json::Value;

pub type TestResult<T = ()> = Result<T, Box<dyn std::error::Error>>;

/// The `sluice` binary under test, with assert_cmd's conveniences.
pub fn sluice() -> assert_cmd::Command {
    assert_cmd::Command::new(env!("CARGO_BIN_EXE_sluice"))
}

/// The binary as a plain child process (for tests that signal it).
pub fn spawn(args: &[&str]) -> TestResult<Child> {
    Ok(StdCommand::new(env!("CARGO_BIN_EXE_sluice"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?)
}

pub fn ids_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("x", DataType::Float64, false),
        Field::new("name", DataType::Utf8, false),
    ]))
}

/// Rows `range` of the `ids` table: id, x = id / 4, name = "n{id}".
pub fn ids_batch(range: std::ops::Range<i64>) -> TestResult<RecordBatch> {
    let ids: Vec<i64> = range.collect();
    let x: ArrayRef = Arc::new(Float64Array::from_iter_values(
        ids.iter().map(|&i| i as f64 / 4.0),
    ));
    let name: ArrayRef = Arc::new(StringArray::from_iter_values(
        ids.iter().map(|i| format!("n{i}")),
    ));
    Ok(RecordBatch::try_new(
        ids_schema(),
        vec![Arc::new(Int64Array::from(ids)), x, name],
    )?)
}

/// Writes `rows` rows of the `ids` table to `path` in the format its extension names
/// (csv, parquet, ndjson, arrow), in blocks of 10,000 rows.
pub fn write_ids(path: &Path, rows: i64) -> TestResult {
    let blocks: Vec<RecordBatch> = (0..rows)
        .step_by(10_000)
        .map(|start| ids_batch(start..(start + 10_000).min(rows)))
        .collect::<TestResult<_>>()?;
    write_batches(path, &ids_schema(), &blocks)
}

pub fn write_batches(path: &Path, schema: &SchemaRef, batches: &[RecordBatch]) -> TestResult {
    let file = File::create(path)?;
    match path.extension().and_then(|e| e.to_str()) {
        Some("csv") => {
            let mut w = arrow::csv::WriterBuilder::new()
                .with_header(true)
                .build(file);
            for b in batches {
                w.write(b)?;
            }
        }
        Some("ndjson") => {
            let mut w = arrow::json::LineDelimitedWriter::new(file);
            for b in batches {
                w.write(b)?;
            }
            w.finish()?;
        }
        Some("arrow") => {
            let mut w = arrow::ipc::writer::FileWriter::try_new(file, schema)?;
            for b in batches {
                w.write(b)?;
            }
            w.finish()?;
        }
        Some("parquet") => {
            let props = WriterProperties::builder()
                .set_max_row_group_row_count(Some(10_000))
                .build();
            let mut w = ArrowWriter::try_new(file, schema.clone(), Some(props))?;
            for b in batches {
                w.write(b)?;
            }
            w.close()?;
        }
        other => return Err(format!("no writer for {other:?}").into()),
    }
    Ok(())
}

/// The output folder's `_manifest.json`.
pub fn manifest(dir: &Path) -> TestResult<Value> {
    Ok(serde_json::from_str(&std::fs::read_to_string(
        dir.join("_manifest.json"),
    )?)?)
}

/// Part files listed in the manifest, in order.
/// The lines of every rejects dead letter the manifest of `dir` lists (malformed records
/// or messages, one JSON object each).
pub fn listed_reject_lines(dir: &Path) -> TestResult<Vec<Value>> {
    let manifest = manifest(dir)?;
    let mut lines = Vec::new();
    for letter in manifest["dead_letters"]
        .as_array()
        .ok_or("no dead_letters list")?
    {
        if letter["kind"] != "rejects" {
            continue;
        }
        let path = letter["path"]
            .as_str()
            .ok_or("a dead letter without a path")?;
        for line in std::fs::read_to_string(path)?.lines() {
            lines.push(serde_json::from_str(line)?);
        }
    }
    Ok(lines)
}

pub fn manifest_parts(dir: &Path) -> TestResult<Vec<PathBuf>> {
    let m = manifest(dir)?;
    let parts = m["parts"].as_array().ok_or("manifest has no parts array")?;
    parts
        .iter()
        .map(|p| {
            p["file"]
                .as_str()
                .map(|f| dir.join(f))
                .ok_or_else(|| "part without a file".into())
        })
        .collect()
}

/// Every batch of every part the manifest lists, in order.
pub fn read_output(dir: &Path) -> TestResult<Vec<RecordBatch>> {
    let mut out = Vec::new();
    for part in manifest_parts(dir)? {
        out.extend(read_file(&part)?);
    }
    Ok(out)
}

pub fn read_file(path: &Path) -> TestResult<Vec<RecordBatch>> {
    let file = File::open(path)?;
    Ok(match path.extension().and_then(|e| e.to_str()) {
        Some("parquet") => ParquetRecordBatchReaderBuilder::try_new(file)?
            .build()?
            .collect::<Result<_, _>>()?,
        Some("arrow") => {
            arrow::ipc::reader::FileReader::try_new(file, None)?.collect::<Result<_, _>>()?
        }
        Some("csv") => {
            let (schema, _) = arrow::csv::reader::Format::default()
                .with_header(true)
                .infer_schema(File::open(path)?, None)?;
            arrow::csv::ReaderBuilder::new(Arc::new(schema))
                .with_header(true)
                .build(file)?
                .collect::<Result<_, _>>()?
        }
        other => return Err(format!("no reader for {other:?}").into()),
    })
}

/// The Int64 column `name` of all batches, concatenated.
pub fn int_column(batches: &[RecordBatch], name: &str) -> TestResult<Vec<i64>> {
    let mut out = Vec::new();
    for b in batches {
        let col = b
            .column_by_name(name)
            .ok_or_else(|| format!("no column {name}"))?;
        let col = col
            .as_any()
            .downcast_ref::<Int64Array>()
            .ok_or_else(|| format!("column {name} is {}, not Int64", col.data_type()))?;
        out.extend((0..col.len()).map(|i| col.value(i)));
    }
    Ok(out)
}

/// The Float64 column `name` of all batches, concatenated.
pub fn float_column(batches: &[RecordBatch], name: &str) -> TestResult<Vec<f64>> {
    let mut out = Vec::new();
    for b in batches {
        let col = b
            .column_by_name(name)
            .ok_or_else(|| format!("no column {name}"))?;
        let col = col
            .as_any()
            .downcast_ref::<Float64Array>()
            .ok_or_else(|| format!("column {name} is {}, not Float64", col.data_type()))?;
        out.extend((0..col.len()).map(|i| col.value(i)));
    }
    Ok(out)
}

/// Files in `dir` whose names look like complete parts, and temporaries.
pub fn part_files(dir: &Path) -> TestResult<(Vec<String>, Vec<String>)> {
    let mut parts = Vec::new();
    let mut temporaries = Vec::new();
    if !dir.exists() {
        return Ok((parts, temporaries));
    }
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if name.starts_with("part-") {
            parts.push(name);
        } else if name.ends_with(".tmp") {
            temporaries.push(name);
        }
    }
    parts.sort();
    Ok((parts, temporaries))
}

/// Asserts the exit code and that stderr is one `error: ` line; returns that line.
pub fn one_line_error(output: &std::process::Output, code: i32) -> String {
    let err = stderr_of(output);
    assert_eq!(output.status.code(), Some(code), "{err}");
    assert!(
        err.starts_with("error: ") && err.lines().count() == 1,
        "not one error line: {err}"
    );
    err
}

/// Asserts that `dir` holds no temporary file and exactly the part files the manifest lists.
pub fn assert_only_listed_parts(dir: &Path, manifest: &Value) -> TestResult {
    let (parts, temporaries) = part_files(dir)?;
    assert!(temporaries.is_empty(), "temporaries left: {temporaries:?}");
    let listed: Vec<&str> = manifest["parts"]
        .as_array()
        .ok_or("parts")?
        .iter()
        .filter_map(|p| p["file"].as_str())
        .collect();
    assert_eq!(parts, listed, "part files differ from the manifest's list");
    Ok(())
}

/// Waits until `ready` is true, polling every 10 ms, for at most `limit`.
pub fn wait_until(limit: Duration, mut ready: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if ready() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

/// Number of parts the manifest in `dir` lists right now (0 while it cannot be read).
pub fn listed_parts(dir: &Path) -> usize {
    manifest(dir)
        .ok()
        .and_then(|m| m["parts"].as_array().map(Vec::len))
        .unwrap_or(0)
}

pub fn stderr_of(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

pub fn stdout_of(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn path_str(p: &Path) -> &str {
    p.to_str().unwrap_or_default()
}

/// A per-chunk query quadratic in the chunk's rows (a self-join of every row with the rows
/// before it): with `--fixed-chunks` each chunk's cost is set by the chunk size, not by how
/// fast the machine reads, so a test that catches a run midway (a part listed, /metrics
/// answering) knows the chunks still to come take long compared with its own reaction.
/// `r` is the row's position in its chunk plus one, so the output can be checked.
pub const SLOW_SQL: &str = "SELECT a.id, COUNT(*) AS r FROM chunk a JOIN chunk b ON b.id <= a.id \
     GROUP BY a.id ORDER BY a.id";

/// Rows per chunk for [`SLOW_SQL`] runs: ~8M joined rows a chunk, a few hundred ms of
/// CPU even for DataFusion optimized.
pub const SLOW_CHUNK: &str = "4000";

pub fn slow_chunk_rows() -> i64 {
    SLOW_CHUNK.parse().unwrap_or(4000)
}

/// Asserts that `batches` are rows `0..rows` of [`SLOW_SQL`] over chunks of
/// [`SLOW_CHUNK`] rows, in order.
pub fn check_slow_output(batches: &[RecordBatch], rows: i64) -> TestResult {
    let ids = int_column(batches, "id")?;
    assert_eq!(ids.len(), rows as usize, "every row exactly once");
    assert!(
        ids.iter().enumerate().all(|(i, &id)| id == i as i64),
        "ids 0..N in order"
    );
    let r = int_column(batches, "r")?;
    let chunk = slow_chunk_rows();
    assert!(
        ids.iter().zip(&r).all(|(&id, &r)| r == id % chunk + 1),
        "each row went through the query with its own chunk"
    );
    Ok(())
}

/// Signals `pid` (Linux).
pub fn signal(pid: u32, signal: libc::c_int) -> TestResult {
    // SAFETY: kill(2) on our own child's pid has no memory-safety requirements.
    if unsafe { libc::kill(pid as libc::pid_t, signal) } != 0 {
        return Err(format!("kill: {}", std::io::Error::last_os_error()).into());
    }
    Ok(())
}

/// Stops every thread of process `pid` (SIGSTOP) and waits until the kernel shows each of
/// them stopped: from then on the process does nothing until [`thaw`], while the wall
/// clock goes on.
pub fn freeze(pid: u32) -> TestResult {
    signal(pid, libc::SIGSTOP)?;
    let stopped = || {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            return false;
        };
        tasks.filter_map(Result::ok).all(|t| {
            // A thread that ended meanwhile has no stat to read: it does nothing either.
            let Ok(stat) = std::fs::read_to_string(t.path().join("stat")) else {
                return true;
            };
            // The state follows the command name, which is in parentheses.
            stat.rsplit_once(") ")
                .and_then(|(_, rest)| rest.chars().next())
                .is_some_and(|state| matches!(state, 'T' | 't' | 'Z' | 'X'))
        })
    };
    if wait_until(Duration::from_secs(30), stopped) {
        Ok(())
    } else {
        Err(format!("process {pid} did not stop").into())
    }
}

pub fn thaw(pid: u32) -> TestResult {
    signal(pid, libc::SIGCONT)
}

/// Names of the threads of process `pid` (Linux).
pub fn thread_names(pid: u32) -> Vec<String> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .map(|name| name.trim_end().to_string())
        .collect()
}
