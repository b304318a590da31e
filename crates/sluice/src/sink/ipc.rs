//! Arrow IPC (file format) part files.

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use arrow::datatypes::SchemaRef;
use arrow::ipc::writer::FileWriter;
use arrow::record_batch::RecordBatch;

use super::PartFileWriter;
use crate::error::{Result, SluiceError};

const BUFFER: usize = 1 << 20;

pub(crate) struct IpcPartWriter {
    writer: FileWriter<BufWriter<File>>,
    path: PathBuf,
}

impl IpcPartWriter {
    pub fn create(path: &Path, file: File, schema: SchemaRef) -> Result<Self> {
        let writer = FileWriter::try_new(BufWriter::with_capacity(BUFFER, file), &schema)
            .map_err(|e| SluiceError::write(path, e))?;
        Ok(IpcPartWriter {
            writer,
            path: path.to_path_buf(),
        })
    }
}

impl PartFileWriter for IpcPartWriter {
    fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        self.writer
            .write(batch)
            .map_err(|e| SluiceError::write(&self.path, e))?;
        super::writeback::start(self.writer.get_ref().get_ref());
        Ok(())
    }

    fn buffered_bytes(&self) -> u64 {
        BUFFER as u64
    }

    fn finish(mut self: Box<Self>) -> Result<()> {
        self.writer
            .finish()
            .map_err(|e| SluiceError::write(&self.path, e))?;
        let file = self
            .writer
            .into_inner()
            .map_err(|e| SluiceError::write(&self.path, e))?
            .into_inner()
            .map_err(|e| SluiceError::write(&self.path, e.error()))?;
        file.sync_all()
            .map_err(|e| SluiceError::write(&self.path, e))
    }
}
