//! `_manifest.json`: the parts of an output folder, the input rows each covers, the schema
//! and the final statistics. Always replaced atomically (written aside, then renamed).

use std::path::Path;

use arrow::datatypes::Schema;
use serde::{Deserialize, Serialize};

use super::dead_letter::DeadLetter;
use super::OutputFormat;
use crate::error::{Result, SluiceError};
use crate::stats::StreamingStats;

pub const MANIFEST_FILE: &str = "_manifest.json";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    /// The run is going (or was killed): the listed parts are complete, more may follow.
    Running,
    Complete,
    Failed,
    Stopped,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartInfo {
    pub file: String,
    pub rows: u64,
    /// Input rows `[start, end)` that produced this part (skipped rows included).
    pub input_row_start: u64,
    pub input_row_end: u64,
    pub bytes: u64,
    /// The part's own columns, recorded when parts of one folder may differ (a stream
    /// whose messages gained a field or widened a type); otherwise the manifest's `schema`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub columns: Option<Vec<ColumnInfo>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ColumnInfo {
    pub name: String,
    pub data_type: String,
    pub nullable: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub version: u32,
    pub status: RunStatus,
    pub format: OutputFormat,
    pub parts: Vec<PartInfo>,
    /// Dead letters (failed chunks, rejected records) of the rows the run got through, in
    /// input order: part of the output as much as the parts are.
    #[serde(default)]
    pub dead_letters: Vec<DeadLetter>,
    pub total_rows: u64,
    pub schema: Vec<ColumnInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none", skip_deserializing)]
    pub stats: Option<StreamingStats>,
    #[serde(default)]
    pub error: Option<String>,
}

impl Manifest {
    pub fn new(format: OutputFormat) -> Self {
        Manifest {
            version: 1,
            status: RunStatus::Running,
            format,
            parts: Vec::new(),
            dead_letters: Vec::new(),
            total_rows: 0,
            schema: Vec::new(),
            stats: None,
            error: None,
        }
    }

    /// Reads the manifest of an output folder.
    pub fn read_from(dir: &Path) -> Result<Self> {
        let path = dir.join(MANIFEST_FILE);
        let text = std::fs::read_to_string(&path).map_err(|source| SluiceError::Open {
            path: path.clone(),
            source,
        })?;
        serde_json::from_str(&text).map_err(|e| SluiceError::BadInput {
            path,
            location: format!("line {}", e.line()),
            message: e.to_string(),
        })
    }

    /// Writes the manifest into `dir` atomically (a temporary file renamed over it) and
    /// durably: the temporary is synced before the rename and the folder after it, so once
    /// this returns (and a broker is acknowledged) a power loss cannot bring back the old one.
    pub fn write_to(&self, dir: &Path) -> Result<()> {
        let mut manifest = self.clone();
        manifest.total_rows = manifest.parts.iter().map(|p| p.rows).sum();
        let text =
            serde_json::to_string_pretty(&manifest).map_err(|e| SluiceError::write(dir, e))?;
        let tmp = dir.join(format!(".{MANIFEST_FILE}.tmp"));
        let path = dir.join(MANIFEST_FILE);
        let written = std::fs::File::create(&tmp).and_then(|mut file| {
            std::io::Write::write_all(&mut file, text.as_bytes())?;
            file.sync_all()
        });
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(SluiceError::write(&tmp, e));
        }
        std::fs::rename(&tmp, &path).map_err(|e| SluiceError::write(&path, e))?;
        super::folder::sync_dir(dir)
    }
}

pub fn describe_schema(schema: &Schema) -> Vec<ColumnInfo> {
    schema
        .fields()
        .iter()
        .map(|f| ColumnInfo {
            name: f.name().clone(),
            data_type: f.data_type().to_string(),
            nullable: f.is_nullable(),
        })
        .collect()
}
