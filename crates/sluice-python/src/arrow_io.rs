//! Arrow data in and out of Python through the Arrow C data interface, without copying:
//! pyarrow (or anything with `__arrow_c_stream__` / `__arrow_c_array__`, e.g. Polars)
//! becomes `RecordBatch`es sharing the same buffers, and a `RecordBatch` becomes a
//! `pyarrow.RecordBatch` over the engine's buffers.
//!
//! Not here: pandas and Polars conversions (Python's job, `sluice._convert`).

use arrow::array::{Array, StructArray};
use arrow::compute::concat_batches;
use arrow::datatypes::SchemaRef;
use arrow::ffi::{FFI_ArrowArray, FFI_ArrowSchema};
use arrow::ffi_stream::ArrowArrayStreamReader;
use arrow::record_batch::{RecordBatch, RecordBatchReader};
use arrow_pyarrow::FromPyArrow;
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyType;

fn record_batch_class(py: Python<'_>) -> PyResult<&Bound<'_, PyType>> {
    static CLASS: PyOnceLock<Py<PyType>> = PyOnceLock::new();
    CLASS.import(py, "pyarrow", "RecordBatch")
}

/// A `pyarrow.RecordBatch` over the batch's buffers (zero-copy).
pub fn batch_to_pyarrow<'py>(py: Python<'py>, batch: &RecordBatch) -> PyResult<Bound<'py, PyAny>> {
    let schema = FFI_ArrowSchema::try_from(batch.schema().as_ref()).map_err(|e| {
        PyValueError::new_err(format!("cannot export the chunk's schema to pyarrow: {e}"))
    })?;
    let data = StructArray::from(batch.clone()).into_data();
    let array = FFI_ArrowArray::new(&data);
    // pyarrow moves both structs' contents out (their release callbacks become null), so
    // dropping them afterwards frees nothing twice; if the call fails, dropping releases.
    record_batch_class(py)?.call_method1(
        "_import_from_c",
        (&raw const array as usize, &raw const schema as usize),
    )
}

/// All batches of a table-like object (anything with `__arrow_c_stream__`: a
/// `pyarrow.Table`, a `RecordBatchReader`, a Polars DataFrame), and its schema.
pub fn import_stream(obj: &Bound<'_, PyAny>) -> PyResult<(SchemaRef, Vec<RecordBatch>)> {
    let reader = ArrowArrayStreamReader::from_pyarrow_bound(obj)?;
    let schema = reader.schema();
    let batches = reader
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| PyValueError::new_err(format!("cannot read Arrow data from Python: {e}")))?;
    Ok((schema, batches))
}

/// One `RecordBatch` from a `pyarrow.RecordBatch` or a table-like object (its batches
/// joined; a copy only when there is more than one).
pub fn import_batch(obj: &Bound<'_, PyAny>) -> PyResult<RecordBatch> {
    if obj.hasattr("__arrow_c_array__")? {
        return RecordBatch::from_pyarrow_bound(obj);
    }
    if !obj.hasattr("__arrow_c_stream__")? {
        let type_name = obj.get_type().name()?;
        return Err(PyTypeError::new_err(format!(
            "expected Arrow data (a pyarrow Table or RecordBatch), got {type_name}"
        )));
    }
    let (schema, mut batches) = import_stream(obj)?;
    match batches.len() {
        0 => Ok(RecordBatch::new_empty(schema)),
        1 => Ok(batches.swap_remove(0)),
        _ => concat_batches(&schema, &batches)
            .map_err(|e| PyValueError::new_err(format!("cannot join the result's batches: {e}"))),
    }
}
