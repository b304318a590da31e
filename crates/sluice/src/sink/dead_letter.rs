//! Dead letters: what the `dead_letter` policy writes instead of losing it. A chunk the
//! function failed on is written as Arrow IPC with a note of its cause; malformed input
//! records (rejects) are written as NDJSON, one object a record. Both are named by the
//! input rows they cover, written under a temporary name and renamed, so writing the same
//! thing twice (a resumed run redoing a chunk) replaces it and a crash leaves no half file.

use std::io::Write;
use std::ops::Range;
use std::path::{Path, PathBuf};

use arrow::record_batch::RecordBatch;
use serde::{Deserialize, Serialize};

use crate::error::{Result, SluiceError};
use crate::source::Reject;

/// What a dead letter holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LetterKind {
    /// A chunk's input rows (`rows-START-END.arrow`, with `rows-START-END.error.txt`).
    Chunk,
    /// Malformed records (`rejects-START-END.ndjson`).
    Rejects,
}

/// One dead-letter file a run wrote: where, what, and which input it covers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    pub path: PathBuf,
    pub kind: LetterKind,
    /// The input rows of the chunk it belongs to (absolute, end exclusive). A chunk letter
    /// holds exactly these rows; a rejects letter holds the records set aside before them:
    /// each reject's `position` lies in this range, or equals its end for the records
    /// after the last row of the input (then the range is empty).
    pub input_rows: Range<u64>,
    /// Rows (chunk) or records (rejects) in the file.
    pub count: u64,
}

/// Writes a failed chunk's input as `rows-START-END.arrow` and its cause as
/// `rows-START-END.error.txt`; `seq` is named in the note.
pub fn write_chunk(
    dir: &Path,
    seq: u64,
    rows: &Range<u64>,
    batch: &RecordBatch,
    cause: &str,
) -> Result<DeadLetter> {
    std::fs::create_dir_all(dir).map_err(|e| SluiceError::write(dir, e))?;
    let stem = format!("rows-{:012}-{:012}", rows.start, rows.end);
    let path = dir.join(format!("{stem}.arrow"));
    write_atomically(&path, |file| {
        let mut writer = arrow::ipc::writer::FileWriter::try_new(file, &batch.schema())
            .map_err(|e| e.to_string())?;
        writer.write(batch).map_err(|e| e.to_string())?;
        writer.finish().map_err(|e| e.to_string())
    })?;
    let note = format!(
        "chunk {seq}\ninput rows {}..{}\ncause: {cause}\n",
        rows.start, rows.end
    );
    let note_path = dir.join(format!("{stem}.error.txt"));
    write_atomically(&note_path, |file| {
        file.write_all(note.as_bytes()).map_err(|e| e.to_string())
    })?;
    Ok(DeadLetter {
        path,
        kind: LetterKind::Chunk,
        input_rows: rows.clone(),
        count: rows.end - rows.start,
    })
}

/// One line of a rejects file.
#[derive(Serialize)]
struct RejectLine<'a> {
    file: std::borrow::Cow<'a, str>,
    line: Option<u64>,
    byte_offset: Option<u64>,
    position: u64,
    raw: &'a str,
    raw_truncated: bool,
    cause: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
}

/// Writes the rejects set aside before the input rows `rows` (their positions absolute) as
/// `rejects-START-END.ndjson`.
pub fn write_rejects(dir: &Path, rows: &Range<u64>, rejects: &[Reject]) -> Result<DeadLetter> {
    std::fs::create_dir_all(dir).map_err(|e| SluiceError::write(dir, e))?;
    let path = dir.join(format!(
        "rejects-{:012}-{:012}.ndjson",
        rows.start, rows.end
    ));
    let mut text = Vec::new();
    for r in rejects {
        let line = RejectLine {
            file: r.file.to_string_lossy(),
            line: r.line,
            byte_offset: r.byte_offset,
            position: r.position,
            raw: &r.raw,
            raw_truncated: r.raw_truncated,
            cause: &r.cause,
            id: r.id.as_deref(),
        };
        serde_json::to_writer(&mut text, &line).map_err(|e| SluiceError::write(&path, e))?;
        text.push(b'\n');
    }
    write_atomically(&path, |file| {
        file.write_all(&text).map_err(|e| e.to_string())
    })?;
    Ok(DeadLetter {
        path,
        kind: LetterKind::Rejects,
        input_rows: rows.clone(),
        count: rejects.len() as u64,
    })
}

/// Writes `path` through a hidden temporary file renamed into place; the temporary file
/// is removed if anything fails.
fn write_atomically(
    path: &Path,
    write: impl FnOnce(&mut std::fs::File) -> std::result::Result<(), String>,
) -> Result<()> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    let result = std::fs::File::create(&tmp)
        .map_err(|e| e.to_string())
        .and_then(|mut file| {
            write(&mut file)?;
            file.sync_all().map_err(|e| e.to_string())
        })
        .and_then(|()| std::fs::rename(&tmp, path).map_err(|e| e.to_string()))
        .and_then(|()| {
            // The name too must survive a power loss before the manifest lists it.
            let dir = path.parent().unwrap_or(Path::new("."));
            super::folder::sync_dir(dir).map_err(|e| e.to_string())
        });
    result.map_err(|message| {
        let _ = std::fs::remove_file(&tmp);
        SluiceError::write(path, message)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writing_the_same_rejects_twice_replaces_the_file() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| SluiceError::write("tmp", e))?;
        let mut reject = Reject::new("in.csv".into(), 3, 20, b"x,\xff\r\n", "bad".into());
        reject.position = 7;
        let first = write_rejects(dir.path(), &(5..9), &[reject.clone()])?;
        let again = write_rejects(dir.path(), &(5..9), &[reject])?;
        assert_eq!(first, again);
        assert_eq!(
            first.path.file_name().and_then(|n| n.to_str()),
            Some("rejects-000000000005-000000000009.ndjson")
        );
        let text = std::fs::read_to_string(&first.path).map_err(|e| SluiceError::write("r", e))?;
        assert_eq!(
            text,
            "{\"file\":\"in.csv\",\"line\":3,\"byte_offset\":20,\"position\":7,\"raw\":\"x,\u{FFFD}\",\"raw_truncated\":false,\"cause\":\"bad\"}\n"
        );
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .map_err(|e| SluiceError::write("d", e))?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name())
            .collect();
        assert_eq!(names.len(), 1, "no temporary file left: {names:?}");
        Ok(())
    }
}
