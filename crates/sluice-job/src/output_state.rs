//! The one owner of an output folder's state between runs: what its `_manifest.json` says is
//! committed, what a fresh, overwriting or resuming job removes or keeps (parts,
//! temporaries, dead letters, the run record), and `_sluice_run.json`, which records the
//! inputs and SQL of a run so a resume with other inputs or SQL is refused. The command,
//! Python and cluster drivers ask it, holding the folder's one-writer lock ([`lock`]) from
//! before it is read until the run ends; nothing else decides what to delete.

use std::path::{Path, PathBuf};

use arrow::datatypes::Schema;
use serde::{Deserialize, Serialize};
use sluice::sink::folder::{self, FolderLock};
use sluice::sink::manifest::MANIFEST_FILE;
use sluice::{DeadLetter, Manifest, OutputFormat, OutputOptions, PartInfo, RunStatus};

use crate::error::{JobError, Result};
use crate::two_pass::GlobalRecord;

/// Records what a run reads and does, for a later `--resume` to check.
pub const RUN_FILE: &str = "_sluice_run.json";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputFile {
    pub path: PathBuf,
    pub bytes: u64,
}

/// What a run reads and does, as far as resuming it depends on it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunRecord {
    pub inputs: Vec<InputFile>,
    pub sql: Option<String>,
    pub ordered: bool,
    /// `--windows global`: pass 1's values and the inputs they describe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub global: Option<GlobalRecord>,
    /// An in-memory input (a DataFrame from Python): its rows and columns, which a resume
    /// must find again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<String>,
}

impl RunRecord {
    pub fn new(paths: &[PathBuf], sql: Option<&str>, ordered: bool) -> Self {
        let inputs = paths
            .iter()
            .map(|p| InputFile {
                path: std::fs::canonicalize(p).unwrap_or_else(|_| p.clone()),
                bytes: std::fs::metadata(p).map(|m| m.len()).unwrap_or(0),
            })
            .collect();
        RunRecord {
            inputs,
            sql: sql.map(str::to_string),
            ordered,
            global: None,
            table: None,
        }
    }

    /// The record of a job over an in-memory table of `rows` rows of `schema`.
    pub fn for_table(rows: u64, schema: &Schema, sql: Option<&str>, ordered: bool) -> Self {
        let columns: Vec<String> = schema
            .fields()
            .iter()
            .map(|f| format!("{} {}", f.name(), f.data_type()))
            .collect();
        RunRecord {
            table: Some(format!(
                "an in-memory table of {rows} rows ({})",
                columns.join(", ")
            )),
            ..RunRecord::new(&[], sql, ordered)
        }
    }

    pub fn write_to(&self, dir: &Path) -> Result<()> {
        let path = dir.join(RUN_FILE);
        let text = serde_json::to_string_pretty(self)
            .map_err(|e| JobError::io("write", &path, std::io::Error::other(e)))?;
        std::fs::write(&path, text).map_err(|e| JobError::io("write", &path, e))
    }

    pub fn read_from(dir: &Path) -> Result<Option<Self>> {
        let path = dir.join(RUN_FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text)
                .map(Some)
                .map_err(|e| JobError::Resume {
                    dir: dir.to_path_buf(),
                    reason: format!("{RUN_FILE} cannot be read: {e}"),
                }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(JobError::io("read", path, e)),
        }
    }

    /// Why a run with `self` cannot continue the `earlier` one, if it cannot.
    fn difference(&self, earlier: &RunRecord) -> Option<String> {
        if !earlier.ordered {
            return Some(
                "the earlier run was --unordered, so its parts are not a prefix of the input"
                    .into(),
            );
        }
        if self.inputs != earlier.inputs {
            let show = |r: &RunRecord| {
                r.inputs
                    .iter()
                    .map(|i| format!("{} ({} bytes)", i.path.display(), i.bytes))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            return Some(format!(
                "the input differs from the earlier run's: now {}, then {}",
                show(self),
                show(earlier)
            ));
        }
        if self.table != earlier.table {
            let show = |r: &RunRecord| r.table.clone().unwrap_or_else(|| "files".into());
            return Some(format!(
                "the input differs from the earlier run's: now {}, then {}",
                show(self),
                show(earlier)
            ));
        }
        if self.sql != earlier.sql {
            return Some("the SQL differs from the earlier run's".into());
        }
        if self.global.is_some() != earlier.global.is_some() {
            let mode = |r: &RunRecord| {
                if r.global.is_some() {
                    "global"
                } else {
                    "chunk"
                }
            };
            return Some(format!(
                "the earlier run used --windows {}, this one --windows {}",
                mode(earlier),
                mode(self)
            ));
        }
        None
    }
}

/// Takes `dir`'s one-writer lock (creating the folder; a folder created here and left
/// empty goes with the lock): refused while another process or run writes it. Taken before
/// the folder is read ([`plan`]) and held until the run's final manifest is written, so no
/// other writer deletes what this one decided to keep, or writes between.
pub fn lock(dir: &Path) -> Result<FolderLock> {
    FolderLock::acquire(dir).map_err(|e| JobError::setup("cannot take the output folder", e))
}

/// What to do with the output folder.
#[derive(Debug)]
pub enum Plan {
    /// Nothing to keep: start from the first input row.
    Fresh,
    /// The earlier run completed: nothing to do.
    Complete(Manifest),
    /// Keep the earlier run's complete parts and skip the input rows they cover.
    Continue { manifest: Manifest, skip_rows: u64 },
}

/// Decides what to do with `dir` (which has not been touched yet).
pub fn plan(dir: &Path, resume: bool, overwrite: bool, record: &RunRecord) -> Result<Plan> {
    let has_manifest = dir.join(MANIFEST_FILE).is_file();
    let parts = part_files(dir)?;
    if overwrite || (!has_manifest && parts.is_empty()) {
        return Ok(Plan::Fresh);
    }
    if !resume {
        let what = folder::holds_output(dir)
            .map_err(|e| JobError::run("reading the output folder", e))?
            .unwrap_or_default();
        return Err(JobError::OutputExists {
            dir: dir.to_path_buf(),
            what,
        });
    }
    let refuse = |reason: String| JobError::Resume {
        dir: dir.to_path_buf(),
        reason,
    };
    if !has_manifest {
        return Err(refuse(format!(
            "it holds part files but no {MANIFEST_FILE} saying which are complete; use --overwrite"
        )));
    }
    let manifest = Manifest::read_from(dir).map_err(|e| refuse(e.to_string()))?;
    if manifest.status == RunStatus::Complete {
        return Ok(Plan::Complete(manifest));
    }
    if let Some(earlier) = RunRecord::read_from(dir)? {
        if let Some(difference) = record.difference(&earlier) {
            return Err(refuse(difference));
        }
    }
    let skip_rows = check_prefix(&manifest.parts).map_err(refuse)?;
    for part in &manifest.parts {
        if !dir.join(&part.file).is_file() {
            return Err(refuse(format!(
                "{} is listed in {MANIFEST_FILE} but missing; use --overwrite",
                part.file
            )));
        }
    }
    Ok(Plan::Continue {
        manifest,
        skip_rows,
    })
}

/// Checks that `parts` cover the input in order (gaps are rows a policy dropped) and
/// returns the input rows they cover.
fn check_prefix(parts: &[PartInfo]) -> Result<u64, String> {
    let mut end = 0;
    for part in parts {
        if part.input_row_start < end || part.input_row_end < part.input_row_start {
            return Err(format!(
                "{} covers input rows {}..{}, which do not follow the parts before it (ending at {end}); the earlier run was not ordered",
                part.file, part.input_row_start, part.input_row_end
            ));
        }
        end = part.input_row_end;
    }
    Ok(end)
}

/// Removes what is not part of the output to keep: part files not in `keep`, temporaries,
/// and (when `keep` is empty) the manifest and run record.
pub fn clear(dir: &Path, keep: &[PartInfo]) -> Result<()> {
    folder::clear(dir, keep, keep.is_empty())
        .map_err(|e| JobError::run("cleaning the output folder", e))?;
    if keep.is_empty() {
        let path = dir.join(RUN_FILE);
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(JobError::io("remove", &path, e));
            }
            _ => {}
        }
    }
    Ok(())
}

/// Splits the dead letters of a resumed folder at the resume point `skip_rows`: those of
/// the committed rows are kept (and listed again); any past it — listed by a run that then
/// failed, or written by a run killed before its manifest listed them — are removed, since
/// the resumed run redoes those rows (possibly cut into other chunks). Besides the folders
/// the manifest names, `this_run` (the folder this run writes its dead letters to) is
/// searched for unlisted ones.
pub fn split_dead_letters(
    manifest: &Manifest,
    skip_rows: u64,
    this_run: Option<&Path>,
) -> Result<Vec<DeadLetter>> {
    let (keep, _past): (Vec<DeadLetter>, Vec<DeadLetter>) = manifest
        .dead_letters
        .iter()
        .cloned()
        .partition(|l| l.input_rows.end <= skip_rows);
    let mut dirs: Vec<PathBuf> = manifest
        .dead_letters
        .iter()
        .filter_map(|l| l.path.parent().map(Path::to_path_buf))
        .collect();
    dirs.extend(this_run.map(Path::to_path_buf));
    dirs.sort();
    dirs.dedup();
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let kept = keep
                .iter()
                .any(|l| l.path == path || l.path.with_extension("error.txt") == path);
            let past = letter_start(&path).is_some_and(|start| start >= skip_rows);
            if past && !kept {
                std::fs::remove_file(&path).map_err(|e| JobError::io("remove", &path, e))?;
            }
        }
    }
    Ok(keep)
}

/// The first input row a dead-letter file covers, from its name (`rows-START-END.arrow`,
/// `rows-START-END.error.txt`, `rejects-START-END.ndjson`).
fn letter_start(path: &Path) -> Option<u64> {
    let name = path.file_name()?.to_str()?;
    let rest = name
        .strip_prefix("rows-")
        .or_else(|| name.strip_prefix("rejects-"))?;
    rest.split('-').next()?.parse().ok()
}

/// Complete-looking part files (`part-*`) in `dir`, as the sink sees them.
fn part_files(dir: &Path) -> Result<Vec<PathBuf>> {
    folder::part_files(dir).map_err(|e| JobError::run("reading the output folder", e))
}

pub fn status_name(status: RunStatus) -> &'static str {
    match status {
        RunStatus::Running => "running",
        RunStatus::Complete => "complete",
        RunStatus::Failed => "failed",
        RunStatus::Stopped => "stopped",
    }
}

/// Refuses a resume whose output would not match the parts already written: another
/// part format than `requested`, or other columns than the job writes (`output`, when
/// known before the run; a pass-through part holds the `input` columns).
pub fn check_continues(
    dir: &Path,
    manifest: &Manifest,
    requested: Option<OutputFormat>,
    input: &Schema,
    output: Option<&Schema>,
) -> Result<()> {
    let refuse = |reason: String| JobError::Resume {
        dir: dir.to_path_buf(),
        reason,
    };
    if let Some(format) = requested {
        if format != manifest.format {
            return Err(refuse(format!(
                "its parts are {}, not {}; ask for {} parts (or none) to continue it",
                manifest.format.extension(),
                format.extension(),
                manifest.format.extension()
            )));
        }
    }
    let Some(output) = output else {
        return Ok(());
    };
    if manifest.parts.is_empty() || manifest.schema.is_empty() {
        return Ok(());
    }
    let describe = |schema: &Schema| -> Vec<(String, String)> {
        schema
            .fields()
            .iter()
            .map(|f| (f.name().clone(), f.data_type().to_string()))
            .collect()
    };
    let written: Vec<(String, String)> = manifest
        .schema
        .iter()
        .map(|c| (c.name.clone(), c.data_type.clone()))
        .collect();
    if written != describe(output) && written != describe(input) {
        return Err(refuse(format!(
            "its parts have columns {:?}, this run writes {:?}",
            written.iter().map(|c| &c.0).collect::<Vec<_>>(),
            output.fields().iter().map(|f| f.name()).collect::<Vec<_>>()
        )));
    }
    Ok(())
}

/// An output folder made ready for a one-pass job: the sink's options and the input rows
/// the earlier run already committed (the source skips them).
pub struct Prepared {
    /// The folder's one-writer lock: hold it until the run has ended.
    pub lock: FolderLock,
    pub output: OutputOptions,
    pub skip_rows: u64,
    /// The earlier run completed: nothing to do.
    pub complete: Option<Manifest>,
}

/// Takes the folder's lock, decides what to do with `dir` (see [`plan`]), checks that a
/// resumed run writes what the earlier one did, and clears what is not kept. `letters_dir` is where this job writes its
/// dead letters.
#[allow(clippy::too_many_arguments)]
pub fn prepare(
    dir: &Path,
    resume: bool,
    overwrite: bool,
    record: &RunRecord,
    requested: Option<OutputFormat>,
    input: &Schema,
    output: Option<&Schema>,
    letters_dir: Option<&Path>,
) -> Result<Prepared> {
    let lock = lock(dir)?;
    let (format, keep, skip_rows, letters) = match plan(dir, resume, overwrite, record)? {
        Plan::Complete(manifest) => {
            return Ok(Prepared {
                lock,
                output: OutputOptions::new(dir),
                skip_rows: 0,
                complete: Some(manifest),
            })
        }
        Plan::Continue {
            manifest,
            skip_rows,
        } => {
            check_continues(dir, &manifest, requested, input, output)?;
            let letters = split_dead_letters(&manifest, skip_rows, letters_dir)?;
            (manifest.format, manifest.parts, skip_rows, letters)
        }
        Plan::Fresh => (requested.unwrap_or_default(), Vec::new(), 0, Vec::new()),
    };
    clear(dir, &keep)?;
    let output = OutputOptions::new(dir)
        .format(format)
        .resume(keep, skip_rows)
        .keep_dead_letters(letters);
    Ok(Prepared {
        lock,
        output,
        skip_rows,
        complete: None,
    })
}

/// Marks the folder's run failed (the caller then removes its parts), for a run that
/// failed after its manifest was written, such as an input that changed under pass 2.
pub fn mark_failed(dir: &Path, error: &str) -> Result<()> {
    let Ok(mut manifest) = Manifest::read_from(dir) else {
        return Ok(());
    };
    manifest.status = RunStatus::Failed;
    manifest.error = Some(error.to_string());
    manifest
        .write_to(dir)
        .map_err(|e| JobError::run("marking the run failed", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(file: &str, start: u64, end: u64, rows: u64) -> PartInfo {
        PartInfo {
            file: file.into(),
            rows,
            input_row_start: start,
            input_row_end: end,
            bytes: 1,
            columns: None,
        }
    }

    #[test]
    fn ordered_parts_with_gaps_are_a_prefix() {
        let parts = [
            part("part-00000.csv", 0, 10, 10),
            part("part-00001.csv", 15, 20, 5),
        ];
        assert_eq!(check_prefix(&parts), Ok(20));
        assert_eq!(check_prefix(&[]), Ok(0));
    }

    #[test]
    fn out_of_order_parts_are_refused() {
        let parts = [
            part("part-00000.csv", 10, 20, 10),
            part("part-00001.csv", 0, 10, 10),
        ];
        assert!(check_prefix(&parts).is_err());
    }

    #[test]
    fn a_changed_input_is_refused() {
        let a = RunRecord {
            inputs: vec![InputFile {
                path: "a.csv".into(),
                bytes: 10,
            }],
            sql: None,
            ordered: true,
            global: None,
            table: None,
        };
        let mut b = a.clone();
        assert_eq!(a.difference(&b), None);
        b.inputs[0].bytes = 11;
        assert!(a
            .difference(&b)
            .is_some_and(|d| d.contains("input differs")));
        b = a.clone();
        b.ordered = false;
        assert!(a.difference(&b).is_some_and(|d| d.contains("unordered")));
    }
}
