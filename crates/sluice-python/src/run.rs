//! One run of the engine as a Python iterator.
//!
//! The engine's `ChunkStream` blocks while it waits for the next chunk in order, and it
//! writes part files as it goes. Neither may happen with the GIL held, and a waiting caller
//! must still see Ctrl-C. So a *pump* thread drives the stream and passes each chunk over a
//! bounded channel (one chunk ahead); `__next__` waits on that channel with the GIL
//! released, 50 ms at a time, running Python's signal handlers in between. While it waits
//! it also runs the calls of the user's function that workers hand over (`lane.rs`).
//!
//! Stopping: dropping or closing the iterator disconnects the channel, so the pump drops
//! the stream, which stops the run's threads and removes temporary files. Ctrl-C stops the
//! pipeline's runs, waits a little for the pump to finish, and raises `KeyboardInterrupt`.
//! Nothing here ever joins a thread with the GIL held: a worker may be waiting for the GIL
//! to finish its chunk.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use pyo3::exceptions::PyKeyboardInterrupt;
use pyo3::prelude::*;
use pyo3::types::PyTuple;
use sluice::{
    ChunkStream, Deliveries, ProcessedChunk, SluiceError as EngineError, StreamingDataPipeline,
};

use crate::arrow_io::batch_to_pyarrow;
use crate::errors::{self, ErrorStore};
use crate::function::{PyFunction, Stash};
use crate::lane::{CallerLane, LaneCall};

/// How long `__next__` waits before it looks at signals again.
const POLL: Duration = Duration::from_millis(50);
/// How long Ctrl-C waits for the run's threads to finish their chunks.
const INTERRUPT_GRACE: Duration = Duration::from_secs(5);

enum Msg {
    Chunk(sluice::Result<ProcessedChunk>),
    /// A check at the end of the run failed (an input changed under pass 2): `ValueError`.
    Failed(String),
    End,
}

/// A check run once every chunk was handed over; its error fails the run at its end.
pub type AtEnd = Box<dyn FnOnce() -> Result<(), String> + Send>;

/// What a run carries besides its stream.
#[derive(Default)]
pub struct RunExtras {
    /// A push stream's deliveries (for end-to-end latency).
    pub deliveries: Option<Deliveries>,
    /// Kept until the run's stream is dropped: pass 1's parsed copy (and its folder).
    pub keep_alive: Option<Box<dyn std::any::Any + Send>>,
    pub at_end: Option<AtEnd>,
}

/// What woke `__next__`: the pump's message (or a timeout), or a call to run.
enum Waited {
    Msg(Result<Msg, RecvTimeoutError>),
    Call(Arc<LaneCall>),
}

/// What the pump, the Python object and the pipeline (for `cleanup`) share.
pub struct RunShared {
    receiver: Mutex<Option<Receiver<Msg>>>,
    pump: Mutex<Option<JoinHandle<()>>>,
    cancelled: AtomicBool,
    /// The output folder's manifest (JSON), once the run has ended.
    manifest: Mutex<Option<String>>,
    /// Closed on disconnect, so workers stop handing calls to a caller that is gone.
    lane: Option<Arc<CallerLane>>,
}

impl RunShared {
    fn receiver(&self) -> Option<Receiver<Msg>> {
        if self.cancelled.load(Ordering::SeqCst) {
            return None;
        }
        self.receiver
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// No more chunks will be read: disconnects the pump (it then drops the stream, which
    /// stops the run's threads).
    pub fn disconnect(&self) {
        self.cancelled.store(true, Ordering::SeqCst);
        if let Some(lane) = &self.lane {
            lane.close();
        }
        self.receiver
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
    }

    /// True while the pump (and so the run's threads) may still be working.
    pub fn is_running(&self) -> bool {
        self.pump
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .is_some_and(|h| !h.is_finished())
    }

    fn take_pump(&self) -> Option<JoinHandle<()>> {
        self.pump.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    /// Waits (GIL released) until the pump has finished, at most `limit`; true if it has.
    pub fn wait(&self, py: Python<'_>, limit: Duration) -> bool {
        let Some(handle) = self.take_pump() else {
            return true;
        };
        let start = Instant::now();
        while !handle.is_finished() {
            if start.elapsed() >= limit {
                *self.pump.lock().unwrap_or_else(|p| p.into_inner()) = Some(handle);
                return false;
            }
            py.detach(|| std::thread::sleep(Duration::from_millis(5)));
        }
        let _ = py.detach(|| handle.join());
        true
    }
}

/// The chunks of one run, in order (`sluice._native.NativeRun`).
///
/// `__next__` returns `(chunk, input_start, input_end, passed_through, from_function,
/// data)`: `data` is the object the user's function returned when `from_function` is true,
/// else a `pyarrow.RecordBatch`.
#[pyclass(frozen, module = "sluice._native")]
pub struct NativeRun {
    shared: Arc<RunShared>,
    errors: Arc<ErrorStore>,
    stash: Arc<Stash>,
    engine: Arc<StreamingDataPipeline>,
    /// Calls of the user's function the workers hand to this thread (see `lane.rs`).
    lane: Option<(Arc<CallerLane>, Arc<PyFunction>)>,
}

impl NativeRun {
    /// Starts the pump for `stream`.
    pub fn spawn(
        stream: ChunkStream,
        engine: Arc<StreamingDataPipeline>,
        errors: Arc<ErrorStore>,
        stash: Arc<Stash>,
        lane: Option<(Arc<CallerLane>, Arc<PyFunction>)>,
        extras: RunExtras,
    ) -> PyResult<Self> {
        let (sender, receiver) = crossbeam_channel::bounded(1);
        let shared = Arc::new(RunShared {
            receiver: Mutex::new(Some(receiver)),
            pump: Mutex::new(None),
            cancelled: AtomicBool::new(false),
            manifest: Mutex::new(None),
            lane: lane.as_ref().map(|(lane, _)| lane.clone()),
        });
        let pump_shared = shared.clone();
        let handle = std::thread::Builder::new()
            .name("sluice-py-pump".into())
            .spawn(move || pump(stream, sender, &pump_shared, extras))
            .map_err(|e| errors::SluiceError::new_err(format!("cannot start a thread: {e}")))?;
        *shared.pump.lock().unwrap_or_else(|p| p.into_inner()) = Some(handle);
        Ok(NativeRun {
            shared,
            errors,
            stash,
            engine,
            lane,
        })
    }

    /// A run with nothing to do: an earlier run into the same folder completed
    /// (`resume=True`); it yields no chunk and has that run's manifest.
    pub fn already_complete(
        engine: Arc<StreamingDataPipeline>,
        manifest: &sluice::Manifest,
    ) -> PyResult<Self> {
        let (sender, receiver) = crossbeam_channel::bounded(1);
        sender
            .send(Msg::End)
            .map_err(|_| errors::SluiceError::new_err("cannot end an empty run"))?;
        let shared = Arc::new(RunShared {
            receiver: Mutex::new(Some(receiver)),
            pump: Mutex::new(None),
            cancelled: AtomicBool::new(false),
            manifest: Mutex::new(serde_json::to_string(manifest).ok()),
            lane: None,
        });
        Ok(NativeRun {
            shared,
            errors: Arc::new(ErrorStore::default()),
            stash: Arc::new(Stash::default()),
            engine,
            lane: None,
        })
    }

    pub fn shared(&self) -> Arc<RunShared> {
        self.shared.clone()
    }

    fn disconnect(&self) {
        self.shared.disconnect();
    }

    /// Waits (GIL released, signals checked every 50 ms) for the next chunk, running the
    /// calls the workers hand over meanwhile; `None` at the end or after a stop.
    fn next_chunk(&self, py: Python<'_>) -> PyResult<Option<ProcessedChunk>> {
        let Some(receiver) = self.shared.receiver() else {
            return Ok(None);
        };
        let _present = self.lane.as_ref().map(|(lane, _)| lane.enter());
        loop {
            if self.shared.cancelled.load(Ordering::SeqCst) {
                return Ok(None);
            }
            let next = py.detach(|| match &self.lane {
                Some((lane, _)) => crossbeam_channel::select! {
                    recv(receiver) -> msg => Waited::Msg(msg.map_err(|_| RecvTimeoutError::Disconnected)),
                    recv(lane.calls()) -> call => match call {
                        Ok(call) => Waited::Call(call),
                        Err(_) => Waited::Msg(Err(RecvTimeoutError::Disconnected)),
                    },
                    default(POLL) => Waited::Msg(Err(RecvTimeoutError::Timeout)),
                },
                None => Waited::Msg(receiver.recv_timeout(POLL)),
            });
            let msg = match next {
                Waited::Msg(msg) => msg,
                Waited::Call(call) => {
                    self.serve(py, &call)?;
                    continue;
                }
            };
            match msg {
                Ok(Msg::Chunk(Ok(chunk))) => return Ok(Some(chunk)),
                Ok(Msg::Chunk(Err(err))) => {
                    self.disconnect();
                    // The run has ended: let its pump finish (final manifest, the output
                    // folder's lock released) before the caller hears of it, so a resume
                    // right after the exception finds the folder free.
                    let _ = self.shared.wait(py, INTERRUPT_GRACE);
                    return Err(self.raise(py, err));
                }
                Ok(Msg::Failed(text)) => {
                    self.disconnect();
                    return Err(pyo3::exceptions::PyValueError::new_err(text));
                }
                Ok(Msg::End) | Err(RecvTimeoutError::Disconnected) => {
                    self.disconnect();
                    return Ok(None);
                }
                Err(RecvTimeoutError::Timeout) => {
                    if let Err(interrupt) = py.check_signals() {
                        self.engine.stop();
                        self.disconnect();
                        let _ = self.shared.wait(py, INTERRUPT_GRACE);
                        return Err(interrupt);
                    }
                }
            }
        }
    }

    /// Runs a call a worker handed over. A KeyboardInterrupt raised inside the function
    /// (signals reach this thread) stops the run like Ctrl-C while waiting does.
    fn serve(&self, py: Python<'_>, call: &LaneCall) -> PyResult<()> {
        let (Some((_, function)), Some((batch, reply))) = (&self.lane, call.take()) else {
            return Ok(());
        };
        match function.call_here(py, batch) {
            Ok(batch) => reply.send(Ok(batch)),
            Err(err) if err.is_instance_of::<PyKeyboardInterrupt>(py) => {
                // Stopped first: the engine then abandons the chunk instead of applying
                // the error policy to it (no dead-letter file for an interrupted call).
                self.engine.stop();
                reply.send(Err("interrupted by KeyboardInterrupt".into()));
                self.disconnect();
                let _ = self.shared.wait(py, INTERRUPT_GRACE);
                return Err(err);
            }
            Err(err) => reply.send(Err(function.chunk_error(py, err))),
        }
        Ok(())
    }

    fn deliver<'py>(
        &self,
        py: Python<'py>,
        chunk: ProcessedChunk,
    ) -> PyResult<Bound<'py, PyTuple>> {
        let ProcessedChunk {
            seq,
            input_rows,
            batch,
            passed_through,
        } = chunk;
        let returned = if passed_through {
            None
        } else {
            self.stash.take(&batch)
        };
        let from_function = returned.is_some();
        let data = match returned {
            Some(object) => object.into_bound(py),
            None => batch_to_pyarrow(py, &batch)?,
        };
        (
            seq,
            input_rows.start,
            input_rows.end,
            passed_through,
            from_function,
            data,
        )
            .into_pyobject(py)
    }

    /// The Python exception for an engine error: the user's own exception when the error is
    /// a failed call of their function, with a note naming the chunk.
    fn raise(&self, py: Python<'_>, err: EngineError) -> PyErr {
        if let EngineError::ChunkFailed {
            chunk,
            first_row,
            end_row,
            cause,
        } = &err
        {
            if let Some(original) = self.errors.take(cause) {
                let note = format!(
                    "sluice: processing_function raised on chunk {chunk} (input rows {first_row}..{end_row}, {} rows); on_error='fail' stopped the run",
                    end_row - first_row
                );
                errors::add_note(py, &original, &note);
                return original;
            }
        }
        errors::to_py(err)
    }
}

fn pump(mut stream: ChunkStream, sender: Sender<Msg>, shared: &RunShared, extras: RunExtras) {
    let RunExtras {
        deliveries,
        keep_alive,
        at_end,
    } = extras;
    let mut complete = true;
    let mut failed = false;
    for item in stream.by_ref() {
        failed |= item.is_err();
        if let (Some(d), Ok(chunk)) = (&deliveries, &item) {
            // A push stream's rows: their time since `send` is their end-to-end latency.
            d.delivered(&chunk.input_rows);
        }
        if !send(&sender, shared, Msg::Chunk(item)) {
            complete = false;
            break;
        }
    }
    if complete {
        if let Some(manifest) = stream.manifest() {
            // The engine fills `total_rows` only in the copy it writes to disk.
            let mut manifest = manifest.clone();
            manifest.total_rows = manifest.parts.iter().map(|p| p.rows).sum();
            let json = serde_json::to_string(&manifest).ok();
            *shared.manifest.lock().unwrap_or_else(|p| p.into_inner()) = json;
        }
    }
    // Stops the run's threads (if still going) and removes temporary files.
    drop(stream);
    drop(keep_alive);
    if let (true, false, Some(check)) = (complete, failed, at_end) {
        if let Err(text) = check() {
            send(&sender, shared, Msg::Failed(text));
            return;
        }
    }
    send(&sender, shared, Msg::End);
}

/// Sends unless the run was cancelled meanwhile; false if the message was not taken.
fn send(sender: &Sender<Msg>, shared: &RunShared, msg: Msg) -> bool {
    let mut msg = msg;
    loop {
        if shared.cancelled.load(Ordering::SeqCst) {
            return false;
        }
        match sender.send_timeout(msg, POLL) {
            Ok(()) => return true,
            Err(crossbeam_channel::SendTimeoutError::Timeout(back)) => msg = back,
            Err(crossbeam_channel::SendTimeoutError::Disconnected(_)) => return false,
        }
    }
}

#[pymethods]
impl NativeRun {
    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyTuple>>> {
        match self.next_chunk(py)? {
            Some(chunk) => self.deliver(py, chunk).map(Some),
            None => Ok(None),
        }
    }

    /// Consumes the rest of the run without handing chunks to Python (part files are still
    /// written); returns the chunks and rows that came out.
    fn drain(&self, py: Python<'_>) -> PyResult<(u64, u64)> {
        let (mut chunks, mut rows) = (0u64, 0u64);
        while let Some(chunk) = self.next_chunk(py)? {
            chunks += 1;
            rows += chunk.batch.num_rows() as u64;
        }
        Ok((chunks, rows))
    }

    /// Stops reading: the run's threads stop after their current chunk. With `wait`, returns
    /// only when they have (the GIL is released meanwhile, at most `timeout` seconds).
    #[pyo3(signature = (wait = true, timeout = 30.0))]
    fn close(&self, py: Python<'_>, wait: bool, timeout: f64) -> bool {
        self.disconnect();
        if wait {
            self.shared
                .wait(py, Duration::from_secs_f64(timeout.max(0.0)))
        } else {
            true
        }
    }

    /// The output folder's `_manifest.json` as text, once a run with an output path ended.
    fn manifest_json(&self) -> Option<String> {
        self.shared
            .manifest
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// True while the run's threads may still be working.
    #[getter]
    fn running(&self) -> bool {
        self.shared.is_running()
    }
}

impl Drop for NativeRun {
    fn drop(&mut self) {
        // Never join here: the GIL may be held and a worker may need it to finish.
        self.disconnect();
    }
}
