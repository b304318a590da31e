//! The crate's one error type: which broker, which message, which file.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// The `--from` address cannot be used.
    #[error("bad stream address {url:?}: {reason}")]
    BadUrl { url: String, reason: String },

    /// The broker refused or the connection failed.
    #[error("{broker}: {action}: {message}")]
    Broker {
        broker: String,
        action: &'static str,
        message: String,
    },

    #[error("{path}: {message}")]
    Io { path: PathBuf, message: String },

    /// A schema file (declared, or kept by an earlier run) cannot be used.
    #[error("schema {path}: {reason}")]
    Schema { path: PathBuf, reason: String },

    /// The output folder holds something a stream cannot continue.
    #[error("{dir}: {reason}")]
    Output { dir: PathBuf, reason: String },

    #[error(transparent)]
    Engine(#[from] sluice::SluiceError),
}

impl StreamError {
    pub(crate) fn io(path: impl Into<PathBuf>, e: impl std::fmt::Display) -> Self {
        StreamError::Io {
            path: path.into(),
            message: e.to_string(),
        }
    }

    pub(crate) fn broker(broker: &str, action: &'static str, e: impl std::fmt::Display) -> Self {
        StreamError::Broker {
            broker: broker.to_string(),
            action,
            message: e.to_string(),
        }
    }
}

pub type Result<T, E = StreamError> = std::result::Result<T, E>;
