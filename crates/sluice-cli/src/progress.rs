//! Live progress of a run, read from the pipeline's statistics on a thread of its own: an
//! indicatif bar when stderr is a terminal, a plain line every 5 seconds otherwise (logs,
//! CI), nothing with `--quiet`. It never touches stdout, which gets the final statistics.

use std::io::IsTerminal;
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use sluice::{StreamingDataPipeline, StreamingStats};

use crate::size::human_bytes;

const BAR_TICK: Duration = Duration::from_millis(200);
const LINE_EVERY: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Bar,
    Lines,
    Off,
}

impl Mode {
    /// A bar on a terminal, lines in a pipe, nothing when quiet.
    pub fn detect(quiet: bool) -> Self {
        if quiet {
            Mode::Off
        } else if std::io::stderr().is_terminal() {
            Mode::Bar
        } else {
            Mode::Lines
        }
    }
}

/// The progress thread of one run; [`Progress::finish`] (or drop) stops it.
pub struct Progress {
    stop: Option<Sender<()>>,
    handle: Option<JoinHandle<()>>,
}

impl Progress {
    /// Starts reporting; `total_bytes` is the input's size when known. Every line and the
    /// bar's message are led by `label` when it is not empty (e.g. "pass 1/2" for the two
    /// passes of `--windows global`).
    pub fn start_labelled(
        mode: Mode,
        pipeline: Arc<StreamingDataPipeline>,
        total_bytes: Option<u64>,
        label: &'static str,
    ) -> Self {
        if mode == Mode::Off {
            return Progress {
                stop: None,
                handle: None,
            };
        }
        let (stop, stopped) = mpsc::channel::<()>();
        let handle = std::thread::Builder::new()
            .name("sluice-progress".into())
            .spawn(move || {
                let tick = if mode == Mode::Bar {
                    BAR_TICK
                } else {
                    LINE_EVERY
                };
                let mut reporter = Reporter::new(mode, total_bytes, label);
                // A message or a dropped sender both mean the run is over.
                while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(tick) {
                    reporter.update(&pipeline.stats());
                }
                reporter.finish();
            })
            .ok();
        Progress {
            stop: Some(stop),
            handle,
        }
    }

    /// Stops the thread and clears the bar.
    pub fn finish(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish();
    }
}

struct Reporter {
    bar: Option<ProgressBar>,
    label: &'static str,
    total_bytes: Option<u64>,
    started: Instant,
}

impl Reporter {
    fn new(mode: Mode, total_bytes: Option<u64>, label: &'static str) -> Self {
        let bar = (mode == Mode::Bar).then(|| {
            let template = if total_bytes.is_some() {
                "{spinner} {elapsed_precise} [{wide_bar}] {bytes}/{total_bytes} ETA {eta}\n  {msg}"
            } else {
                "{spinner} {elapsed_precise} {bytes} read\n  {msg}"
            };
            let style = ProgressStyle::with_template(template)
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> ");
            let bar = ProgressBar::with_draw_target(total_bytes, ProgressDrawTarget::stderr());
            bar.set_style(style);
            bar
        });
        Reporter {
            bar,
            label,
            total_bytes,
            started: Instant::now(),
        }
    }

    fn update(&mut self, stats: &StreamingStats) {
        // Progress and its ETA count what went through the transform, not what was read:
        // the reader runs ahead by up to the read-ahead share of the budget.
        let done = match self.total_bytes {
            Some(total) => stats.input_bytes_processed.min(total),
            None => stats.input_bytes_processed,
        };
        let lead = if self.label.is_empty() {
            String::new()
        } else {
            format!("{}: ", self.label)
        };
        let detail = format!(
            "{} rows, {:.0} rows/s, chunk {} rows, memory {:.1} of {:.0} MiB, {} backpressure events",
            stats.total_rows_processed,
            stats.throughput_rows_per_second,
            stats.current_chunk_size,
            stats.tracked_memory_mb,
            stats.memory_budget_mb,
            stats.backpressure_events,
        );
        match &self.bar {
            Some(bar) => {
                bar.set_position(done);
                bar.set_message(format!("{lead}{detail}"));
            }
            None => eprintln!("progress: {lead}{}, {detail}", self.done_line(done)),
        }
    }

    /// "12.0 MiB of 40.0 MiB processed (30%), ETA 14s" for the plain lines.
    fn done_line(&self, done: u64) -> String {
        let Some(total) = self.total_bytes.filter(|&t| t > 0) else {
            return format!("{} processed", human_bytes(done));
        };
        let fraction = done as f64 / total as f64;
        let eta = if fraction > 0.0 {
            let elapsed = self.started.elapsed().as_secs_f64();
            format!("{:.0}s", elapsed * (1.0 - fraction) / fraction)
        } else {
            "unknown".into()
        };
        format!(
            "{} of {} processed ({:.0}%), ETA {eta}",
            human_bytes(done),
            human_bytes(total),
            fraction * 100.0
        )
    }

    fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}
