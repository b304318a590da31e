//! SIGINT, SIGTERM and SIGHUP: the first stops the running pipeline cleanly (its stream
//! ends, the open part is closed, the manifest says "stopped"); a second one exits at once.
//! The handler is installed once per process; commands register the pipeline to stop.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};

use sluice::StreamingDataPipeline;

use crate::error::EXIT_INTERRUPTED;

static INTERRUPTED: AtomicBool = AtomicBool::new(false);
static CURRENT: Mutex<Option<Weak<StreamingDataPipeline>>> = Mutex::new(None);
/// A stream's drain: when set, the first signal calls it instead of stopping the pipeline.
type Drain = Box<dyn Fn() + Send>;
static DRAIN: Mutex<Option<Drain>> = Mutex::new(None);

/// Installs the handler; an error only means signals kill the process the usual way.
pub fn install() -> Result<(), ctrlc::Error> {
    ctrlc::set_handler(|| {
        if INTERRUPTED.swap(true, Ordering::SeqCst) {
            eprintln!("sluice: second signal, exiting now");
            std::process::exit(i32::from(EXIT_INTERRUPTED));
        }
        if let Some(drain) = DRAIN.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            eprintln!("sluice: draining: what was read is committed and acknowledged (signal again to exit at once)");
            drain();
            return;
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

/// Makes the first signal call `drain` (a stream stops reading and finishes what it read);
/// if a signal came already, calls it now.
pub fn on_signal_drain(drain: impl Fn() + Send + 'static) {
    if interrupted() {
        drain();
    }
    *DRAIN.lock().unwrap_or_else(|p| p.into_inner()) = Some(Box::new(drain));
}
