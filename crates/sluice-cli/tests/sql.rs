//! Per-chunk SQL through the real binary: the seed's preprocessing (the repository's
//! examples/seed_preprocessing.sql) must give, on every chunk of a fixed-size run, exactly
//! what an independent Rust computation of the same transform gives on that chunk.

mod common;

use std::path::Path;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, BooleanArray, Float64Array, Int64Array, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use common::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const ROWS: usize = 10_001; // ten full chunks of 1000 and a last chunk of one row
const CHUNK: usize = 1000;

struct Input {
    f: [Vec<f64>; 3],
    category: Vec<Option<&'static str>>,
    target: Vec<i64>,
}

fn generate(path: &Path) -> TestResult<Input> {
    let mut rng = StdRng::seed_from_u64(7);
    let mut f = [Vec::new(), Vec::new(), Vec::new()];
    for col in &mut f {
        *col = (0..ROWS)
            .map(|_| rng.random::<f64>() * 20.0 - 10.0)
            .collect();
    }
    // Chunk 3 has a constant feature_3 (std 0): it must pass through unchanged.
    for v in &mut f[2][3 * CHUNK..4 * CHUNK] {
        *v = 1.5;
    }
    let category: Vec<Option<&'static str>> = (0..ROWS)
        .map(|i| {
            if i % 97 == 0 {
                None
            } else {
                Some(["A", "B", "C"][rng.random_range(0..3)])
            }
        })
        .collect();
    let target: Vec<i64> = (0..ROWS).map(|_| rng.random_range(0..2)).collect();
    let schema = Arc::new(Schema::new(vec![
        Field::new("feature_1", DataType::Float64, false),
        Field::new("feature_2", DataType::Float64, false),
        Field::new("feature_3", DataType::Float64, false),
        Field::new("category", DataType::Utf8, true),
        Field::new("target", DataType::Int64, false),
    ]));
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Float64Array::from(f[0].clone())),
        Arc::new(Float64Array::from(f[1].clone())),
        Arc::new(Float64Array::from(f[2].clone())),
        Arc::new(StringArray::from(category.clone())),
        Arc::new(Int64Array::from(target.clone())),
    ];
    let batch = RecordBatch::try_new(schema.clone(), columns)?;
    write_batches(path, &schema, &[batch])?;
    Ok(Input {
        f,
        category,
        target,
    })
}

/// pandas' z-score with ddof=1, left unchanged unless the std is > 0 (NaN for one row).
fn zscore(values: &[f64]) -> Vec<f64> {
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let std = (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt();
    if std > 0.0 {
        values.iter().map(|v| (v - mean) / std).collect()
    } else {
        values.to_vec()
    }
}

fn assert_close(name: &str, got: &[f64], want: &[f64]) {
    assert_eq!(got.len(), want.len(), "{name}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= 1e-9 * w.abs().max(1.0),
            "{name} row {i}: got {g}, want {w}"
        );
    }
}

fn bool_column(batches: &[RecordBatch], name: &str) -> TestResult<Vec<bool>> {
    let mut out = Vec::new();
    for b in batches {
        let col = b
            .column_by_name(name)
            .ok_or_else(|| format!("no column {name}"))?;
        let col = col
            .as_any()
            .downcast_ref::<BooleanArray>()
            .ok_or("not boolean")?;
        assert_eq!(col.null_count(), 0, "{name} has nulls");
        out.extend((0..col.len()).map(|i| col.value(i)));
    }
    Ok(out)
}

#[test]
fn seed_preprocessing_matches_an_independent_computation_on_every_chunk() -> TestResult {
    let dir = tempfile::tempdir()?;
    let input = dir.path().join("sample.parquet");
    let data = generate(&input)?;
    let out = dir.path().join("out");
    let sql = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/seed_preprocessing.sql"
    );
    let output = sluice()
        .args([
            "run",
            "--quiet",
            "--fixed-chunks",
            "--chunk-size",
            "1000",
            "--rows-per-part",
            "3000",
        ])
        .args([
            "--input",
            path_str(&input),
            "--output",
            path_str(&out),
            "--sql",
            sql,
        ])
        .output()?;
    assert_eq!(output.status.code(), Some(0), "{}", stderr_of(&output));
    assert!(
        output.stdout.is_empty() && output.stderr.is_empty(),
        "--quiet printed something"
    );

    let batches = read_output(&out)?;
    let names: Vec<String> = batches[0]
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    assert_eq!(
        names,
        [
            "feature_1",
            "feature_2",
            "feature_3",
            "target",
            "feature_interaction",
            "feature_sum",
            "cat_A",
            "cat_B",
            "cat_C"
        ]
    );
    assert_eq!(manifest_parts(&out)?.len(), 4, "3000 rows per part");

    let mut want: [Vec<f64>; 5] = Default::default();
    let mut want_cat: [Vec<bool>; 3] = Default::default();
    for start in (0..ROWS).step_by(CHUNK) {
        let end = (start + CHUNK).min(ROWS);
        let f: Vec<&[f64]> = data.f.iter().map(|c| &c[start..end]).collect();
        let interaction: Vec<f64> = (0..end - start).map(|i| f[0][i] * f[1][i]).collect();
        let sum: Vec<f64> = (0..end - start)
            .map(|i| f[0][i] + f[1][i] + f[2][i])
            .collect();
        for (k, column) in [f[0], f[1], f[2], &interaction, &sum]
            .into_iter()
            .enumerate()
        {
            want[k].extend(zscore(column));
        }
        for (k, label) in ["A", "B", "C"].into_iter().enumerate() {
            want_cat[k].extend(data.category[start..end].iter().map(|c| *c == Some(label)));
        }
    }
    for (k, name) in [
        "feature_1",
        "feature_2",
        "feature_3",
        "feature_interaction",
        "feature_sum",
    ]
    .into_iter()
    .enumerate()
    {
        assert_close(name, &float_column(&batches, name)?, &want[k]);
    }
    // The constant chunk and the one-row chunk passed through unchanged.
    assert!(want[2][3 * CHUNK..4 * CHUNK].iter().all(|&v| v == 1.5));
    assert_eq!(want[0][ROWS - 1], data.f[0][ROWS - 1]);
    for (k, name) in ["cat_A", "cat_B", "cat_C"].into_iter().enumerate() {
        assert_eq!(bool_column(&batches, name)?, want_cat[k], "{name}");
    }
    assert_eq!(int_column(&batches, "target")?, data.target);
    Ok(())
}

#[test]
fn inline_sql_sees_the_chunk_as_the_table_chunk() -> TestResult {
    let dir = tempfile::tempdir()?;
    let input = dir.path().join("ids.csv");
    write_ids(&input, 2_500)?;
    let out = dir.path().join("out");
    let output = sluice()
        .args(["run", "--quiet", "--fixed-chunks", "--chunk-size", "1000", "--output-format", "ipc"])
        .args(["--input", path_str(&input), "--output", path_str(&out)])
        .args([
            "--sql-text",
            "SELECT id, x * 2 AS y, COUNT(*) OVER () AS chunk_rows, MIN(id) OVER () AS first_id FROM chunk WHERE id % 2 = 0",
        ])
        .output()?;
    assert_eq!(output.status.code(), Some(0), "{}", stderr_of(&output));
    let batches = read_output(&out)?;
    let ids = int_column(&batches, "id")?;
    assert_eq!(ids, (0..2_500).step_by(2).collect::<Vec<i64>>());
    let y = float_column(&batches, "y")?;
    assert!(ids.iter().zip(&y).all(|(&i, &y)| y == i as f64 / 2.0));
    // Aggregates over `chunk` see one chunk: 500 even ids in a full chunk, 250 in the last.
    let chunk_rows = int_column(&batches, "chunk_rows")?;
    let first_id = int_column(&batches, "first_id")?;
    for (k, &id) in ids.iter().enumerate() {
        let chunk = id / 1000;
        assert_eq!(chunk_rows[k], if chunk < 2 { 500 } else { 250 }, "id {id}");
        assert_eq!(first_id[k], chunk * 1000, "id {id}");
    }
    Ok(())
}
