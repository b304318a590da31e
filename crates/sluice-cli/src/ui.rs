//! How the command talks to the person running it: lines on stderr (`--quiet`,
//! `--verbose`), and the job layer's observer, which gives every pass a progress bar and
//! the signal handlers that stop it.

use std::sync::Arc;

use sluice::StreamingDataPipeline;
use sluice_job::{Observer, PassWatch};

use crate::progress::{self, Progress};
use crate::signals;

#[derive(Debug, Clone, Copy)]
pub struct Ui {
    pub quiet: bool,
    pub verbose: bool,
}

impl Ui {
    /// A note on stderr, shown with `--verbose` only.
    pub fn note(&self, text: impl AsRef<str>) {
        if self.verbose && !self.quiet {
            eprintln!("sluice: {}", text.as_ref());
        }
    }

    /// A line on stderr unless `--quiet`.
    pub fn say(&self, text: impl AsRef<str>) {
        if !self.quiet {
            eprintln!("sluice: {}", text.as_ref());
        }
    }
}

impl Observer for Ui {
    fn say(&self, text: &str) {
        Ui::say(self, text);
    }

    fn note(&self, text: &str) {
        Ui::note(self, text);
    }

    fn pass_started(
        &self,
        pipeline: &Arc<StreamingDataPipeline>,
        total_bytes: Option<u64>,
        label: &'static str,
    ) -> Box<dyn PassWatch> {
        signals::watch(pipeline);
        Box::new(Progress::start_labelled(
            progress::Mode::detect(self.quiet),
            pipeline.clone(),
            total_bytes,
            label,
        ))
    }

    fn interrupted(&self) -> bool {
        signals::interrupted()
    }
}

impl PassWatch for Progress {
    fn finish(&mut self) {
        Progress::finish(self);
    }
}
