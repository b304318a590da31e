//! Arrow IPC: the file format (random access, one part per record batch, decoded by the
//! workers) and the stream format (read in order by the engine's reader).

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use arrow::ipc::reader::{FileReader, StreamReader};

use super::{DecodedPart, PartHint, Source, SourcePart};
use crate::error::{Result, SluiceError};

fn open(path: &Path) -> Result<File> {
    File::open(path).map_err(|source| SluiceError::Open {
        path: path.to_path_buf(),
        source,
    })
}

fn bad(path: &Path, location: String, e: impl std::fmt::Display) -> SluiceError {
    SluiceError::BadInput {
        path: path.to_path_buf(),
        location,
        message: e.to_string(),
    }
}

pub struct IpcFileSource {
    path: Arc<PathBuf>,
    schema: SchemaRef,
    num_batches: usize,
    next_batch: usize,
    total_bytes: u64,
}

impl IpcFileSource {
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let file = open(&path)?;
        let total_bytes = file.metadata().map(|m| m.len()).unwrap_or(0);
        let reader = FileReader::try_new(BufReader::new(file), None).map_err(|e| {
            bad(
                &path,
                "footer".into(),
                format!("not a readable Arrow IPC file: {e}"),
            )
        })?;
        Ok(IpcFileSource {
            schema: reader.schema(),
            num_batches: reader.num_batches(),
            path: Arc::new(path),
            next_batch: 0,
            total_bytes,
        })
    }
}

impl Source for IpcFileSource {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn name(&self) -> String {
        self.path.display().to_string()
    }

    fn total_bytes(&self) -> Option<u64> {
        Some(self.total_bytes)
    }

    fn next_part(&mut self, _hint: PartHint) -> Result<Option<(SourcePart, u64)>> {
        let index = self.next_batch;
        if index >= self.num_batches {
            return Ok(None);
        }
        self.next_batch += 1;
        let path = self.path.clone();
        // Without per-batch sizes in the footer, assume batches share the file evenly.
        let estimate = self.total_bytes / self.num_batches.max(1) as u64;
        let decode = Box::new(move || -> Result<DecodedPart> {
            let location = || format!("record batch {index}");
            let mut reader = FileReader::try_new(BufReader::new(open(&path)?), None)
                .map_err(|e| bad(&path, location(), e))?;
            reader
                .set_index(index)
                .map_err(|e| bad(&path, location(), e))?;
            match reader.next() {
                Some(batch) => Ok(vec![batch.map_err(|e| bad(&path, location(), e))?].into()),
                None => Err(bad(&path, location(), "the batch is missing")),
            }
        });
        Ok(Some((
            SourcePart::Deferred {
                estimated_bytes: estimate,
                decode,
            },
            estimate,
        )))
    }
}

pub struct IpcStreamSource {
    path: PathBuf,
    reader: StreamReader<BufReader<File>>,
    batches_read: usize,
    total_bytes: u64,
}

impl IpcStreamSource {
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let file = open(&path)?;
        let total_bytes = file.metadata().map(|m| m.len()).unwrap_or(0);
        let reader = StreamReader::try_new(BufReader::new(file), None).map_err(|e| {
            bad(
                &path,
                "stream header".into(),
                format!("not a readable Arrow IPC stream: {e}"),
            )
        })?;
        Ok(IpcStreamSource {
            path,
            reader,
            batches_read: 0,
            total_bytes,
        })
    }
}

impl Source for IpcStreamSource {
    fn schema(&self) -> SchemaRef {
        self.reader.schema()
    }

    fn name(&self) -> String {
        self.path.display().to_string()
    }

    fn total_bytes(&self) -> Option<u64> {
        Some(self.total_bytes)
    }

    fn next_part(&mut self, _hint: PartHint) -> Result<Option<(SourcePart, u64)>> {
        match self.reader.next() {
            None => Ok(None),
            Some(Err(e)) => Err(bad(
                &self.path,
                format!("record batch {}", self.batches_read),
                e,
            )),
            Some(Ok(batch)) => {
                self.batches_read += 1;
                let bytes = batch.get_array_memory_size() as u64;
                Ok(Some((SourcePart::Owned(batch), bytes)))
            }
        }
    }
}
