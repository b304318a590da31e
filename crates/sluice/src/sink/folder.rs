//! What an output folder holds, as files: committed-looking part files (`part-*`), the
//! hidden temporaries a crash leaves (`.*.tmp`), the manifest and the writer's lock. The
//! one place that says whether a folder holds output and that removes what is not to be
//! kept, for the sink (by [`OutputMode`]) and for the job layer's decisions
//! (`sluice_job::output_state`); [`FolderLock`] keeps a folder to one writer at a time.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
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

/// Makes the folder's entries (a rename into it, a new file) durable: without it a power
/// loss may bring back the old name even though the renamed file's data was synced.
pub fn sync_dir(dir: &Path) -> Result<()> {
    #[cfg(unix)]
    {
        let handle = File::open(dir).map_err(|e| SluiceError::write(dir, e))?;
        handle.sync_all().map_err(|e| SluiceError::write(dir, e))?;
    }
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// The lock file of an output folder's writer (it holds the writer's pid).
pub const LOCK_FILE: &str = "_sluice.lock";

/// One writer per output folder: an advisory lock (`flock`) on `_sluice.lock`, held for a
/// run's whole life, so two processes (a supervisor restarting a run while the old one
/// drains, two jobs given one folder) never delete each other's parts or ledgers. The
/// kernel drops the lock when the holder dies, however it dies; a clean release also
/// removes the file (while still holding the lock, so no one can take a lock on a file that
/// is about to vanish: a taker checks that the file it locked is still the one at the path).
#[derive(Debug)]
pub struct FolderLock {
    path: PathBuf,
    file: File,
    created_dir: bool,
}

impl FolderLock {
    /// Creates `dir` if needed and takes its lock; refused
    /// ([`SluiceError::OutputLocked`], naming the holder's pid) while another holds it.
    /// A folder the lock created is removed with it if nothing else was put in it, so a
    /// run refused before writing leaves nothing behind.
    pub fn acquire(dir: &Path) -> Result<FolderLock> {
        let path = dir.join(LOCK_FILE);
        // A release unlinks the file it held (and maybe the folder): retry when the one
        // locked is gone. Two tries suffice unless others keep taking and releasing it.
        for _ in 0..100 {
            let created_dir = !dir.is_dir();
            std::fs::create_dir_all(dir).map_err(|e| SluiceError::write(dir, e))?;
            let opened = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path);
            let mut file = match opened {
                Ok(file) => file,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(SluiceError::write(&path, e)),
            };
            match file.try_lock() {
                Ok(()) => {}
                Err(std::fs::TryLockError::WouldBlock) => {
                    let mut pid = String::new();
                    let _ = file.read_to_string(&mut pid);
                    let holder = match pid.trim() {
                        "" => "another writer".to_string(),
                        pid if pid == std::process::id().to_string() => {
                            format!("another run of this process (pid {pid})")
                        }
                        pid => format!("process {pid}"),
                    };
                    return Err(SluiceError::OutputLocked {
                        dir: dir.to_path_buf(),
                        lock: path,
                        holder,
                    });
                }
                Err(std::fs::TryLockError::Error(e)) => {
                    return Err(SluiceError::write(&path, format!("cannot lock it: {e}")))
                }
            }
            if !still_at(&file, &path) {
                continue;
            }
            let pid = format!("{}\n", std::process::id());
            file.set_len(0)
                .and_then(|()| file.rewind())
                .and_then(|()| file.write_all(pid.as_bytes()))
                .map_err(|e| SluiceError::write(&path, e))?;
            return Ok(FolderLock {
                path,
                file,
                created_dir,
            });
        }
        Err(SluiceError::write(
            &path,
            "the lock file kept being replaced while taking it",
        ))
    }

    /// The folder's lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// True when `file` is the file at `path` (not one unlinked since it was opened).
fn still_at(file: &File, path: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        match (file.metadata(), std::fs::metadata(path)) {
            (Ok(held), Ok(named)) => held.dev() == named.dev() && held.ino() == named.ino(),
            _ => false,
        }
    }
    #[cfg(not(unix))]
    {
        let _ = (file, path);
        true
    }
}

impl Drop for FolderLock {
    fn drop(&mut self) {
        // Removed while locked (see the type's docs); the lock goes with the handle.
        let _ = std::fs::remove_file(&self.path);
        let _ = self.file.unlock();
        if self.created_dir {
            if let Some(dir) = self.path.parent() {
                // Fails, as it should, once anything was written into it.
                let _ = std::fs::remove_dir(dir);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_writer_is_refused_naming_the_holder_and_the_lock_goes_with_the_first() {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("out");
        let first = FolderLock::acquire(&out).expect("first");
        assert!(out.join(LOCK_FILE).is_file());
        let err = FolderLock::acquire(&out).expect_err("second");
        let text = err.to_string();
        assert!(
            matches!(err, SluiceError::OutputLocked { .. })
                && text.contains(&std::process::id().to_string()),
            "{text}"
        );
        assert_eq!(
            holds_output(&out).expect("read"),
            None,
            "a lock is not output"
        );
        clear(&out, &[], true).expect("clear");
        assert!(out.join(LOCK_FILE).is_file(), "clear leaves the lock alone");
        drop(first);
        assert!(
            !out.exists(),
            "created by the lock and left empty: removed with it"
        );
        let again = FolderLock::acquire(&out).expect("free again");
        std::fs::write(out.join("part-00000.csv"), "a\n1\n").expect("write");
        drop(again);
        assert!(!out.join(LOCK_FILE).exists(), "removed on release");
        assert!(out.is_dir(), "a folder holding output stays");
    }

    #[test]
    fn a_lock_file_left_by_a_dead_holder_is_taken() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join(LOCK_FILE), "999999999\n").expect("write");
        let lock = FolderLock::acquire(dir.path()).expect("not locked: taken");
        let pid = std::fs::read_to_string(lock.path()).expect("read");
        assert_eq!(pid.trim(), std::process::id().to_string());
    }
}
