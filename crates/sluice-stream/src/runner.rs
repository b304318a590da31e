//! Drives a broker stream into an output folder: the engine's chunks are written to part
//! files by this thread, a part is committed at `rows_per_part` rows or `commit_interval`,
//! whichever first, and after each commit the messages of the committed rows are
//! acknowledged. A stop request (SIGTERM) ends reading; what was read is processed,
//! committed and acknowledged before `run` returns.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arrow::record_batch::RecordBatch;
use crossbeam_channel::RecvTimeoutError;
use sluice::sink::{remove_temporaries, PartSink};
use sluice::{
    BoxError, Manifest, OutputFormat, OutputOptions, PartInfo, RunStatus, StreamingDataPipeline,
    StreamingStats,
};

use crate::error::{Result, StreamError};
use crate::ledger::Ledger;
use crate::source::{lock, BrokerSource, StreamControl};

/// The function run on every chunk.
pub type ChunkFn =
    Arc<dyn Fn(RecordBatch) -> std::result::Result<RecordBatch, BoxError> + Send + Sync>;

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
    /// Input rows the kept parts cover: the stream's rows go on from here.
    pub committed_rows: u64,
    pub format: OutputFormat,
}

/// Reads the folder's manifest (if any) and removes what a crash left that is not output:
/// temporary files and part files the manifest does not list.
pub fn prepare(settings: &OutputSettings) -> Result<Prepared> {
    let dir = &settings.dir;
    std::fs::create_dir_all(dir).map_err(|e| StreamError::io(dir, e))?;
    let manifest_path = dir.join(sluice::sink::manifest::MANIFEST_FILE);
    let (keep, format) = if manifest_path.exists() {
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
        (manifest.parts, manifest.format)
    } else {
        (Vec::new(), settings.format.unwrap_or_default())
    };
    remove_temporaries(dir)?;
    remove_unlisted_parts(dir, &keep)?;
    let committed_rows = keep.last().map_or(0, |p| p.input_row_end);
    Ok(Prepared {
        keep,
        committed_rows,
        format,
    })
}

/// A part renamed into place just before a crash, with the manifest not yet saying so:
/// its rows were not acknowledged and will come again, so the file must go.
fn remove_unlisted_parts(dir: &Path, keep: &[PartInfo]) -> Result<()> {
    let entries = std::fs::read_dir(dir).map_err(|e| StreamError::io(dir, e))?;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("part-") && !keep.iter().any(|p| p.file == name) {
            std::fs::remove_file(entry.path()).map_err(|e| StreamError::io(entry.path(), e))?;
        }
    }
    Ok(())
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
    /// Messages acknowledged by this run.
    pub acked: u64,
}

/// Runs `source` through `function` into the folder until the source ends (a stop
/// request or the idle limit), committing and acknowledging as it goes.
pub fn run(
    pipeline: &StreamingDataPipeline,
    source: BrokerSource,
    ledger: Arc<Mutex<Ledger>>,
    function: ChunkFn,
    prepared: Prepared,
    settings: &OutputSettings,
    control: &Arc<StreamControl>,
) -> Result<StreamSummary> {
    let output = OutputOptions::new(&settings.dir)
        .format(prepared.format)
        .rows_per_part(settings.rows_per_part)
        .resume(prepared.keep.clone(), prepared.committed_rows);
    let mut sink = PartSink::create(output, pipeline.controller().clone())?;
    let stream = pipeline.start_boxed(Box::new(source), function, None)?;
    // The engine's iterator blocks; this thread must also wake for the commit timer.
    let (tx, rx) = crossbeam_channel::bounded(1);
    let forward = std::thread::Builder::new()
        .name("sluice-stream-forward".into())
        .spawn(move || {
            for item in stream {
                if tx.send(item).is_err() {
                    break;
                }
            }
        })
        .map_err(|e| StreamError::io("thread", e))?;

    let mut deadline: Option<Instant> = None;
    let mut parts = sink.manifest().parts.len();
    let result = loop {
        let wait = deadline.map_or(Duration::from_millis(500), |d| {
            d.saturating_duration_since(Instant::now())
        });
        match rx.recv_timeout(wait) {
            Ok(Ok(chunk)) => {
                let rows = (chunk.input_rows.start, chunk.input_rows.end);
                if let Err(e) = sink.write(&chunk.batch, rows) {
                    sink.abandon_open_part();
                    break Err(e.into());
                }
                if deadline.is_none() {
                    deadline = Some(Instant::now() + settings.commit_interval);
                }
            }
            Ok(Err(e)) => break Err(e.into()),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break Ok(()),
        }
        // Checked after every chunk too: while chunks keep coming, the wait above never
        // times out, and parts grew to many times the interval (measured: 0.8 s parts at
        // a 100 ms interval under a steady 5,000 messages/s).
        if deadline.is_some_and(|d| Instant::now() >= d) {
            deadline = None;
            if let Err(e) = sink.commit() {
                break Err(e.into());
            }
        }
        if sink.manifest().parts.len() != parts {
            parts = sink.manifest().parts.len();
            // Nothing is open after a commit: the next row starts the clock again.
            deadline = None;
            if let Err(e) = acknowledge(&ledger, sink.manifest()) {
                break Err(e);
            }
        }
    };
    drop(rx);
    let _ = forward.join();
    let stats = pipeline.stats();
    let status = match &result {
        Ok(()) if control.stopping() => RunStatus::Stopped,
        Ok(()) => RunStatus::Complete,
        Err(_) => RunStatus::Failed,
    };
    let error = result.as_ref().err().map(|e| e.to_string());
    sink.finish(status, Some(stats.clone()), error)?;
    result?;
    acknowledge(&ledger, sink.manifest())?;
    let manifest = sink.manifest().clone();
    let ledger = lock(&ledger);
    Ok(StreamSummary {
        stats,
        manifest,
        messages: control.messages.load(std::sync::atomic::Ordering::Relaxed),
        malformed: control.malformed.load(std::sync::atomic::Ordering::Relaxed),
        duplicates: control
            .duplicates
            .load(std::sync::atomic::Ordering::Relaxed),
        acked: ledger.acked(),
    })
}

/// Acknowledges the messages of every row the committed parts cover.
fn acknowledge(ledger: &Mutex<Ledger>, manifest: &Manifest) -> Result<()> {
    if let Some(last) = manifest.parts.last() {
        lock(ledger).commit_through(last.input_row_end)?;
    }
    Ok(())
}
