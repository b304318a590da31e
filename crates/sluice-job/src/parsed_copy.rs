//! The rows pass 1 of `--windows global` parsed from a text input (CSV, NDJSON), kept in an
//! Arrow IPC file in the output folder so pass 2 reads them instead of parsing the input a
//! second time. A scratch file: written without fsync, read once, removed when dropped.

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use arrow::datatypes::SchemaRef;
use arrow::ipc::writer::FileWriter;
use arrow::record_batch::RecordBatch;

/// The copy's name in the output folder. Not a `part-` file and not `.tmp`, so neither the
/// resume logic nor the sink's cleaning takes it for theirs.
pub const COPY_FILE: &str = ".sluice-pass1-rows.arrow";

/// A finished copy; the file is removed when this is dropped (after pass 2, or when the run
/// fails). A run killed leaves it behind, and the next run in the folder removes it.
#[derive(Debug)]
pub struct ParsedCopy {
    path: PathBuf,
    bytes: u64,
}

impl ParsedCopy {
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

impl Drop for ParsedCopy {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Removes a copy left by a run that was killed.
pub fn remove_stale(dir: &Path) {
    let _ = std::fs::remove_file(dir.join(COPY_FILE));
}

/// Writes the chunks of pass 1, in input order, to the copy. A failed write (a full disk)
/// only gives up the copy: pass 2 then parses the input again.
pub struct CopyWriter {
    path: PathBuf,
    /// The output folder, when the copy created it: removed again (if still empty) when
    /// pass 1 fails, which otherwise leaves no trace.
    created_dir: Option<PathBuf>,
    writer: Option<FileWriter<BufWriter<File>>>,
    gave_up: Option<String>,
}

impl CopyWriter {
    /// Starts the copy in `dir` (created if missing); `Err` says why there is none.
    pub fn create(dir: &Path, schema: &SchemaRef) -> Result<Self, String> {
        let created_dir = (!dir.exists()).then(|| dir.to_path_buf());
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let path = dir.join(COPY_FILE);
        let file = match File::create(&path) {
            Ok(file) => file,
            Err(e) => {
                if let Some(dir) = &created_dir {
                    let _ = std::fs::remove_dir(dir);
                }
                return Err(format!("cannot create {}: {e}", path.display()));
            }
        };
        match FileWriter::try_new(BufWriter::new(file), schema) {
            Ok(writer) => Ok(CopyWriter {
                path,
                created_dir,
                writer: Some(writer),
                gave_up: None,
            }),
            Err(e) => {
                let _ = std::fs::remove_file(&path);
                if let Some(dir) = &created_dir {
                    let _ = std::fs::remove_dir(dir);
                }
                Err(format!("cannot write {}: {e}", path.display()))
            }
        }
    }

    pub fn write(&mut self, batch: &RecordBatch) {
        if let Some(writer) = self.writer.as_mut() {
            if let Err(e) = writer.write(batch) {
                self.give_up(format!("cannot write {}: {e}", self.path.display()));
            }
        }
    }

    /// The finished copy, or why there is none.
    pub fn finish(mut self) -> Result<ParsedCopy, String> {
        if let Some(mut writer) = self.writer.take() {
            let flushed = writer.finish().map_err(|e| e.to_string()).and_then(|()| {
                writer
                    .get_mut()
                    .get_ref()
                    .metadata()
                    .map_err(|e| e.to_string())
            });
            match flushed {
                Ok(meta) => {
                    return Ok(ParsedCopy {
                        path: self.path.clone(),
                        bytes: meta.len(),
                    })
                }
                Err(e) => self.give_up(format!("cannot write {}: {e}", self.path.display())),
            }
        }
        Err(self.gave_up.take().unwrap_or_default())
    }

    fn give_up(&mut self, reason: String) {
        self.writer = None;
        let _ = std::fs::remove_file(&self.path);
        self.gave_up.get_or_insert(reason);
    }
}

impl Drop for CopyWriter {
    fn drop(&mut self) {
        // Unfinished: pass 1 failed or was stopped.
        if self.writer.take().is_some() {
            let _ = std::fs::remove_file(&self.path);
            if let Some(dir) = &self.created_dir {
                let _ = std::fs::remove_dir(dir);
            }
        }
    }
}
