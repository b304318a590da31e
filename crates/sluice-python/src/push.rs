//! The sending end of a push stream (`StreamHandle.send` in Python).

use arrow::record_batch::RecordBatch;
use pyo3::prelude::*;
use sluice::source::PushSender;

use crate::arrow_io::import_stream;
use crate::errors;

/// The sending end of a push stream (`StreamHandle.send`).
#[pyclass(frozen, module = "sluice._native")]
pub struct NativePushSender {
    pub(crate) sender: PushSender,
}

impl NativePushSender {
    pub(crate) fn send_batches(&self, py: Python<'_>, batches: Vec<RecordBatch>) -> PyResult<()> {
        // Blocks while the engine is full: never with the GIL held, a worker may need it.
        py.detach(|| {
            batches
                .into_iter()
                .try_for_each(|batch| self.sender.send(batch))
        })
        .map_err(errors::to_py)
    }
}

#[pymethods]
impl NativePushSender {
    /// Sends a table-like object (anything with `__arrow_c_stream__`); blocks while the
    /// engine is full.
    fn send(&self, py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<()> {
        let (_, batches) = import_stream(data)?;
        self.send_batches(py, batches)
    }

    /// No more input: the run drains what was sent and ends.
    fn close(&self) {
        self.sender.close();
    }

    #[getter]
    fn closed(&self) -> bool {
        self.sender.is_closed()
    }
}
