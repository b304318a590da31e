//! The command's one error type: what failed, with the context a person needs, and the
//! exit code it means (1: the data or the function failed, 2: bad usage). Rendered as one
//! line (`error: ...`), or with `--verbose` as the chain of causes, one per line.

use std::error::Error as _;
use std::net::SocketAddr;
use std::path::PathBuf;

use sluice::SluiceError;
use sluice_sql::SqlError;

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

    /// The SQL does not parse, names a missing column, or cannot be planned.
    #[error("bad SQL")]
    Sql {
        #[source]
        source: SqlError,
    },

    /// Opening the input or building the pipeline failed, before any data was processed.
    #[error("{context}")]
    Setup {
        context: String,
        #[source]
        source: SluiceError,
    },

    /// The run failed on the data or the function.
    #[error("{context}")]
    Run {
        context: String,
        #[source]
        source: SluiceError,
    },

    /// The output folder holds what an earlier run left, and nothing says what to do with it.
    #[error("{dir} already holds the output of an earlier run ({what}); add --resume to continue it or --overwrite to replace it")]
    OutputExists { dir: PathBuf, what: String },

    /// `--resume` on a folder whose earlier run cannot be continued by this one.
    #[error("cannot resume into {dir}: {reason}")]
    Resume { dir: PathBuf, reason: String },

    #[error("cannot {action} {path}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("cannot serve metrics on {addr}: {message}")]
    Metrics { addr: SocketAddr, message: String },

    /// An input file changed between the two passes of `--windows global`.
    #[error("{path} changed during the run ({detail}); the whole-input statistics of pass 1 no longer describe it")]
    InputChanged { path: PathBuf, detail: String },
    /// A broker stream failed (connecting, reading, acknowledging, its output folder).
    #[error("{context}")]
    Stream {
        context: String,
        #[source]
        source: sluice_stream::StreamError,
    },

    /// SIGINT or SIGTERM stopped the run; what was complete is kept.
    #[error("stopped by a signal before the run finished")]
    Interrupted,
}

impl CliError {
    pub fn io(action: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        CliError::Io {
            action,
            path: path.into(),
            source,
        }
    }

    pub fn setup(context: impl Into<String>, source: SluiceError) -> Self {
        CliError::Setup {
            context: context.into(),
            source,
        }
    }

    pub fn run(context: impl Into<String>, source: SluiceError) -> Self {
        CliError::Run {
            context: context.into(),
            source,
        }
    }

    /// The process exit code this error means.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Usage(_)
            | CliError::BadValue { .. }
            | CliError::SqlFile { .. }
            | CliError::Sql { .. }
            | CliError::OutputExists { .. }
            | CliError::Resume { .. }
            | CliError::Metrics { .. } => EXIT_USAGE,
            CliError::Setup { source, .. } => match source {
                SluiceError::InvalidSetting { .. }
                | SluiceError::NoInput { .. }
                | SluiceError::UnknownFormat { .. }
                | SluiceError::Open { .. } => EXIT_USAGE,
                _ => EXIT_FAILED,
            },
            CliError::Run { source, .. } => match source {
                SluiceError::InvalidSetting { .. } => EXIT_USAGE,
                _ => EXIT_FAILED,
            },
            CliError::Stream { source, .. } => match source {
                sluice_stream::StreamError::BadUrl { .. }
                | sluice_stream::StreamError::Output { .. } => EXIT_USAGE,
                _ => EXIT_FAILED,
            },
            CliError::Io { .. } | CliError::InputChanged { .. } => EXIT_FAILED,
            CliError::Interrupted => EXIT_INTERRUPTED,
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
