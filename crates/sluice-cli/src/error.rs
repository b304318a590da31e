//! The command's one error type: what failed, with the context a person needs, and the
//! exit code it means (1: the data or the function failed, 2: bad usage). Rendered as one
//! line (`error: ...`), or with `--verbose` as the chain of causes, one per line.

use std::error::Error as _;
use std::net::SocketAddr;
use std::path::PathBuf;

use sluice::SluiceError;
use sluice_job::JobError;

/// Exit code of a run that finished.
pub const EXIT_OK: u8 = 0;
/// The data or the function failed.
pub const EXIT_FAILED: u8 = 1;
/// Bad usage: arguments, settings, SQL, a missing input.
pub const EXIT_USAGE: u8 = 2;
/// Stopped by SIGINT or SIGTERM (128 + SIGINT, as shells report it).
pub const EXIT_INTERRUPTED: u8 = 130;

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// A bad argument or combination of arguments.
    #[error("{0}")]
    Usage(String),

    /// An argument whose value cannot be used.
    #[error("invalid --{flag} {value:?}: {reason}")]
    BadValue {
        flag: &'static str,
        value: String,
        reason: String,
    },

    #[error("cannot read the SQL file {path}")]
    SqlFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("cannot serve metrics on {addr}: {message}")]
    Metrics { addr: SocketAddr, message: String },

    /// A broker stream failed (connecting, reading, acknowledging, its output folder).
    #[error("{context}")]
    Stream {
        context: String,
        #[source]
        source: sluice_stream::StreamError,
    },

    /// What the job layer refused or failed on (the SQL, the output folder, a changed
    /// input, pass 1).
    #[error(transparent)]
    Job(#[from] JobError),

    /// SIGINT or SIGTERM stopped the run; what was complete is kept.
    #[error("stopped by a signal before the run finished")]
    Interrupted,
}

impl CliError {
    pub fn io(action: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        CliError::Job(JobError::io(action, path, source))
    }

    /// Opening the input or building the pipeline failed, before any data was processed.
    pub fn setup(context: impl Into<String>, source: SluiceError) -> Self {
        CliError::Job(JobError::setup(context, source))
    }

    /// The run failed on the data or the function.
    pub fn run(context: impl Into<String>, source: SluiceError) -> Self {
        CliError::Job(JobError::run(context, source))
    }

    /// The process exit code this error means.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Usage(_)
            | CliError::BadValue { .. }
            | CliError::SqlFile { .. }
            | CliError::Metrics { .. } => EXIT_USAGE,
            CliError::Stream { source, .. } => match source {
                sluice_stream::StreamError::BadUrl { .. }
                | sluice_stream::StreamError::Output { .. } => EXIT_USAGE,
                _ => EXIT_FAILED,
            },
            CliError::Job(JobError::Interrupted) | CliError::Interrupted => EXIT_INTERRUPTED,
            CliError::Job(error) if error.is_usage() => EXIT_USAGE,
            CliError::Job(_) => EXIT_FAILED,
        }
    }

    /// The error and its causes, outermost first; a cause whose text the message before it
    /// already includes is left out.
    pub fn chain(&self) -> Vec<String> {
        let mut lines = vec![self.to_string()];
        let mut cause = self.source();
        while let Some(err) = cause {
            let text = err.to_string();
            if !lines.iter().any(|l| l.contains(&text)) {
                lines.push(text);
            }
            cause = err.source();
        }
        lines.retain(|l| !l.is_empty());
        lines
    }

    /// One line for a person: the chain joined with ": ", newlines flattened.
    pub fn one_line(&self) -> String {
        self.chain().join(": ").replace('\n', " ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_skips_causes_already_in_the_message() {
        let err = CliError::setup(
            "cannot open the input",
            SluiceError::Open {
                path: "x.csv".into(),
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
            },
        );
        assert_eq!(
            err.one_line(),
            "cannot open the input: cannot open x.csv: no such file"
        );
        assert_eq!(err.exit_code(), EXIT_USAGE);
    }
}
