//! The command's arguments turned into the job layer's settings, rejecting bad values with
//! exit code 2 before anything is read; and the statistics file both commands write.

use std::path::Path;

use sluice::{ErrorPolicy, SluiceError, StreamingStats};
use sluice_job::{EngineSettings, PassStats};

use crate::cli::{EngineArgs, SqlArgs};
use crate::error::CliError;
use crate::size::parse_size;

impl EngineArgs {
    /// The engine settings these flags give (the rest stays at the engine's defaults).
    pub fn settings(&self) -> Result<EngineSettings, CliError> {
        Ok(EngineSettings {
            chunk_size: self.chunk_size,
            max_memory_bytes: parse_max_memory(self.max_memory.as_deref())?,
            workers: self.workers,
            ..EngineSettings::default()
        })
    }
}

impl SqlArgs {
    /// The SQL from `--sql FILE` or `--sql-text`.
    pub fn read(&self) -> Result<Option<String>, CliError> {
        match (&self.sql, &self.sql_text) {
            (Some(path), _) => {
                std::fs::read_to_string(path)
                    .map(Some)
                    .map_err(|source| CliError::SqlFile {
                        path: path.clone(),
                        source,
                    })
            }
            (None, Some(text)) => Ok(Some(text.clone())),
            (None, None) => Ok(None),
        }
    }
}

/// `--max-memory SIZE` in bytes.
fn parse_max_memory(text: Option<&str>) -> Result<Option<u64>, CliError> {
    text.map(|text| {
        parse_size(text).map_err(|reason| CliError::BadValue {
            flag: "max-memory",
            value: text.to_string(),
            reason,
        })
    })
    .transpose()
}

/// `--on-error POLICY`.
pub fn parse_policy(text: &str) -> Result<ErrorPolicy, CliError> {
    text.parse().map_err(|e| CliError::BadValue {
        flag: "on-error",
        value: text.to_string(),
        reason: setting_reason(e),
    })
}

/// The reason of an `InvalidSetting`, or the whole message of anything else.
fn setting_reason(error: SluiceError) -> String {
    match error {
        SluiceError::InvalidSetting { reason, .. } => reason,
        other => other.to_string(),
    }
}

/// The run's statistics; with `--windows global` also `passes`: each pass's rows, time and
/// bytes (pass 2's are the top-level figures).
pub fn write_stats_json(
    path: &Path,
    stats: &StreamingStats,
    passes: &[PassStats],
) -> Result<(), CliError> {
    let mut value = serde_json::to_value(stats)
        .map_err(|e| CliError::io("write", path, std::io::Error::other(e)))?;
    if let (false, Some(object)) = (passes.is_empty(), value.as_object_mut()) {
        let passes = serde_json::to_value(passes)
            .map_err(|e| CliError::io("write", path, std::io::Error::other(e)))?;
        object.insert("passes".into(), passes);
    }
    let text = serde_json::to_string_pretty(&value)
        .map_err(|e| CliError::io("write", path, std::io::Error::other(e)))?;
    std::fs::write(path, text + "\n").map_err(|e| CliError::io("write", path, e))
}
