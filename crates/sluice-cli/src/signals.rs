//! SIGINT, SIGTERM and SIGHUP: the first stops the running pipeline cleanly (its stream
//! ends, the open part is closed, the manifest says "stopped"); a second one exits at once.
//! The handler is installed once per process; commands register the pipeline to stop.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};

use sluice::StreamingDataPipeline;

use crate::error::EXIT_INTERRUPTED;

static INTERRUPTED: AtomicBool = AtomicBool::new(false);
static CURRENT: Mutex<Option<Weak<StreamingDataPipeline>>> = Mutex::new(None);

/// Installs the handler; an error only means signals kill the process the usual way.
pub fn install() -> Result<(), ctrlc::Error> {
    ctrlc::set_handler(|| {
        if INTERRUPTED.swap(true, Ordering::SeqCst) {
            eprintln!("sluice: second signal, exiting now");
            std::process::exit(i32::from(EXIT_INTERRUPTED));
        }
        eprintln!("sluice: stopping (completed parts are kept; signal again to exit at once)");
        stop_current();
    })
}

fn stop_current() {
    let current = CURRENT.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(pipeline) = current.as_ref().and_then(Weak::upgrade) {
        pipeline.stop();
    }
}

/// True once a signal asked the process to stop.
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// Makes `pipeline` the one a signal stops; if a signal came already, stops it now.
pub fn watch(pipeline: &Arc<StreamingDataPipeline>) {
    *CURRENT.lock().unwrap_or_else(|p| p.into_inner()) = Some(Arc::downgrade(pipeline));
    if interrupted() {
        pipeline.stop();
    }
}
