//! What a running job tells its face: lines for the person, the start and end of each
//! pass (where the command hangs its progress bar and signal handlers), and whether the
//! person asked it to stop. Python's callbacks, the command's progress and `/metrics` are
//! observers; a job run from code with nobody watching uses [`Quiet`].

use std::sync::Arc;

use sluice::StreamingDataPipeline;

/// The face's side of a running job. Every method has a do-nothing default.
pub trait Observer {
    /// A line for the person (the command prints it unless `--quiet`).
    fn say(&self, _text: &str) {}

    /// A detail (the command prints it with `--verbose`).
    fn note(&self, _text: &str) {}

    /// A pass of the job starts on `pipeline` (of `total_bytes` input, if known); the watch
    /// returned is told when the pass ends.
    fn pass_started(
        &self,
        _pipeline: &Arc<StreamingDataPipeline>,
        _total_bytes: Option<u64>,
        _label: &'static str,
    ) -> Box<dyn PassWatch> {
        Box::new(())
    }

    /// True when the person stopped the job (a signal): a pass that ended early then does
    /// not count as finished.
    fn interrupted(&self) -> bool {
        false
    }
}

/// Told when a pass ends (a progress bar's last line).
pub trait PassWatch {
    fn finish(&mut self) {}
}

impl PassWatch for () {}

/// Nobody watching.
#[derive(Debug, Clone, Copy, Default)]
pub struct Quiet;

impl Observer for Quiet {}
