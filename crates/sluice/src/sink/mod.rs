//! Sinks: processed chunks written as part files (`part-00000.parquet`, ...) plus a
//! `_manifest.json`. Each part is written under a hidden temporary name and renamed only
//! when complete, so a crash never leaves a half-written part that looks complete. The
//! manifest is rewritten (atomically) whenever a part completes, and last with the final
//! status and statistics, so it always says which parts are done. Both are synced (file,
//! then folder) before anything relies on them, so a power loss keeps that true too.

mod csv;
pub mod dead_letter;
mod encode_ahead;
pub mod folder;
mod ipc;
pub mod manifest;
mod parquet;
mod writeback;

use std::fs::File;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;

use crate::backpressure::{BackpressureController, Reservation};
use crate::error::{Result, SluiceError};
use crate::stats::StreamingStats;
pub use dead_letter::{DeadLetter, LetterKind};
pub(crate) use encode_ahead::EncodedRowGroup;
use encode_ahead::RowGroupEncoder;
pub use folder::{part_files, remove_temporaries, sync_dir, FolderLock};
pub use manifest::{describe_schema, ColumnInfo, Manifest, PartInfo, RunStatus};

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

/// What a run does with a folder that already holds output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OutputMode {
    /// Refuse a folder holding a manifest or part files (the default): an earlier result
    /// is never mixed with or silently replaced by a new one.
    #[default]
    New,
    /// Remove the earlier output (parts, manifest, temporaries) first.
    Overwrite,
    /// Continue an earlier run: keep its committed parts, remove anything else it left.
    Resume,
}

/// Called after the manifest lists what a commit made output: a part closed (at
/// `rows_per_part` rows or `commit_interval`), and the final manifest of the run. What is
/// acknowledged to a broker is acknowledged here, never before. An error fails the run.
#[derive(Clone)]
pub struct CommitHook(Arc<CommitFn>);

type CommitFn = dyn Fn(&Manifest) -> Result<()> + Send + Sync;

impl CommitHook {
    pub fn new(hook: impl Fn(&Manifest) -> Result<()> + Send + Sync + 'static) -> Self {
        CommitHook(Arc::new(hook))
    }

    fn call(&self, manifest: &Manifest) -> Result<()> {
        (self.0)(manifest)
    }
}

impl std::fmt::Debug for CommitHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CommitHook")
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
    /// The input row a resumed run starts at (the end of the committed parts); the source
    /// must skip the rows before it (see [`crate::source::SkipRows`]).
    pub input_row_offset: u64,
    /// Dead letters of an earlier run's committed rows (resume): listed again.
    pub resume_dead_letters: Vec<DeadLetter>,
    pub mode: OutputMode,
    /// A part is also closed once its first row has waited this long (a live stream's
    /// parts become output at a steady pace however slowly rows come).
    pub commit_interval: Option<Duration>,
    pub on_commit: Option<CommitHook>,
    /// Record each part's columns in the manifest (parts of the folder may differ).
    pub record_part_columns: bool,
}

impl OutputOptions {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        OutputOptions {
            dir: dir.into(),
            format: OutputFormat::Parquet,
            rows_per_part: 1_000_000,
            resume_parts: Vec::new(),
            input_row_offset: 0,
            resume_dead_letters: Vec::new(),
            mode: OutputMode::New,
            commit_interval: None,
            on_commit: None,
            record_part_columns: false,
        }
    }
    pub fn format(mut self, format: OutputFormat) -> Self {
        self.format = format;
        self
    }
    pub fn record_part_columns(mut self, record: bool) -> Self {
        self.record_part_columns = record;
        self
    }
    pub fn rows_per_part(mut self, rows: u64) -> Self {
        self.rows_per_part = rows.max(1);
        self
    }
    /// Continues an earlier run: keeps its complete `parts`; the run starts at input row
    /// `input_row_offset` (the rows those parts cover, which the source must skip).
    pub fn resume(mut self, parts: Vec<PartInfo>, input_row_offset: u64) -> Self {
        self.resume_parts = parts;
        self.input_row_offset = input_row_offset;
        self.mode = OutputMode::Resume;
        self
    }
    /// Keeps listing an earlier run's dead letters of the committed rows (with [`Self::resume`]).
    pub fn keep_dead_letters(mut self, letters: Vec<DeadLetter>) -> Self {
        self.resume_dead_letters = letters;
        self
    }
    /// Closes a part once its first row waited `interval`, or at `rows_per_part` rows,
    /// whichever comes first.
    pub fn commit_interval(mut self, interval: Duration) -> Self {
        self.commit_interval = Some(interval);
        self
    }
    /// Calls `hook` after every manifest write that commits output (see [`CommitHook`]).
    pub fn on_commit(mut self, hook: CommitHook) -> Self {
        self.on_commit = Some(hook);
        self
    }
    /// Replaces whatever output the folder holds (`true`) or refuses it (`false`, the default).
    pub fn overwrite(mut self, overwrite: bool) -> Self {
        self.mode = if overwrite {
            OutputMode::Overwrite
        } else {
            OutputMode::New
        };
        self
    }
}

/// What a sink offers the workers: each chunk's output encoded ahead, on their threads,
/// into what [`PartSink::write_encoded`] appends, so that the consumer, which writes every
/// part in order on one thread, does not encode it there.
pub(crate) trait EncodeAhead: Send + Sync {
    /// `batch`, the output of chunk `seq` (input rows `rows`, named in errors), encoded;
    /// `None` when it is better left to the part writer (e.g. too few rows).
    fn encode(
        &self,
        batch: &RecordBatch,
        seq: u64,
        rows: &Range<u64>,
    ) -> Option<Result<EncodedRowGroup>>;
}

/// One open part file's encoder.
pub(crate) trait PartFileWriter: Send {
    fn write(&mut self, batch: &RecordBatch) -> Result<()>;
    /// Appends a row group a worker encoded ahead (Parquet only: no other writer's sink
    /// hands out a [`RowGroupEncoder`]).
    fn write_encoded(&mut self, _group: EncodedRowGroup) -> Result<()> {
        Err(SluiceError::Write {
            path: PathBuf::new(),
            message: "a row group encoded ahead reached a writer that is not Parquet".into(),
        })
    }
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
    /// When its first row was written: with a commit interval, it is closed by then.
    commit_by: Option<Instant>,
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
    /// Creates the folder (if needed) and prepares it by `options.mode`: refuses earlier
    /// output, clears it, or keeps a resumed run's parts; temporaries are always removed.
    pub fn create(options: OutputOptions, controller: BackpressureController) -> Result<Self> {
        std::fs::create_dir_all(&options.dir).map_err(|e| SluiceError::write(&options.dir, e))?;
        folder::prepare(&options)?;
        let next_index = options
            .resume_parts
            .iter()
            .filter_map(|p| folder::part_index(&p.file))
            .max()
            .map_or(0, |i| i + 1);
        let mut manifest = Manifest::new(options.format);
        manifest.parts = options.resume_parts.clone();
        manifest.dead_letters = options.resume_dead_letters.clone();
        // Parquet row groups are flushed at an eighth of the budget, at most 8 MiB (~180k
        // rows of the seed's 9 columns). Measured: 32 MiB row groups made a 10M-row run
        // take 4x the page faults (the freed buffers go back to the kernel each time) and
        // ~50 MB more RSS, for no gain in speed.
        let flush_bytes = (controller.budget_bytes() / 8).min(8 << 20);
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
        self.after_write(batch.num_rows() as u64, input_rows)
    }

    /// Counts a written chunk in the open part, and closes the part once it is full.
    fn after_write(&mut self, rows: u64, input_rows: (u64, u64)) -> Result<()> {
        let Some(part) = self.current.as_mut() else {
            return Ok(());
        };
        part.rows += rows;
        part.input_rows.1 = input_rows.1;
        let buffered = part.writer.buffered_bytes();
        let due = part.commit_by.is_some_and(|by| Instant::now() >= by);
        let full = part.rows >= self.options.rows_per_part || due;
        self.buffer_reservation.resize(buffered);
        if full {
            self.close_part()?;
        }
        Ok(())
    }

    /// An encoder for workers to turn chunks' outputs into this sink's row groups ahead
    /// of [`Self::write_encoded`]; `None` when the parts are not Parquet.
    pub(crate) fn row_group_encoder(&self) -> Option<Arc<dyn EncodeAhead>> {
        (self.options.format == OutputFormat::Parquet)
            .then(|| Arc::new(RowGroupEncoder::new(&self.options.dir)) as Arc<dyn EncodeAhead>)
    }

    /// Writes one chunk, encoded ahead by a [`RowGroupEncoder`], that covers `input_rows`.
    pub(crate) fn write_encoded(
        &mut self,
        group: EncodedRowGroup,
        input_rows: (u64, u64),
    ) -> Result<()> {
        if self.options.format != OutputFormat::Parquet {
            return Err(SluiceError::write(
                &self.options.dir,
                "a Parquet row group was encoded for parts of another format",
            ));
        }
        let schema_changed = self
            .current
            .as_ref()
            .is_some_and(|p| p.schema.fields() != group.schema.fields());
        if schema_changed {
            self.close_part()?;
        }
        if self.current.is_none() {
            self.open_part(group.schema.clone(), input_rows.0)?;
        }
        let part = self.current.as_mut().expect("opened above");
        let rows = group.rows as u64;
        part.writer.write_encoded(group)?;
        self.after_write(rows, input_rows)
    }

    /// Lists dead letters written for the rows handled so far; the manifest lists them from
    /// its next write on.
    pub fn record_dead_letters(&mut self, letters: &[DeadLetter]) {
        self.manifest.dead_letters.extend_from_slice(letters);
    }

    /// Records input rows that produced no output (skipped chunks) in the current part.
    pub fn skip_input(&mut self, input_rows: (u64, u64)) {
        if let Some(part) = self.current.as_mut() {
            part.input_rows.1 = input_rows.1;
        }
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
            commit_by: self.options.commit_interval.map(|i| Instant::now() + i),
        });
        Ok(())
    }

    /// When the open part must be closed by its commit interval, if there is one.
    pub fn commit_due(&self) -> Option<Instant> {
        self.current.as_ref().and_then(|p| p.commit_by)
    }

    fn close_part(&mut self) -> Result<()> {
        let Some(part) = self.current.take() else {
            return Ok(());
        };
        self.buffer_reservation.resize(0);
        let final_path = self.options.dir.join(&part.file_name);
        let committed = part.writer.finish().and_then(|()| {
            std::fs::rename(&part.tmp_path, &final_path)
                .map_err(|e| SluiceError::write(&final_path, e))
        });
        if let Err(e) = committed {
            // Whatever failed, the temporary is not output.
            let _ = std::fs::remove_file(&part.tmp_path);
            return Err(e);
        }
        // The part's data was synced by `finish`; its new name is durable once the folder
        // is, which must hold before the manifest (synced too) lists it.
        folder::sync_dir(&self.options.dir)?;
        crate::failpoint::hit("after-part-rename");
        let bytes = std::fs::metadata(&final_path).map(|m| m.len()).unwrap_or(0);
        self.manifest.schema = manifest::describe_schema(&part.schema);
        self.manifest.parts.push(PartInfo {
            file: part.file_name,
            rows: part.rows,
            input_row_start: part.input_rows.0,
            input_row_end: part.input_rows.1,
            bytes,
            columns: self
                .options
                .record_part_columns
                .then(|| manifest::describe_schema(&part.schema)),
        });
        self.write_manifest()?;
        crate::failpoint::hit("after-manifest-rename");
        self.committed()
    }

    /// Tells the commit hook what the manifest now lists.
    fn committed(&self) -> Result<()> {
        match &self.options.on_commit {
            Some(hook) => hook.call(&self.manifest),
            None => Ok(()),
        }
    }

    fn write_manifest(&self) -> Result<()> {
        self.manifest.write_to(&self.options.dir)
    }

    /// Closes the open part now, if any (a stream also commits on a timer).
    pub fn commit(&mut self) -> Result<()> {
        self.close_part()
    }

    /// Writes the final manifest. A complete or stopped run commits its open part first
    /// (its chunks are a finished prefix of the output); a failed run drops it, so nothing
    /// it had not committed before the failure becomes output.
    pub fn finish(
        &mut self,
        status: RunStatus,
        stats: Option<StreamingStats>,
        error: Option<String>,
    ) -> Result<()> {
        let closed = if status == RunStatus::Failed {
            self.abandon_open_part();
            Ok(())
        } else {
            self.close_part()
        };
        if let Err(e) = closed {
            self.manifest.status = RunStatus::Failed;
            self.manifest.stats = stats;
            self.manifest.error = Some(e.to_string());
            self.write_manifest()?;
            return Err(e);
        }
        self.manifest.status = status;
        self.manifest.stats = stats;
        self.manifest.error = error;
        self.write_manifest()?;
        self.committed()
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
