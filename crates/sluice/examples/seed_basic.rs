//! The seed's "Basic Streaming Processing" in Rust: its `data_preprocessing` (feature
//! interaction and sum, one-hot of `category`, per-chunk z-score of the five numeric
//! columns; no sleep) written with Arrow compute kernels, on generated rows or on files.
//!
//! ```text
//! cargo run --release -p sluice --example seed_basic                    # 1,000,000 generated rows
//! cargo run --release -p sluice --example seed_basic -- --input big.csv --output out/ --max-memory-mb 256
//! ```

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, BooleanArray, Float64Array, Int64Array, StringArray};
use arrow::compute::kernels::cmp::eq;
use arrow::compute::kernels::numeric::{add, div, mul, sub};
use arrow::compute::{cast, sum};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;
use rand::{Rng, SeedableRng};
use rand_distr::StandardNormal;
use sluice::source::{FilesSource, MemorySource};
use sluice::{OutputOptions, StreamingDataPipeline};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

struct Args {
    rows: usize,
    input: Vec<String>,
    output: Option<String>,
    chunk_size: usize,
    max_memory_mb: f64,
    workers: Option<usize>,
    fixed_chunks: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        rows: 1_000_000,
        input: Vec::new(),
        output: None,
        chunk_size: 5000,
        max_memory_mb: 500.0,
        workers: None,
        fixed_chunks: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = |name: &str| it.next().ok_or_else(|| format!("{name} needs a value"));
        let number = |name: &str, v: String| {
            v.parse::<f64>()
                .map_err(|_| format!("{name}: {v:?} is not a number"))
        };
        match flag.as_str() {
            "--rows" => args.rows = number("--rows", value("--rows")?)? as usize,
            "--input" => args.input.push(value("--input")?),
            "--output" => args.output = Some(value("--output")?),
            "--chunk-size" => {
                args.chunk_size = number("--chunk-size", value("--chunk-size")?)? as usize
            }
            "--max-memory-mb" => {
                args.max_memory_mb = number("--max-memory-mb", value("--max-memory-mb")?)?
            }
            "--workers" => args.workers = Some(number("--workers", value("--workers")?)? as usize),
            "--fixed-chunks" => args.fixed_chunks = true,
            "--help" | "-h" => {
                println!("seed_basic [--rows N | --input PATH...] [--output DIR] [--chunk-size N] [--max-memory-mb MB] [--workers N] [--fixed-chunks]");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?} (try --help)")),
        }
    }
    Ok(args)
}

/// The seed's `create_large_dataset`.
fn create_large_dataset(rows: usize) -> Result<RecordBatch, ArrowError> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(42);
    let mut normal = |_| rng.sample::<f64, _>(StandardNormal);
    let f1: Float64Array = (0..rows).map(&mut normal).collect();
    let f2: Float64Array = (0..rows).map(&mut normal).collect();
    let f3: Float64Array = (0..rows).map(&mut normal).collect();
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let category: StringArray = (0..rows)
        .map(|_| Some(["A", "B", "C"][rng.random_range(0..3)]))
        .collect();
    let target: Int64Array = (0..rows).map(|_| rng.random_range(0..2i64)).collect();
    RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("feature_1", DataType::Float64, false),
            Field::new("feature_2", DataType::Float64, false),
            Field::new("feature_3", DataType::Float64, false),
            Field::new("category", DataType::Utf8, false),
            Field::new("target", DataType::Int64, false),
        ])),
        vec![
            Arc::new(f1),
            Arc::new(f2),
            Arc::new(f3),
            Arc::new(category),
            Arc::new(target),
        ],
    )
}

fn column_f64(batch: &RecordBatch, name: &str) -> Result<ArrayRef, ArrowError> {
    let column = batch
        .column_by_name(name)
        .ok_or_else(|| ArrowError::SchemaError(format!("no column {name:?}")))?;
    cast(column, &DataType::Float64)
}

/// pandas' `(x - x.mean()) / x.std()` (sample std), left as is when std is not > 0.
fn z_score(x: &ArrayRef) -> Result<ArrayRef, ArrowError> {
    let values = x
        .as_any()
        .downcast_ref::<Float64Array>()
        .ok_or_else(|| ArrowError::CastError("expected float64".into()))?;
    let n = (values.len() - values.null_count()) as f64;
    if n < 2.0 {
        return Ok(x.clone());
    }
    let mean = sum(values).unwrap_or(0.0) / n;
    let centered = sub(x, &Float64Array::new_scalar(mean))?;
    let squares = mul(&centered, &centered)?;
    let squares = squares
        .as_any()
        .downcast_ref::<Float64Array>()
        .ok_or_else(|| ArrowError::CastError("expected float64".into()))?;
    let std = (sum(squares).unwrap_or(0.0) / (n - 1.0)).sqrt();
    if std > 0.0 {
        div(&centered, &Float64Array::new_scalar(std))
    } else {
        Ok(x.clone())
    }
}

/// The seed's `data_preprocessing`, on one chunk.
fn data_preprocessing(chunk: RecordBatch) -> Result<RecordBatch, ArrowError> {
    let f1 = column_f64(&chunk, "feature_1")?;
    let f2 = column_f64(&chunk, "feature_2")?;
    let f3 = column_f64(&chunk, "feature_3")?;
    let interaction = mul(&f1, &f2)?;
    let feature_sum = add(&add(&f1, &f2)?, &f3)?;
    let mut fields = Vec::new();
    let mut columns: Vec<ArrayRef> = Vec::new();
    for (name, column) in [("feature_1", &f1), ("feature_2", &f2), ("feature_3", &f3)] {
        fields.push(Field::new(name, DataType::Float64, true));
        columns.push(z_score(column)?);
    }
    if let Some(target) = chunk.column_by_name("target") {
        fields.push(Field::new("target", target.data_type().clone(), true));
        columns.push(target.clone());
    }
    for (name, column) in [
        ("feature_interaction", &interaction),
        ("feature_sum", &feature_sum),
    ] {
        fields.push(Field::new(name, DataType::Float64, true));
        columns.push(z_score(column)?);
    }
    // pd.get_dummies: one boolean column per category present in the chunk, sorted.
    let category = chunk
        .column_by_name("category")
        .ok_or_else(|| ArrowError::SchemaError("no column \"category\"".into()))?;
    let category = cast(category, &DataType::Utf8)?;
    let strings = category
        .as_any()
        .downcast_ref::<StringArray>()
        .ok_or_else(|| ArrowError::CastError("category is not text".into()))?;
    let mut present: Vec<&str> = strings
        .iter()
        .flatten()
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    present.sort_unstable();
    for value in present {
        let dummy: BooleanArray = eq(&category, &StringArray::new_scalar(value))?;
        fields.push(Field::new(format!("cat_{value}"), DataType::Boolean, true));
        columns.push(Arc::new(dummy));
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
}

fn main() {
    if let Err(e) = run() {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), BoxError> {
    let args = parse_args()?;
    let mut builder = StreamingDataPipeline::builder()
        .chunk_size(args.chunk_size)
        .max_memory_mb(args.max_memory_mb)
        .adaptive_batching(!args.fixed_chunks)
        .enable_parallel(true);
    if let Some(w) = args.workers {
        builder = builder.num_workers(w);
    }
    let pipeline = builder.build()?;
    let start = std::time::Instant::now();
    let stream = if args.input.is_empty() {
        println!("Creating test dataset...");
        let df = create_large_dataset(args.rows)?;
        println!("Dataset created: ({}, {})", df.num_rows(), df.num_columns());
        let source = MemorySource::from_batch(df);
        match &args.output {
            Some(dir) => {
                pipeline.process_to(source, data_preprocessing, OutputOptions::new(dir))?
            }
            None => pipeline.process(source, data_preprocessing)?,
        }
    } else {
        let source = FilesSource::open(&args.input, None)?;
        match &args.output {
            Some(dir) => {
                pipeline.process_to(source, data_preprocessing, OutputOptions::new(dir))?
            }
            None => pipeline.process(source, data_preprocessing)?,
        }
    };
    println!("Starting streaming processing...");
    let mut rows = 0usize;
    let mut columns = 0usize;
    for (i, chunk) in stream.enumerate() {
        let chunk = chunk?;
        rows += chunk.batch.num_rows();
        columns = chunk.batch.num_columns();
        if (i + 1) % 50 == 0 && args.input.is_empty() {
            println!(
                "Processed chunk {}, shape: ({}, {})",
                i + 1,
                chunk.batch.num_rows(),
                columns
            );
        }
    }
    let total_time = start.elapsed().as_secs_f64();
    println!("Final result shape: ({rows}, {columns})");
    let stats = pipeline.stats();
    println!("\nPerformance Statistics:");
    println!("  Total processing time: {total_time:.2}s");
    println!("  Chunks processed: {}", stats.total_chunks_processed);
    println!("  Rows processed: {}", stats.total_rows_processed);
    println!(
        "  Throughput: {:.1} rows/sec",
        stats.throughput_rows_per_second
    );
    println!("  Peak memory usage: {:.1} MB", stats.memory_peak_mb);
    println!("  Backpressure events: {}", stats.backpressure_events);
    println!(
        "  Chunk latency p50/p95/p99: {:.2}/{:.2}/{:.2} ms; engine peak tracked memory {:.1} MB of {:.1} MB",
        stats.latency_p50_ms,
        stats.latency_p95_ms,
        stats.latency_p99_ms,
        stats.engine_peak_tracked_mb,
        stats.memory_budget_mb
    );
    Ok(())
}
