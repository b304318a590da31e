//! The backpressure controller seen from Python, and the hooks through which the engine
//! calls the overrides of a Python subclass.
//!
//! [`NativeController`] is what `sluice.BackpressureController` keeps in `self._native`.
//! Created on its own it has its own budget (the seed's constructor); once its Python
//! object is given to a pipeline it is *attached*: it then reads and drives the pipeline's
//! own controller, so `super().should_apply_backpressure()` sees the engine's tracked
//! bytes and queue, and `super().adapt_batch_size()` runs the engine's adaptive step.
//!
//! [`PyHooks`] implements the engine's `ControllerHooks` for a Python object. Only the
//! methods the subclass overrides are called (the Python side says which), each at most
//! once per chunk, with the interpreter attached only for the call. A hook that raises is
//! reported once through `sys.unraisablehook` and then left out; the engine's own rule
//! applies in its place.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{RwLock, RwLockReadGuard};

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use sluice::{BackpressureController, ControllerHooks};

struct Attachment {
    controller: BackpressureController,
    /// Workers of the pipeline (the share of the budget one chunk may take depends on it).
    workers: usize,
    attached: bool,
}

/// Memory permits, queue slots and the adaptive batch sizer (`sluice.BackpressureController`).
#[pyclass(frozen, module = "sluice._native")]
pub struct NativeController {
    inner: RwLock<Attachment>,
    /// Number of the chunk the engine is sizing (for the chunk-size history).
    next_chunk: AtomicU64,
}

impl NativeController {
    pub fn attached_to(controller: BackpressureController, workers: usize) -> Self {
        NativeController {
            inner: RwLock::new(Attachment {
                controller,
                workers,
                attached: true,
            }),
            next_chunk: AtomicU64::new(0),
        }
    }

    fn inner(&self) -> RwLockReadGuard<'_, Attachment> {
        self.inner.read().unwrap_or_else(|p| p.into_inner())
    }

    fn controller(&self) -> BackpressureController {
        self.inner().controller.clone()
    }

    /// Makes this controller drive `controller` (a pipeline's).
    pub fn attach(&self, controller: BackpressureController, workers: usize) {
        let mut inner = self.inner.write().unwrap_or_else(|p| p.into_inner());
        *inner = Attachment {
            controller,
            workers,
            attached: true,
        };
    }

    /// A run starts: chunk numbers start again at 0.
    pub fn run_started(&self) {
        self.next_chunk.store(0, Ordering::Relaxed);
    }

    fn chunk_sized(&self) -> u64 {
        self.next_chunk.fetch_add(1, Ordering::Relaxed)
    }
}

#[pymethods]
impl NativeController {
    #[new]
    #[pyo3(signature = (max_queue_size = 100, memory_threshold_mb = 1000.0, adaptive_batching = true, initial_batch_size = 1000))]
    fn new(
        max_queue_size: usize,
        memory_threshold_mb: f64,
        adaptive_batching: bool,
        initial_batch_size: usize,
    ) -> PyResult<Self> {
        if max_queue_size == 0 {
            return Err(PyValueError::new_err("max_queue_size must be at least 1"));
        }
        if !(memory_threshold_mb.is_finite() && memory_threshold_mb > 0.0) {
            return Err(PyValueError::new_err(format!(
                "memory_threshold_mb must be a positive number of megabytes, got {memory_threshold_mb}"
            )));
        }
        let budget = (memory_threshold_mb * 1024.0 * 1024.0) as u64;
        let rows = initial_batch_size.max(1);
        let controller = BackpressureController::with_budget_bytes(
            max_queue_size,
            budget,
            adaptive_batching,
            rows,
            1,
            rows.max(1_000_000),
        );
        Ok(NativeController {
            inner: RwLock::new(Attachment {
                controller,
                workers: 1,
                attached: false,
            }),
            next_chunk: AtomicU64::new(0),
        })
    }

    /// True when the reader should hold back: the queue is full or tracked memory is above
    /// 80% of the budget.
    fn should_apply_backpressure(&self) -> bool {
        self.controller().should_apply_backpressure()
    }

    /// One step of adaptive batching; returns the new chunk rows.
    fn adapt_batch_size(&self) -> usize {
        let (controller, workers) = {
            let inner = self.inner();
            (inner.controller.clone(), inner.workers)
        };
        let chunk = self.next_chunk.load(Ordering::Relaxed);
        controller.adapt_batch_size_for(workers, chunk)
    }

    #[getter]
    fn get_current_batch_size(&self) -> usize {
        self.controller().current_batch_size()
    }

    #[setter]
    fn set_current_batch_size(&self, rows: usize) {
        let chunk = self.next_chunk.load(Ordering::Relaxed);
        self.controller().set_current_batch_size_at(rows, chunk)
    }

    #[getter]
    fn used_bytes(&self) -> u64 {
        self.controller().used_bytes()
    }

    #[getter]
    fn peak_bytes(&self) -> u64 {
        self.controller().peak_bytes()
    }

    #[getter]
    fn budget_bytes(&self) -> u64 {
        self.controller().budget_bytes()
    }

    #[getter]
    fn queued_chunks(&self) -> usize {
        self.controller().queued_chunks()
    }

    #[getter]
    fn max_queue_size(&self) -> usize {
        self.controller().max_queue_size()
    }

    #[getter]
    fn backpressure_events(&self) -> u64 {
        self.controller().backpressure_events()
    }

    /// Fraction of the budget in use.
    #[getter]
    fn pressure(&self) -> f64 {
        self.controller().pressure()
    }

    #[getter]
    fn adaptive_batching(&self) -> bool {
        self.controller().adaptive_batching()
    }

    /// True once the controller drives a pipeline's engine.
    #[getter]
    fn attached(&self) -> bool {
        self.inner().attached
    }
}

/// Which overrides of a Python controller the engine calls.
#[derive(Debug, Clone, Copy)]
pub struct HookFlags {
    pub should_apply_backpressure: bool,
    pub adapt_batch_size: bool,
    pub record_performance: bool,
}

/// The engine's `ControllerHooks` for a Python `BackpressureController` subclass.
pub struct PyHooks {
    object: Py<PyAny>,
    native: Py<NativeController>,
    flags: HookFlags,
    failed: AtomicBool,
}

impl PyHooks {
    pub fn new(object: Py<PyAny>, native: Py<NativeController>, flags: HookFlags) -> Self {
        PyHooks {
            object,
            native,
            flags,
            failed: AtomicBool::new(false),
        }
    }

    /// True if any hook is worth calling.
    pub fn any(flags: HookFlags) -> bool {
        flags.should_apply_backpressure || flags.adapt_batch_size || flags.record_performance
    }

    fn usable(&self) -> bool {
        !self.failed.load(Ordering::Relaxed)
    }

    /// Reports a failing hook once, then leaves the hooks out.
    fn report(&self, py: Python<'_>, method: &str, err: PyErr) {
        if !self.failed.swap(true, Ordering::Relaxed) {
            let note = format!(
                "sluice: {method}() of the backpressure controller raised; the engine's own rule is used from now on"
            );
            crate::errors::add_note(py, &err, &note);
            err.write_unraisable(py, Some(self.object.bind(py)));
        }
    }
}

impl ControllerHooks for PyHooks {
    fn should_apply_backpressure(&self) -> Option<bool> {
        if !self.flags.should_apply_backpressure || !self.usable() {
            return None;
        }
        Python::attach(|py| {
            let answer = self
                .object
                .bind(py)
                .call_method0("should_apply_backpressure")
                .and_then(|v| v.is_truthy());
            match answer {
                Ok(hold) => Some(hold),
                Err(err) => {
                    self.report(py, "should_apply_backpressure", err);
                    None
                }
            }
        })
    }

    fn adapt_batch_size(&self) -> Option<usize> {
        if !self.flags.adapt_batch_size || !self.usable() {
            return None;
        }
        Python::attach(|py| {
            // The chunk about to be sized, for the history the override's super() records.
            let chunk = self.native.get().chunk_sized();
            self.native.get().next_chunk.store(chunk, Ordering::Relaxed);
            let object = self.object.bind(py);
            let rows = object
                .call_method0("adapt_batch_size")
                .and_then(|_| object.getattr("current_batch_size"))
                .and_then(|rows| rows.extract::<usize>());
            // Later calls of the setter (outside a sizing step) belong to the next chunk.
            self.native
                .get()
                .next_chunk
                .store(chunk + 1, Ordering::Relaxed);
            match rows {
                Ok(rows) => Some(rows),
                Err(err) => {
                    self.report(py, "adapt_batch_size", err);
                    None
                }
            }
        })
    }

    fn record_performance(&self, rows_per_second: f64) {
        if !self.flags.record_performance || !self.usable() {
            return;
        }
        Python::attach(|py| {
            let called = self
                .object
                .bind(py)
                .call_method1("record_performance", (rows_per_second,));
            if let Err(err) = called {
                self.report(py, "record_performance", err);
            }
        })
    }
}
