//! Shared by the integration tests: the seed's dataset as Arrow chunks, the seed SQL, and
//! an independent plain-Rust version of the seed's `data_preprocessing` to check it against.

#![allow(dead_code)] // each test binary uses a different part of this module

use std::sync::Arc;

use arrow::array::{Array, BooleanArray, Float64Array, Int64Array, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;

/// The seed SQL file at the repository root.
pub const SEED_SQL: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../examples/seed_preprocessing.sql"
));

/// One row of the seed's `create_large_dataset`.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub f1: f64,
    pub f2: f64,
    pub f3: f64,
    pub category: Option<&'static str>,
    pub target: i64,
}

pub fn seed_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("feature_1", DataType::Float64, true),
        Field::new("feature_2", DataType::Float64, true),
        Field::new("feature_3", DataType::Float64, true),
        Field::new("category", DataType::Utf8, true),
        Field::new("target", DataType::Int64, true),
    ]))
}

pub fn to_batch(rows: &[Row]) -> RecordBatch {
    let col = |f: fn(&Row) -> f64| Arc::new(Float64Array::from_iter_values(rows.iter().map(f)));
    RecordBatch::try_new(
        seed_schema(),
        vec![
            col(|r| r.f1),
            col(|r| r.f2),
            col(|r| r.f3),
            Arc::new(StringArray::from_iter(rows.iter().map(|r| r.category))),
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.target))),
        ],
    )
    .unwrap()
}

/// Deterministic pseudo-random rows (xorshift), values in about -4..4 like `randn`.
pub fn generated_rows(n: usize, seed: u64) -> Vec<Row> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut unit = move || (next() >> 11) as f64 / (1u64 << 53) as f64;
    (0..n)
        .map(|_| Row {
            f1: unit() * 8.0 - 4.0,
            f2: unit() * 8.0 - 4.0,
            f3: unit() * 8.0 - 4.0,
            category: Some(["A", "B", "C"][(unit() * 3.0) as usize % 3]),
            target: (unit() * 2.0) as i64,
        })
        .collect()
}

/// The seed's output for one chunk, column by column.
#[derive(Debug, Clone)]
pub struct Expected {
    /// feature_1, feature_2, feature_3, feature_interaction, feature_sum, after the z-score.
    pub numeric: [Vec<f64>; 5],
    pub target: Vec<i64>,
    /// cat_A, cat_B, cat_C.
    pub dummies: [Vec<bool>; 3],
}

/// `data_preprocessing` written out by hand: features from the raw values, one-hot, then
/// pandas' per-column `(x - mean) / std` (ddof = 1) only where `std > 0`.
pub fn reference(rows: &[Row]) -> Expected {
    let f1: Vec<f64> = rows.iter().map(|r| r.f1).collect();
    let f2: Vec<f64> = rows.iter().map(|r| r.f2).collect();
    let f3: Vec<f64> = rows.iter().map(|r| r.f3).collect();
    let interaction = rows.iter().map(|r| r.f1 * r.f2).collect();
    let sum = rows.iter().map(|r| r.f1 + r.f2 + r.f3).collect();
    let dummy = |c: &str| rows.iter().map(|r| r.category == Some(c)).collect();
    Expected {
        numeric: [f1, f2, f3, interaction, sum].map(zscore),
        target: rows.iter().map(|r| r.target).collect(),
        dummies: [dummy("A"), dummy("B"), dummy("C")],
    }
}

/// Two-pass mean and sample std; NaN std (n < 2) is not > 0, as in pandas.
fn zscore(xs: Vec<f64>) -> Vec<f64> {
    let n = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / n;
    let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
    let std = var.sqrt();
    if std > 0.0 {
        xs.iter().map(|x| (x - mean) / std).collect()
    } else {
        xs
    }
}

pub const OUTPUT_COLUMNS: [&str; 9] = [
    "feature_1",
    "feature_2",
    "feature_3",
    "target",
    "feature_interaction",
    "feature_sum",
    "cat_A",
    "cat_B",
    "cat_C",
];

/// Asserts the seed SQL's output batch equals `reference(rows)` within 1e-9.
pub fn assert_matches_reference(out: &RecordBatch, rows: &[Row]) {
    let expected = reference(rows);
    assert_eq!(out.num_rows(), rows.len());
    let names: Vec<&str> = out
        .schema_ref()
        .fields()
        .iter()
        .map(|f| f.name().as_str())
        .collect();
    assert_eq!(names, OUTPUT_COLUMNS);

    let numeric_at = [0, 1, 2, 4, 5];
    for (want, &at) in expected.numeric.iter().zip(&numeric_at) {
        let got = out
            .column(at)
            .as_any()
            .downcast_ref::<Float64Array>()
            .unwrap();
        assert_eq!(got.null_count(), 0, "{} has nulls", OUTPUT_COLUMNS[at]);
        for (row, (g, w)) in got.values().iter().zip(want).enumerate() {
            assert!(
                (g - w).abs() <= 1e-9 * w.abs().max(1.0),
                "{} row {row}: got {g}, expected {w}",
                OUTPUT_COLUMNS[at]
            );
        }
    }
    let target = out.column(3).as_any().downcast_ref::<Int64Array>().unwrap();
    assert_eq!(target.values().to_vec(), expected.target);
    for (want, at) in expected.dummies.iter().zip(6..) {
        let got = out
            .column(at)
            .as_any()
            .downcast_ref::<BooleanArray>()
            .unwrap();
        assert_eq!(got.null_count(), 0, "{} has nulls", OUTPUT_COLUMNS[at]);
        let got: Vec<bool> = got.values().iter().collect();
        assert_eq!(&got, want, "{}", OUTPUT_COLUMNS[at]);
    }
}
