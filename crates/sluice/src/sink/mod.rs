//! Sinks: processed chunks written as part files (`part-00000.parquet`, ...) plus a
//! `_manifest.json`. Each part is written under a hidden temporary name and renamed only
//! when complete, so a crash never leaves a half-written part that looks complete. The
//! manifest is rewritten (atomically) whenever a part completes, and last with the final
//! status and statistics, so it always says which parts are done.

mod csv;
mod ipc;
pub mod manifest;
mod parquet;

use std::fs::File;
use std::path::{Path, PathBuf};

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;

use crate::backpressure::{BackpressureController, Reservation};
use crate::error::{Result, SluiceError};
use crate::stats::StreamingStats;
pub use manifest::{Manifest, PartInfo, RunStatus};

/// File format of the part files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputFormat {
    #[default]
    Parquet,
    Csv,
    Ipc,
}

impl OutputFormat {
    pub fn extension(self) -> &'static str {
        match self {
            OutputFormat::Parquet => "parquet",
            OutputFormat::Csv => "csv",
            OutputFormat::Ipc => "arrow",
        }
    }

    pub fn from_name(name: &str) -> Result<Self> {
        match name.to_ascii_lowercase().as_str() {
            "parquet" | "pq" => Ok(OutputFormat::Parquet),
            "csv" => Ok(OutputFormat::Csv),
            "ipc" | "arrow" | "feather" => Ok(OutputFormat::Ipc),
            other => Err(SluiceError::InvalidSetting {
                setting: "output_format",
                reason: format!("unknown output format {other:?}; expected parquet, csv or ipc"),
            }),
        }
    }
}

/// Where and how a run writes its output.
#[derive(Debug, Clone)]
pub struct OutputOptions {
    pub dir: PathBuf,
    pub format: OutputFormat,
    /// A part is closed once it holds at least this many rows.
    pub rows_per_part: u64,
    /// Parts already complete from an earlier run (resume): kept, and numbering goes on.
    pub resume_parts: Vec<PartInfo>,
    /// Added to the input rows recorded in the manifest: the rows a resumed run skipped,
    /// so the ranges stay those of the whole input.
    pub input_row_offset: u64,
}

impl OutputOptions {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        OutputOptions {
            dir: dir.into(),
            format: OutputFormat::Parquet,
            rows_per_part: 1_000_000,
            resume_parts: Vec::new(),
            input_row_offset: 0,
        }
    }
    pub fn format(mut self, format: OutputFormat) -> Self {
        self.format = format;
        self
    }
    pub fn rows_per_part(mut self, rows: u64) -> Self {
        self.rows_per_part = rows.max(1);
        self
    }
    /// Continues an earlier run: keeps its complete `parts` and records input rows from
    /// `input_row_offset` on (the rows those parts cover, which the source must skip).
    pub fn resume(mut self, parts: Vec<PartInfo>, input_row_offset: u64) -> Self {
        self.resume_parts = parts;
        self.input_row_offset = input_row_offset;
        self
    }
}

/// One open part file's encoder.
pub(crate) trait PartFileWriter: Send {
    fn write(&mut self, batch: &RecordBatch) -> Result<()>;
    /// Bytes the encoder holds in memory.
    fn buffered_bytes(&self) -> u64;
    fn finish(self: Box<Self>) -> Result<()>;
}

struct OpenPart {
    writer: Box<dyn PartFileWriter>,
    tmp_path: PathBuf,
    file_name: String,
    schema: SchemaRef,
    rows: u64,
    input_rows: (u64, u64),
}

/// Writes chunks into rolling part files and keeps the manifest.
pub struct PartSink {
    options: OutputOptions,
    buffer_reservation: Reservation,
    flush_bytes: u64,
    current: Option<OpenPart>,
    manifest: Manifest,
    next_index: usize,
}

impl PartSink {
    /// Creates the folder (if needed) and removes temporary files of an earlier crashed run.
    pub fn create(options: OutputOptions, controller: BackpressureController) -> Result<Self> {
        std::fs::create_dir_all(&options.dir).map_err(|e| SluiceError::write(&options.dir, e))?;
        remove_temporaries(&options.dir)?;
        let next_index = options
            .resume_parts
            .iter()
            .filter_map(|p| part_index(&p.file))
            .max()
            .map_or(0, |i| i + 1);
        let mut manifest = Manifest::new(options.format);
        manifest.parts = options.resume_parts.clone();
        // Parquet row groups are flushed at an eighth of the budget (at most 64 MiB).
        let flush_bytes = (controller.budget_bytes() / 8).min(64 << 20);
        let buffer_reservation = controller.reserve_unchecked(0, false);
        let sink = PartSink {
            options,
            buffer_reservation,
            flush_bytes,
            current: None,
            manifest,
            next_index,
        };
        sink.write_manifest()?;
        Ok(sink)
    }

    pub fn dir(&self) -> &Path {
        &self.options.dir
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// Writes one chunk that covers `input_rows` of the input.
    pub fn write(&mut self, batch: &RecordBatch, input_rows: (u64, u64)) -> Result<()> {
        let input_rows = self.absolute(input_rows);
        let schema_changed = self
            .current
            .as_ref()
            .is_some_and(|p| p.schema.fields() != batch.schema().fields());
        if schema_changed {
            // e.g. a pass-through chunk amid transformed ones: a part holds one schema.
            self.close_part()?;
        }
        if self.current.is_none() {
            self.open_part(batch.schema(), input_rows.0)?;
        }
        let part = self.current.as_mut().expect("opened above");
        part.writer.write(batch)?;
        part.rows += batch.num_rows() as u64;
        part.input_rows.1 = input_rows.1;
        let buffered = part.writer.buffered_bytes();
        let full = part.rows >= self.options.rows_per_part;
        self.buffer_reservation.resize(buffered);
        if full {
            self.close_part()?;
        }
        Ok(())
    }

    /// Records input rows that produced no output (skipped chunks) in the current part.
    pub fn skip_input(&mut self, input_rows: (u64, u64)) {
        let input_rows = self.absolute(input_rows);
        if let Some(part) = self.current.as_mut() {
            part.input_rows.1 = input_rows.1;
        }
    }

    fn absolute(&self, (start, end): (u64, u64)) -> (u64, u64) {
        let offset = self.options.input_row_offset;
        (start + offset, end + offset)
    }

    fn open_part(&mut self, schema: SchemaRef, first_input_row: u64) -> Result<()> {
        let file_name = format!(
            "part-{:05}.{}",
            self.next_index,
            self.options.format.extension()
        );
        let tmp_path = self.options.dir.join(format!(".{file_name}.tmp"));
        let file = File::create(&tmp_path).map_err(|e| SluiceError::write(&tmp_path, e))?;
        let writer: Box<dyn PartFileWriter> = match self.options.format {
            OutputFormat::Parquet => Box::new(parquet::ParquetPartWriter::create(
                &tmp_path,
                file,
                schema.clone(),
                self.flush_bytes,
            )?),
            OutputFormat::Csv => Box::new(csv::CsvPartWriter::create(&tmp_path, file)),
            OutputFormat::Ipc => {
                Box::new(ipc::IpcPartWriter::create(&tmp_path, file, schema.clone())?)
            }
        };
        self.next_index += 1;
        self.current = Some(OpenPart {
            writer,
            tmp_path,
            file_name,
            schema,
            rows: 0,
            input_rows: (first_input_row, first_input_row),
        });
        Ok(())
    }

    fn close_part(&mut self) -> Result<()> {
        let Some(part) = self.current.take() else {
            return Ok(());
        };
        part.writer.finish()?;
        self.buffer_reservation.resize(0);
        let final_path = self.options.dir.join(&part.file_name);
        std::fs::rename(&part.tmp_path, &final_path)
            .map_err(|e| SluiceError::write(&final_path, e))?;
        let bytes = std::fs::metadata(&final_path).map(|m| m.len()).unwrap_or(0);
        self.manifest.schema = manifest::describe_schema(&part.schema);
        self.manifest.parts.push(PartInfo {
            file: part.file_name,
            rows: part.rows,
            input_row_start: part.input_rows.0,
            input_row_end: part.input_rows.1,
            bytes,
        });
        self.write_manifest()
    }

    fn write_manifest(&self) -> Result<()> {
        self.manifest.write_to(&self.options.dir)
    }

    /// Closes the open part now, if any (a stream also commits on a timer).
    pub fn commit(&mut self) -> Result<()> {
        self.close_part()
    }

    /// Closes the open part and writes the final manifest.
    pub fn finish(
        &mut self,
        status: RunStatus,
        stats: Option<StreamingStats>,
        error: Option<String>,
    ) -> Result<()> {
        self.close_part()?;
        self.manifest.status = status;
        self.manifest.stats = stats;
        self.manifest.error = error;
        self.write_manifest()
    }

    /// Drops the open part's temporary file (its writer failed); the manifest is kept.
    pub fn abandon_open_part(&mut self) {
        if let Some(part) = self.current.take() {
            drop(part.writer);
            let _ = std::fs::remove_file(&part.tmp_path);
        }
        self.buffer_reservation.resize(0);
    }
}

impl Drop for PartSink {
    fn drop(&mut self) {
        // Never leave a temporary behind: a part that was not finished is not output.
        self.abandon_open_part();
    }
}

fn part_index(file: &str) -> Option<usize> {
    file.strip_prefix("part-")?.split('.').next()?.parse().ok()
}

/// Removes `.part-*.tmp` files left by a crashed run.
pub fn remove_temporaries(dir: &Path) -> Result<()> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with(".part-") && name.ends_with(".tmp") {
            std::fs::remove_file(entry.path()).map_err(|e| SluiceError::write(entry.path(), e))?;
        }
    }
    Ok(())
}
