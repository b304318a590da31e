//! What an output folder holds, as files: committed-looking part files (`part-*`), the
//! hidden temporaries a crash leaves (`.*.tmp`) and the manifest. The one place that says
//! whether a folder holds output and that removes what is not to be kept, for the sink
//! (by [`OutputMode`]) and for the job layer's decisions (`sluice_job::output_state`).

use std::path::{Path, PathBuf};

use super::manifest::{self, Manifest, PartInfo};
use super::{OutputMode, OutputOptions};
use crate::error::{Result, SluiceError};

/// Makes `options.dir` ready for a run by its mode (see [`OutputMode`]).
pub(crate) fn prepare(options: &OutputOptions) -> Result<()> {
    let dir = &options.dir;
    match options.mode {
        OutputMode::New => {
            remove_temporaries(dir)?;
            if let Some(what) = holds_output(dir)? {
                return Err(SluiceError::OutputExists {
                    dir: dir.clone(),
                    what,
                });
            }
            Ok(())
        }
        OutputMode::Overwrite => clear(dir, &[], true),
        OutputMode::Resume => clear(dir, &options.resume_parts, false),
    }
}

/// What output `dir` holds (a manifest or part files), said for a person; `None` if none.
pub fn holds_output(dir: &Path) -> Result<Option<String>> {
    let parts = part_files(dir)?;
    if !dir.join(manifest::MANIFEST_FILE).is_file() {
        return Ok((!parts.is_empty()).then(|| format!("{} part files", parts.len())));
    }
    Ok(Some(match Manifest::read_from(dir) {
        Ok(m) => format!(
            "a {} with status {:?} listing {} parts, and {} part files",
            manifest::MANIFEST_FILE,
            m.status,
            m.parts.len(),
            parts.len()
        ),
        Err(_) => format!(
            "an unreadable {} and {} part files",
            manifest::MANIFEST_FILE,
            parts.len()
        ),
    }))
}

/// Removes temporaries and every part file not in `keep`, and the manifest too with
/// `remove_manifest`.
pub fn clear(dir: &Path, keep: &[PartInfo], remove_manifest: bool) -> Result<()> {
    remove_temporaries(dir)?;
    for path in part_files(dir)? {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if !keep.iter().any(|p| p.file == name) {
            std::fs::remove_file(&path).map_err(|e| SluiceError::write(&path, e))?;
        }
    }
    if remove_manifest {
        let manifest = dir.join(manifest::MANIFEST_FILE);
        match std::fs::remove_file(&manifest) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(SluiceError::write(&manifest, e));
            }
            _ => {}
        }
    }
    Ok(())
}

/// Complete-looking part files (`part-*`) in `dir`, sorted.
pub fn part_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(SluiceError::Read {
                path: dir.to_path_buf(),
                source: e,
            })
        }
    };
    let mut parts: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("part-"))
        })
        .collect();
    parts.sort();
    Ok(parts)
}

/// The number in a part's name (`part-00012.parquet`: 12).
pub(crate) fn part_index(file: &str) -> Option<usize> {
    file.strip_prefix("part-")?.split('.').next()?.parse().ok()
}

/// Removes the hidden temporaries (`.*.tmp`) a crashed run left.
pub fn remove_temporaries(dir: &Path) -> Result<()> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') && name.ends_with(".tmp") {
            std::fs::remove_file(entry.path()).map_err(|e| SluiceError::write(entry.path(), e))?;
        }
    }
    Ok(())
}
