//! The job layer's one error type. Each variant says what failed with the context a person
//! needs (which file, which folder, which pass); the faces turn it into their own (an exit
//! code and one line for the command, an exception for Python).

use std::path::PathBuf;

use sluice::SluiceError;
use sluice_sql::SqlError;

#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// A job that cannot run as described (a missing query, an input read twice that can
    /// be read once, settings that contradict each other).
    #[error("{0}")]
    Usage(String),

    /// The SQL does not parse, names a missing column, or cannot be planned.
    #[error("bad SQL")]
    Sql {
        #[source]
        source: SqlError,
    },

    /// Opening the input or building the engine failed, before any data was processed.
    #[error("{context}")]
    Setup {
        context: String,
        #[source]
        source: SluiceError,
    },

    /// A run failed on the data or the function.
    #[error("{context}")]
    Run {
        context: String,
        #[source]
        source: SluiceError,
    },

    /// The output folder holds what an earlier run left, and the job says neither resume
    /// nor overwrite.
    #[error("{dir} already holds the output of an earlier run ({what}); add --resume to continue it or --overwrite to replace it")]
    OutputExists { dir: PathBuf, what: String },

    /// A resume of a folder whose earlier run cannot be continued by this job.
    #[error("cannot resume into {dir}: {reason}")]
    Resume { dir: PathBuf, reason: String },

    #[error("cannot {action} {path}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// An input file changed between the two passes of whole-input windows.
    #[error("{path} changed during the run ({detail}); the whole-input statistics of pass 1 no longer describe it")]
    InputChanged { path: PathBuf, detail: String },

    /// The observer asked the run to stop (a signal) before pass 1 finished.
    #[error("stopped by a signal before the run finished")]
    Interrupted,
}

pub type Result<T, E = JobError> = std::result::Result<T, E>;

impl JobError {
    pub fn io(action: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        JobError::Io {
            action,
            path: path.into(),
            source,
        }
    }

    pub fn setup(context: impl Into<String>, source: SluiceError) -> Self {
        JobError::Setup {
            context: context.into(),
            source,
        }
    }

    pub fn run(context: impl Into<String>, source: SluiceError) -> Self {
        JobError::Run {
            context: context.into(),
            source,
        }
    }

    pub fn sql(source: SqlError) -> Self {
        JobError::Sql { source }
    }

    /// True when the job was described wrongly (bad SQL, settings, input or output folder)
    /// rather than failing on the data: the command exits 2, Python raises `ValueError`.
    pub fn is_usage(&self) -> bool {
        match self {
            JobError::Usage(_)
            | JobError::Sql { .. }
            | JobError::OutputExists { .. }
            | JobError::Resume { .. } => true,
            JobError::Setup { source, .. } => is_setup_usage(source),
            JobError::Run { source, .. } => matches!(source, SluiceError::InvalidSetting { .. }),
            JobError::Io { .. } | JobError::InputChanged { .. } | JobError::Interrupted => false,
        }
    }

    /// The error and its causes on one line (`a: b: c`), for a manifest or an exception.
    pub fn one_line(&self) -> String {
        let mut text = self.to_string();
        let mut cause = std::error::Error::source(self);
        while let Some(error) = cause {
            text.push_str(": ");
            text.push_str(&error.to_string());
            cause = error.source();
        }
        text
    }
}

/// True for an engine error, before any data was read, that the caller's description
/// caused (a setting out of range, no input, an unknown format, a file that cannot be opened).
pub fn is_setup_usage(error: &SluiceError) -> bool {
    matches!(
        error,
        SluiceError::InvalidSetting { .. }
            | SluiceError::NoInput { .. }
            | SluiceError::UnknownFormat { .. }
            | SluiceError::Open { .. }
    )
}
