//! `sluice demo`: the seed's "Basic Streaming Processing" end to end. Generates its sample
//! dataset (streamed to a temporary file in blocks), runs its `data_preprocessing` as
//! per-chunk SQL with chunk_size 5000, prints the statistics block, removes the files.

use std::fs::File;
use std::io::BufWriter;
use std::path::Path;
use std::sync::Arc;

use arrow::array::{ArrayRef, Float64Array, Int64Array, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use parquet::arrow::ArrowWriter;
use parquet::file::properties::WriterProperties;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::StandardNormal;
use sluice::{FileFormat, FilesSource, OutputOptions, Source};
use sluice_job::{EngineSettings, Transform};
use sluice_sql::Windows;

use crate::cli::{DemoArgs, DemoFormat};
use crate::error::CliError;
use crate::run::execute;
use crate::signals;
use crate::size::human_bytes;
use crate::ui::Ui;

/// The seed's `data_preprocessing` as SQL (the repository's `examples/seed_preprocessing.sql`).
pub const SEED_SQL: &str = include_str!("../../../examples/seed_preprocessing.sql");

const BLOCK_ROWS: usize = 64 * 1024;
const CATEGORIES: [&str; 3] = ["A", "B", "C"];

pub fn demo(args: DemoArgs, ui: Ui) -> Result<(), CliError> {
    if args.rows == 0 {
        return Err(CliError::BadValue {
            flag: "rows",
            value: "0".into(),
            reason: "the demo needs at least 1 row".into(),
        });
    }
    let workdir = tempfile::Builder::new()
        .prefix("sluice-demo-")
        .tempdir()
        .map_err(|e| CliError::io("create a temporary folder in", std::env::temp_dir(), e))?;
    let result = demo_in(&args, workdir.path(), ui);
    let path = workdir.path().to_path_buf();
    workdir
        .close()
        .map_err(|e| CliError::io("remove", path, e))?;
    result
}

fn demo_in(args: &DemoArgs, workdir: &Path, ui: Ui) -> Result<(), CliError> {
    let extension = match args.input_format {
        DemoFormat::Parquet => "parquet",
        DemoFormat::Csv => "csv",
    };
    let input = workdir.join(format!("sample.{extension}"));
    let loud = !ui.quiet;
    if loud {
        println!("Creating test dataset...");
    }
    generate(&input, args.rows, args.seed, args.input_format)?;
    if signals::interrupted() {
        return Err(CliError::Interrupted);
    }
    let bytes = std::fs::metadata(&input).map(|m| m.len()).unwrap_or(0);
    if loud {
        println!(
            "Dataset created: ({}, 5), {} of {extension}",
            args.rows,
            human_bytes(bytes)
        );
    }

    let paths = [input.display().to_string()];
    let format =
        FileFormat::from_name(extension).map_err(|e| CliError::setup("bad demo format", e))?;
    let source = FilesSource::open(&paths, Some(format))
        .map_err(|e| CliError::setup("cannot open the sample", e))?;
    let transform = Transform::Sql {
        text: SEED_SQL.into(),
        windows: Windows::Chunk,
    };
    let (function, output_schema) = transform.plan_chunk(source.schema())?;
    let columns = output_schema.fields().len();
    // The seed example's settings.
    let settings = EngineSettings {
        chunk_size: Some(5_000),
        max_memory_mb: Some(500.0),
        workers: args.workers,
        ..EngineSettings::default()
    };
    let pipeline = settings
        .build()
        .map_err(|e| CliError::setup("bad settings", e))?;
    let output = OutputOptions::new(workdir.join("processed_data"));

    if loud {
        println!("Starting streaming processing...");
    }
    let summary = execute(
        &pipeline,
        Box::new(source),
        function,
        output,
        ui,
        || Ok(()),
        "",
    )?;
    if signals::interrupted() {
        return Err(CliError::Interrupted);
    }
    let stats = pipeline.stats();
    if loud {
        let parts = summary.manifest.as_ref().map_or(0, |m| m.parts.len());
        println!(
            "Final result shape: ({}, {columns}) in {parts} part files",
            stats.total_rows_processed
        );
        println!();
        print!("{}", stats.report());
    }
    Ok(())
}

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("feature_1", DataType::Float64, false),
        Field::new("feature_2", DataType::Float64, false),
        Field::new("feature_3", DataType::Float64, false),
        Field::new("category", DataType::Utf8, false),
        Field::new("target", DataType::Int64, false),
    ]))
}

/// One block of the seed's `create_large_dataset`: three standard normal features, a
/// category drawn from A/B/C and a 0/1 target.
fn block(
    rng: &mut StdRng,
    schema: &SchemaRef,
    rows: usize,
) -> Result<RecordBatch, arrow::error::ArrowError> {
    let mut normal = || -> ArrayRef {
        Arc::new(Float64Array::from_iter_values(
            (0..rows).map(|_| rng.sample::<f64, _>(StandardNormal)),
        ))
    };
    let (f1, f2, f3) = (normal(), normal(), normal());
    let category: ArrayRef = Arc::new(StringArray::from_iter_values(
        (0..rows).map(|_| CATEGORIES[rng.random_range(0..CATEGORIES.len())]),
    ));
    let target: ArrayRef = Arc::new(Int64Array::from_iter_values(
        (0..rows).map(|_| rng.random_range(0..2)),
    ));
    RecordBatch::try_new(schema.clone(), vec![f1, f2, f3, category, target])
}

/// Writes `rows` rows of sample data to `path`, one block at a time.
fn generate(path: &Path, rows: u64, seed: u64, format: DemoFormat) -> Result<(), CliError> {
    let schema = schema();
    let mut rng = StdRng::seed_from_u64(seed);
    let file = File::create(path).map_err(|e| CliError::io("create", path, e))?;
    let bad = |e: &dyn std::fmt::Display| {
        CliError::io("write", path, std::io::Error::other(e.to_string()))
    };
    let mut writer = match format {
        DemoFormat::Parquet => {
            let props = WriterProperties::builder()
                .set_max_row_group_row_count(Some(BLOCK_ROWS))
                .build();
            Writer::Parquet(
                ArrowWriter::try_new(BufWriter::new(file), schema.clone(), Some(props))
                    .map_err(|e| bad(&e))?,
            )
        }
        DemoFormat::Csv => Writer::Csv(
            arrow::csv::WriterBuilder::new()
                .with_header(true)
                .build(BufWriter::new(file)),
        ),
    };
    let mut left = rows;
    while left > 0 && !signals::interrupted() {
        let n = left.min(BLOCK_ROWS as u64) as usize;
        let batch = block(&mut rng, &schema, n).map_err(|e| bad(&e))?;
        match &mut writer {
            Writer::Parquet(w) => w.write(&batch).map_err(|e| bad(&e))?,
            Writer::Csv(w) => w.write(&batch).map_err(|e| bad(&e))?,
        }
        left -= n as u64;
    }
    match writer {
        Writer::Parquet(w) => w.close().map(drop).map_err(|e| bad(&e)),
        Writer::Csv(w) => w
            .into_inner()
            .into_inner()
            .map(drop)
            .map_err(|e| bad(&e.error())),
    }
}

enum Writer {
    Parquet(ArrowWriter<BufWriter<File>>),
    Csv(arrow::csv::Writer<BufWriter<File>>),
}
