//! The engine's one error type. Every variant carries the context a person needs to act:
//! which file, which line or row, which chunk, which setting.

use std::path::PathBuf;

/// Boxed cause of a user function's failure (its own error, or a caught panic).
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

#[derive(Debug, thiserror::Error)]
pub enum SluiceError {
    /// A pipeline setting is out of range; `setting` names it as the builder spells it.
    #[error("invalid setting `{setting}`: {reason}")]
    InvalidSetting {
        setting: &'static str,
        reason: String,
    },

    #[error("cannot open {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// Malformed input data: `location` says where (a line, a row group, a batch).
    #[error("{path}: {location}: {message}")]
    BadInput {
        path: PathBuf,
        location: String,
        message: String,
    },

    #[error("{path}: schema differs from {first}: {difference}")]
    SchemaMismatch {
        path: PathBuf,
        first: PathBuf,
        difference: String,
    },

    #[error("no input files match {pattern}")]
    NoInput { pattern: String },

    #[error("unknown file format for {path}: {reason}")]
    UnknownFormat { path: PathBuf, reason: String },

    /// The source itself failed (for sources that are not files).
    #[error("source {source_name} failed: {message}")]
    Source {
        source_name: String,
        message: String,
    },

    /// The user's function failed (error or panic) on one chunk under the `fail` policy.
    #[error("chunk {chunk} (input rows {first_row}..{end_row}) failed: {cause}")]
    ChunkFailed {
        chunk: u64,
        first_row: u64,
        end_row: u64,
        cause: String,
    },

    #[error("writing {path}: {message}")]
    Write { path: PathBuf, message: String },

    #[error("arrow error in {context}: {source}")]
    Arrow {
        context: String,
        #[source]
        source: arrow::error::ArrowError,
    },

    /// A run would write into a folder that holds an earlier run's output.
    #[error("{dir} already holds output ({what}); overwrite it or resume the earlier run")]
    OutputExists { dir: PathBuf, what: String },

    /// Another process (or another run of this one) is writing the folder: one writer
    /// per folder (see [`crate::sink::folder::FolderLock`]).
    #[error("{dir} is being written by {holder}, which holds {lock}; wait for it to end or use another folder")]
    OutputLocked {
        dir: PathBuf,
        lock: PathBuf,
        holder: String,
    },

    /// The run was stopped (`stop()` / `cleanup()`) before it finished.
    #[error("the run was stopped before it finished")]
    Stopped,
}

impl SluiceError {
    pub(crate) fn arrow(context: impl Into<String>, source: arrow::error::ArrowError) -> Self {
        SluiceError::Arrow {
            context: context.into(),
            source,
        }
    }

    pub(crate) fn write(path: impl Into<PathBuf>, message: impl std::fmt::Display) -> Self {
        SluiceError::Write {
            path: path.into(),
            message: message.to_string(),
        }
    }
}

pub type Result<T, E = SluiceError> = std::result::Result<T, E>;
