//! Drives a broker stream into an output folder through the engine's own part sink: a
//! part is committed at `rows_per_part` rows or `commit_interval`, whichever first, and the
//! sink's commit hook acknowledges the messages of the committed rows (and the malformed
//! ones whose dead letters the manifest now lists). A stop request (SIGTERM) ends reading;
//! what was read is processed, committed and acknowledged before `run` returns.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use sluice::sink::{CommitHook, FolderLock};
use sluice::{
    BoxError, DeadLetter, Manifest, OutputFormat, OutputOptions, PartInfo, RunStatus, SluiceError,
    StreamingDataPipeline, StreamingStats,
};

use crate::error::{Result, StreamError};
use crate::ledger::Ledger;
use crate::schema::StreamSchema;
use crate::source::{lock, BrokerSource, SourceOptions, StreamControl};
use sluice::Source;

/// The function run on every chunk.
pub type ChunkFn =
    Arc<dyn Fn(RecordBatch) -> std::result::Result<RecordBatch, BoxError> + Send + Sync>;

/// Makes the chunk function for the stream's columns (again when they grow).
pub type PlanFn<'a> = &'a dyn Fn(SchemaRef) -> std::result::Result<ChunkFn, BoxError>;

/// Where and how the stream is written.
#[derive(Debug, Clone)]
pub struct OutputSettings {
    pub dir: PathBuf,
    /// `None`: the earlier run's format, or Parquet.
    pub format: Option<OutputFormat>,
    pub rows_per_part: u64,
    pub commit_interval: Duration,
}

/// What an earlier run of the stream left in the folder.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub keep: Vec<PartInfo>,
    /// Dead letters of the committed rows, listed again by this run's manifest (those of
    /// rows after them are of messages that were not acknowledged and come again).
    pub dead_letters: Vec<DeadLetter>,
    /// Input rows the kept parts cover: the stream's rows go on from here.
    pub committed_rows: u64,
    pub format: OutputFormat,
    /// The columns an earlier run used (its `_stream_schema.json`, or its manifest's).
    pub stored: Option<StreamSchema>,
    /// The folder's writer lock, held while any copy of this is alive (the run's life).
    pub lock: Arc<FolderLock>,
}

/// Reads the folder's manifest (if any): the parts an earlier run committed. What a crash
/// left that is not output (temporaries, parts the manifest does not list) is removed by
/// the sink when the run starts, as for every run that resumes.
pub fn prepare(settings: &OutputSettings) -> Result<Prepared> {
    let dir = &settings.dir;
    // Before anything is read or removed: a second writer (a supervisor restarting a
    // stream while the old one drains) would delete the first one's parts and ledger.
    let lock = Arc::new(FolderLock::acquire(dir)?);
    let manifest_path = dir.join(sluice::sink::manifest::MANIFEST_FILE);
    let (keep, format, letters, columns) = if manifest_path.exists() {
        let manifest = Manifest::read_from(dir)?;
        if let Some(format) = settings.format {
            if format != manifest.format && !manifest.parts.is_empty() {
                return Err(StreamError::Output {
                    dir: dir.clone(),
                    reason: format!(
                        "its parts are {}, not {}; drop --output-format",
                        manifest.format.extension(),
                        format.extension()
                    ),
                });
            }
        }
        (
            manifest.parts,
            manifest.format,
            manifest.dead_letters,
            manifest.schema,
        )
    } else {
        (
            Vec::new(),
            settings.format.unwrap_or_default(),
            Vec::new(),
            Vec::new(),
        )
    };
    let stored = StreamSchema::stored(dir, &columns)?;
    let committed_rows = keep.last().map_or(0, |p| p.input_row_end);
    let dead_letters = letters
        .into_iter()
        .filter(|l| l.input_rows.end <= committed_rows)
        .collect();
    Ok(Prepared {
        keep,
        dead_letters,
        committed_rows,
        format,
        stored,
        lock,
    })
}

/// What a stream run did.
#[derive(Debug, Clone)]
pub struct StreamSummary {
    pub stats: StreamingStats,
    pub manifest: Manifest,
    /// Messages that became rows in this run.
    pub messages: u64,
    pub malformed: u64,
    /// Deliveries dropped because their message was already committed or in hand.
    pub duplicates: u64,
    /// Messages acknowledged by this run (confirmed by the broker).
    pub acked: u64,
    /// What the acknowledgements came to: retries, and those never confirmed (the broker
    /// may deliver them again; a committed one is then dropped as a duplicate).
    pub acks: crate::broker::AckReport,
    /// Messages an earlier instance held uncommitted, handed back at the start.
    pub released: u64,
    /// Times the inferred columns grew (each starts a part with the new columns).
    pub schema_changes: u64,
    /// The columns the stream ended with.
    pub schema: SchemaRef,
}

/// Runs `source` through the chunk function `plan` makes for its columns into the folder
/// until the source ends (a stop request or the idle limit), committing and acknowledging
/// as it goes. When the inferred columns must grow, the run ends and the next one goes on
/// with the grown columns (its parts say so in the manifest), the stream never paused.
#[allow(clippy::too_many_arguments)]
pub fn run(
    pipeline: &StreamingDataPipeline,
    mut source: BrokerSource,
    ledger: Arc<Mutex<Ledger>>,
    plan: PlanFn<'_>,
    prepared: Prepared,
    settings: &OutputSettings,
    options: &SourceOptions,
    control: &Arc<StreamControl>,
) -> Result<StreamSummary> {
    let mut keep = prepared.keep.clone();
    let mut first_row = prepared.committed_rows;
    let mut dead_letters = prepared.dead_letters.clone();
    let mut schema_changes = 0u64;
    loop {
        // Kept before any part has these columns, so a restart goes on with them.
        source.typing().store(&settings.dir)?;
        let schema = source.schema();
        let function = plan(schema.clone()).map_err(|e| StreamError::Output {
            dir: settings.dir.clone(),
            reason: format!("the query cannot run on the stream's columns: {e}"),
        })?;
        let handoff = source.handoff();
        let hook_ledger = ledger.clone();
        let on_commit = CommitHook::new(move |manifest: &Manifest| {
            acknowledge(&hook_ledger, manifest).map_err(|e| SluiceError::Source {
                source_name: "ledger".into(),
                message: format!("acknowledging committed messages: {e}"),
            })
        });
        let output = OutputOptions::new(&settings.dir)
            .format(prepared.format)
            .rows_per_part(settings.rows_per_part)
            .resume(keep, first_row)
            .keep_dead_letters(dead_letters)
            .commit_interval(settings.commit_interval)
            .record_part_columns(true)
            .on_commit(on_commit);
        let result = pipeline
            .start_boxed(Box::new(source), function, Some(output))
            .and_then(|stream| stream.run_to_end());
        // A failed run's manifest says `failed` and lists what it committed.
        let summary = result?;
        let mut manifest = summary
            .manifest
            .unwrap_or_else(|| Manifest::new(prepared.format));
        let next = lock(&handoff).take();
        if let Some(next) = next {
            schema_changes += 1;
            keep = manifest.parts.clone();
            dead_letters = manifest.dead_letters.clone();
            first_row = next.next_row();
            source = BrokerSource::resume(next, ledger.clone(), options.clone(), control.clone());
            continue;
        }
        if control.stopping() && manifest.status == RunStatus::Complete {
            // Ended by a stop request, not by its input: every message read is committed
            // and acknowledged, but the stream goes on.
            manifest.status = RunStatus::Stopped;
            manifest.write_to(&settings.dir)?;
        }
        let ledger = lock(&ledger);
        return Ok(StreamSummary {
            stats: summary.stats,
            manifest,
            messages: control.messages.load(std::sync::atomic::Ordering::Relaxed),
            malformed: control.malformed.load(std::sync::atomic::Ordering::Relaxed),
            duplicates: control
                .duplicates
                .load(std::sync::atomic::Ordering::Relaxed),
            acked: ledger.acked(),
            acks: ledger.ack_report(),
            released: ledger.released(),
            schema_changes,
            schema,
        });
    }
}

/// Acknowledges the messages of every row the committed parts cover and the malformed
/// ones set aside before them; once the run has handled all it read (`complete`: a drain
/// after a stop request ends so too, and its manifest lists every dead letter), every
/// malformed one. A run the engine stopped early (`stopped`) may not have handled the
/// chunks carrying some rejects: those stay unacknowledged and come again.
fn acknowledge(ledger: &Mutex<Ledger>, manifest: &Manifest) -> Result<()> {
    let mut ledger = lock(ledger);
    if manifest.status == RunStatus::Complete {
        // Every row the run read is in a listed part or a listed dead letter (a failed
        // chunk after the last part included).
        ledger.commit_through(u64::MAX)?;
        ledger.release_malformed()?;
    } else if let Some(last) = manifest.parts.last() {
        ledger.commit_through(last.input_row_end)?;
    }
    Ok(())
}
