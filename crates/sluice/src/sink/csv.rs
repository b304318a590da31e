//! CSV part files, with a header line.

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use arrow::csv::{Writer, WriterBuilder};
use arrow::record_batch::RecordBatch;

use super::PartFileWriter;
use crate::error::{Result, SluiceError};

const BUFFER: usize = 1 << 20;

pub(crate) struct CsvPartWriter {
    writer: Writer<BufWriter<File>>,
    path: PathBuf,
}

impl CsvPartWriter {
    pub fn create(path: &Path, file: File) -> Self {
        CsvPartWriter {
            writer: WriterBuilder::new()
                .with_header(true)
                .build(BufWriter::with_capacity(BUFFER, file)),
            path: path.to_path_buf(),
        }
    }
}

impl PartFileWriter for CsvPartWriter {
    fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        self.writer
            .write(batch)
            .map_err(|e| SluiceError::write(&self.path, e))
    }

    fn buffered_bytes(&self) -> u64 {
        BUFFER as u64
    }

    fn finish(self: Box<Self>) -> Result<()> {
        let file = self
            .writer
            .into_inner()
            .into_inner()
            .map_err(|e| SluiceError::write(&self.path, e.error()))?;
        file.sync_all()
            .map_err(|e| SluiceError::write(&self.path, e))
    }
}
