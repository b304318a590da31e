//! Many files of one format read as one source, in order: a list of paths, globs or
//! folders. Every file's schema must match the first file's; a file that differs fails
//! with both paths and the first difference named.

use std::io::Read;
use std::path::{Path, PathBuf};

use arrow::datatypes::SchemaRef;

use super::{
    CsvOptions, CsvSource, IpcFileSource, IpcStreamSource, NdjsonOptions, NdjsonSource,
    ParquetOptions, ParquetSource, PartHint, Source, SourcePart,
};
use crate::error::{Result, SluiceError};

#[derive(Debug, Clone)]
pub enum FileFormat {
    Csv(CsvOptions),
    Parquet(ParquetOptions),
    Ndjson(NdjsonOptions),
    /// Arrow IPC, file or stream (told apart by the file's magic bytes).
    Ipc,
}

impl FileFormat {
    /// `csv`, `tsv`, `parquet`, `ndjson` (`json`, `jsonl`), `ipc` (`arrow`, `feather`).
    pub fn from_name(name: &str) -> Result<Self> {
        match name.to_ascii_lowercase().as_str() {
            "csv" => Ok(FileFormat::Csv(CsvOptions::default())),
            "tsv" => Ok(FileFormat::Csv(CsvOptions::default().with_delimiter(b'\t'))),
            "parquet" | "pq" => Ok(FileFormat::Parquet(ParquetOptions::default())),
            "ndjson" | "json" | "jsonl" => Ok(FileFormat::Ndjson(NdjsonOptions::default())),
            "ipc" | "arrow" | "feather" | "arrows" => Ok(FileFormat::Ipc),
            other => Err(SluiceError::InvalidSetting {
                setting: "format",
                reason: format!(
                    "unknown format {other:?}; expected csv, tsv, parquet, ndjson or ipc"
                ),
            }),
        }
    }

    /// The format a file's extension names.
    pub fn from_path(path: &Path) -> Result<Self> {
        let ext = path.extension().and_then(|e| e.to_str()).ok_or_else(|| {
            SluiceError::UnknownFormat {
                path: path.to_path_buf(),
                reason: "it has no extension; name the format".into(),
            }
        })?;
        Self::from_name(ext).map_err(|_| SluiceError::UnknownFormat {
            path: path.to_path_buf(),
            reason: format!(
                "extension .{ext} is not csv, tsv, parquet, ndjson/json/jsonl or arrow/ipc"
            ),
        })
    }

    pub fn name(&self) -> &'static str {
        match self {
            FileFormat::Csv(_) => "csv",
            FileFormat::Parquet(_) => "parquet",
            FileFormat::Ndjson(_) => "ndjson",
            FileFormat::Ipc => "ipc",
        }
    }

    /// Opens one file of this format as a source.
    pub fn open(&self, path: &Path) -> Result<Box<dyn Source>> {
        Ok(match self {
            FileFormat::Csv(o) => Box::new(CsvSource::open_with(path, o.clone())?),
            FileFormat::Parquet(o) => Box::new(ParquetSource::open_with(path, o.clone())?),
            FileFormat::Ndjson(o) => Box::new(NdjsonSource::open_with(path, o.clone())?),
            FileFormat::Ipc => {
                if is_ipc_file(path)? {
                    Box::new(IpcFileSource::open(path)?)
                } else {
                    Box::new(IpcStreamSource::open(path)?)
                }
            }
        })
    }
}

fn is_ipc_file(path: &Path) -> Result<bool> {
    let mut magic = [0u8; 6];
    let mut file = std::fs::File::open(path).map_err(|source| SluiceError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    let n = file.read(&mut magic).map_err(|source| SluiceError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(n == 6 && &magic == b"ARROW1")
}

/// Expands inputs (files, globs, folders) into a sorted, de-duplicated list of files.
pub fn expand_inputs<S: AsRef<str>>(inputs: &[S]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for input in inputs {
        let input = input.as_ref();
        let path = Path::new(input);
        if path.is_dir() {
            let mut files: Vec<PathBuf> = std::fs::read_dir(path)
                .map_err(|source| SluiceError::Open {
                    path: path.to_path_buf(),
                    source,
                })?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.is_file() && !is_hidden_or_meta(p) && FileFormat::from_path(p).is_ok()
                })
                .collect();
            files.sort();
            if files.is_empty() {
                return Err(SluiceError::NoInput {
                    pattern: format!("{input} (a folder with no data files)"),
                });
            }
            out.extend(files);
        } else if input.contains(['*', '?', '[']) {
            let paths = glob::glob(input).map_err(|e| SluiceError::InvalidSetting {
                setting: "input",
                reason: format!("bad glob pattern {input:?}: {e}"),
            })?;
            let mut files: Vec<PathBuf> = paths
                .filter_map(|p| p.ok())
                .filter(|p| p.is_file())
                .collect();
            files.sort();
            if files.is_empty() {
                return Err(SluiceError::NoInput {
                    pattern: input.to_string(),
                });
            }
            out.extend(files);
        } else {
            if !path.exists() {
                return Err(SluiceError::Open {
                    path: path.to_path_buf(),
                    source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
                });
            }
            out.push(path.to_path_buf());
        }
    }
    let mut seen = std::collections::HashSet::new();
    out.retain(|p| seen.insert(p.clone()));
    Ok(out)
}

fn is_hidden_or_meta(p: &Path) -> bool {
    p.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with('.') || n.starts_with('_'))
}

pub struct FilesSource {
    paths: Vec<PathBuf>,
    format: Option<FileFormat>,
    current: Box<dyn Source>,
    next_file: usize,
    schema: SchemaRef,
    total_bytes: u64,
}

impl FilesSource {
    /// Opens `inputs` (files, globs or folders); the format is `format`, or each file's
    /// extension when `None`.
    pub fn open<S: AsRef<str>>(inputs: &[S], format: Option<FileFormat>) -> Result<Self> {
        let paths = expand_inputs(inputs)?;
        let Some(first) = paths.first() else {
            return Err(SluiceError::NoInput {
                pattern: "(no inputs given)".into(),
            });
        };
        let current = open_one(first, format.as_ref())?;
        let total_bytes = paths
            .iter()
            .map(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
            .sum();
        Ok(FilesSource {
            schema: current.schema(),
            current,
            paths,
            format,
            next_file: 1,
            total_bytes,
        })
    }

    pub fn paths(&self) -> &[PathBuf] {
        &self.paths
    }
}

fn open_one(path: &Path, format: Option<&FileFormat>) -> Result<Box<dyn Source>> {
    match format {
        Some(f) => f.open(path),
        None => FileFormat::from_path(path)?.open(path),
    }
}

fn schema_difference(a: &SchemaRef, b: &SchemaRef) -> Option<String> {
    let (fa, fb) = (a.fields(), b.fields());
    if fa.len() != fb.len() {
        return Some(format!(
            "{} columns {:?} instead of {} columns {:?}",
            fb.len(),
            fb.iter().map(|f| f.name()).collect::<Vec<_>>(),
            fa.len(),
            fa.iter().map(|f| f.name()).collect::<Vec<_>>()
        ));
    }
    fa.iter()
        .zip(fb.iter())
        .enumerate()
        .find_map(|(i, (x, y))| {
            if x.name() != y.name() {
                Some(format!(
                    "column {i} is {:?} instead of {:?}",
                    y.name(),
                    x.name()
                ))
            } else if x.data_type() != y.data_type() {
                Some(format!(
                    "column {:?} is {} instead of {}",
                    x.name(),
                    y.data_type(),
                    x.data_type()
                ))
            } else {
                None
            }
        })
}

impl Source for FilesSource {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn name(&self) -> String {
        if self.paths.len() == 1 {
            self.current.name()
        } else {
            format!(
                "{} files ({}...)",
                self.paths.len(),
                self.paths[0].display()
            )
        }
    }

    fn total_bytes(&self) -> Option<u64> {
        Some(self.total_bytes)
    }

    fn skip_whole_parts(&mut self, max_rows: u64) -> Result<(u64, u64)> {
        // Within the current file only: the next file is opened by `next_part`.
        self.current.skip_whole_parts(max_rows)
    }

    fn next_part(&mut self, hint: PartHint) -> Result<Option<(SourcePart, u64)>> {
        loop {
            if let Some(part) = self.current.next_part(hint)? {
                return Ok(Some(part));
            }
            let Some(path) = self.paths.get(self.next_file) else {
                return Ok(None);
            };
            let mut next = open_one(path, self.format.as_ref())?;
            if let Some(difference) = schema_difference(&self.schema, &next.schema()) {
                // CSV types are inferred per file; a column inferred as Int64 in one file and
                // Float64 in another is still the same column. Decode it with the first schema.
                let csv_names_match = matches!(
                    next_format(path, self.format.as_ref()),
                    Some(FileFormat::Csv(_))
                ) && self.schema.fields().len()
                    == next.schema().fields().len()
                    && self
                        .schema
                        .fields()
                        .iter()
                        .zip(next.schema().fields().iter())
                        .all(|(a, b)| a.name() == b.name());
                if !csv_names_match {
                    return Err(SluiceError::SchemaMismatch {
                        path: path.clone(),
                        first: self.paths[0].clone(),
                        difference,
                    });
                }
                let options = match next_format(path, self.format.as_ref()) {
                    Some(FileFormat::Csv(o)) => o.with_schema(self.schema.clone()),
                    _ => CsvOptions::default().with_schema(self.schema.clone()),
                };
                next = Box::new(CsvSource::open_with(path, options)?);
            }
            self.current = next;
            self.next_file += 1;
        }
    }
}

fn next_format(path: &Path, format: Option<&FileFormat>) -> Option<FileFormat> {
    match format {
        Some(f) => Some(f.clone()),
        None => FileFormat::from_path(path).ok(),
    }
}
