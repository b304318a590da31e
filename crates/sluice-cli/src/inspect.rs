//! `sluice inspect`: what a data file holds, without processing it: schema, rows and size on
//! disk, plus row groups for Parquet (read from the footer). Other formats are counted by
//! streaming through the file, never by loading it. A run's output folder also shows its manifest.

use std::fs::File;
use std::path::Path;

use arrow::datatypes::Schema;
use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ArrowReaderOptions};
use sluice::sink::manifest::MANIFEST_FILE;
use sluice::source::files::expand_inputs;
use sluice::source::{PartHint, Source, SourcePart};
use sluice::{FileFormat, Manifest, SluiceError};

use crate::cli::InspectArgs;
use crate::error::CliError;
use crate::size::human_bytes;
use sluice_job::output_state::status_name;

const HINT: PartHint = PartHint {
    rows: 64 * 1024,
    bytes: 8 << 20,
};

pub fn inspect(args: InspectArgs) -> Result<(), CliError> {
    let format = args
        .format
        .map(|f| FileFormat::from_name(f.name()))
        .transpose()
        .map_err(|e| CliError::setup("bad --format", e))?;
    for input in &args.files {
        let dir = Path::new(input);
        if dir.join(MANIFEST_FILE).is_file() {
            show_manifest(dir)?;
        }
    }
    let paths =
        expand_inputs(&args.files).map_err(|e| CliError::setup("cannot open the input", e))?;
    for (i, path) in paths.iter().enumerate() {
        if i > 0 {
            println!();
        }
        let format = match &format {
            Some(f) => f.clone(),
            None => {
                FileFormat::from_path(path).map_err(|e| CliError::setup("cannot inspect", e))?
            }
        };
        inspect_file(path, &format)?;
    }
    Ok(())
}

fn show_manifest(dir: &Path) -> Result<(), CliError> {
    let manifest =
        Manifest::read_from(dir).map_err(|e| CliError::run("cannot read the manifest", e))?;
    println!("{} (output of a run)", dir.display());
    println!("  status:       {}", status_name(manifest.status));
    println!("  format:       {}", manifest.format.extension());
    println!("  parts:        {}", manifest.parts.len());
    println!("  rows:         {}", manifest.total_rows);
    if let Some(error) = &manifest.error {
        println!("  error:        {error}");
    }
    println!();
    Ok(())
}

fn inspect_file(path: &Path, format: &FileFormat) -> Result<(), CliError> {
    let bytes = std::fs::metadata(path)
        .map_err(|e| CliError::io("read", path, e))?
        .len();
    println!("{}", path.display());
    println!("  format:       {}", format.name());
    println!("  size on disk: {} ({bytes} bytes)", human_bytes(bytes));
    match format {
        FileFormat::Parquet(_) => inspect_parquet(path),
        other => inspect_streamed(path, other),
    }
}

fn inspect_parquet(path: &Path) -> Result<(), CliError> {
    let file = File::open(path).map_err(|e| CliError::io("open", path, e))?;
    let metadata =
        ArrowReaderMetadata::load(&file, ArrowReaderOptions::default()).map_err(|e| {
            CliError::run(
                "cannot inspect",
                SluiceError::BadInput {
                    path: path.to_path_buf(),
                    location: "footer".into(),
                    message: format!("not a readable Parquet file: {e}"),
                },
            )
        })?;
    let meta = metadata.metadata();
    println!("  rows:         {}", meta.file_metadata().num_rows());
    show_schema(metadata.schema());
    println!("  row groups:   {}", meta.num_row_groups());
    for (i, group) in meta.row_groups().iter().enumerate() {
        println!(
            "    {i}: {} rows, {} compressed, {} uncompressed",
            group.num_rows(),
            human_bytes(group.compressed_size().max(0) as u64),
            human_bytes(group.total_byte_size().max(0) as u64)
        );
    }
    Ok(())
}

/// Counts rows by decoding the file part by part (CSV, NDJSON, IPC).
fn inspect_streamed(path: &Path, format: &FileFormat) -> Result<(), CliError> {
    let failed = |e| CliError::run("cannot inspect", e);
    let mut source = format
        .open(path)
        .map_err(|e| CliError::setup("cannot inspect", e))?;
    let schema = source.schema();
    let (mut rows, mut malformed) = (0u64, 0u64);
    while let Some((part, _)) = source.next_part(HINT).map_err(failed)? {
        match part {
            SourcePart::Ready(batch) | SourcePart::Owned(batch) => rows += batch.num_rows() as u64,
            SourcePart::Deferred { decode, .. } => {
                let part = decode().map_err(failed)?;
                rows += part.rows() as u64;
                malformed += part.rejects.len() as u64;
            }
        }
    }
    println!("  rows:         {rows}");
    if malformed > 0 {
        // `run` fails on them, or sets them aside with --on-error skip / dead-letter.
        println!("  malformed:    {malformed} records that do not decode");
    }
    show_schema(&schema);
    Ok(())
}

fn show_schema(schema: &Schema) {
    println!("  columns:      {}", schema.fields().len());
    let width = schema
        .fields()
        .iter()
        .map(|f| f.name().len())
        .max()
        .unwrap_or(0);
    for field in schema.fields() {
        println!(
            "    {:width$}  {}{}",
            field.name(),
            field.data_type(),
            if field.is_nullable() { "" } else { " not null" }
        );
    }
}
