//! The seed's `data_preprocessing`, as `examples/seed_preprocessing.sql`, against a plain
//! Rust computation of the same transform: generated chunks, then the edge cases (one row,
//! constant columns, empty chunks, a NULL category) that a z-score gets wrong most easily.

mod common;

use arrow::datatypes::DataType;
use common::{assert_matches_reference, generated_rows, seed_schema, to_batch, Row, SEED_SQL};
use proptest::prelude::*;
use sluice_sql::ChunkSql;

fn seed_sql() -> ChunkSql {
    ChunkSql::new(SEED_SQL, seed_schema()).unwrap()
}

#[test]
fn output_schema_is_pandas_column_order_and_types() {
    let sql = seed_sql();
    let schema = sql.output_schema();
    let got: Vec<(&str, &DataType)> = schema
        .fields()
        .iter()
        .map(|f| (f.name().as_str(), f.data_type()))
        .collect();
    use DataType::{Boolean, Float64, Int64};
    let want: Vec<(&str, &DataType)> = vec![
        ("feature_1", &Float64),
        ("feature_2", &Float64),
        ("feature_3", &Float64),
        ("target", &Int64),
        ("feature_interaction", &Float64),
        ("feature_sum", &Float64),
        ("cat_A", &Boolean),
        ("cat_B", &Boolean),
        ("cat_C", &Boolean),
    ];
    assert_eq!(got, want);
    assert_eq!(sql.sql(), SEED_SQL);

    let out = sql.apply(&to_batch(&generated_rows(10, 1))).unwrap();
    assert_eq!(
        out.schema(),
        schema,
        "apply's batch has the advertised schema"
    );
}

#[test]
fn seed_sized_chunks_match_reference() {
    let sql = seed_sql();
    for (seed, rows) in [(1, 5_000), (2, 4_999), (3, 2), (4, 17)] {
        let data = generated_rows(rows, seed);
        assert_matches_reference(&sql.apply(&to_batch(&data)).unwrap(), &data);
    }
}

#[test]
fn one_row_chunk_is_left_unnormalized() {
    // pandas: std of one value is NaN, NaN > 0 is false, so the values pass through.
    let data = vec![Row {
        f1: 1.25,
        f2: -3.5,
        f3: 0.75,
        category: Some("B"),
        target: 1,
    }];
    let out = seed_sql().apply(&to_batch(&data)).unwrap();
    assert_matches_reference(&out, &data);
}

#[test]
fn constant_column_is_left_unchanged_and_others_normalized() {
    let mut data = generated_rows(50, 7);
    for row in &mut data {
        row.f3 = 2.5;
    }
    let out = seed_sql().apply(&to_batch(&data)).unwrap();
    assert_matches_reference(&out, &data);
    let f3 = out
        .column(2)
        .as_any()
        .downcast_ref::<arrow::array::Float64Array>()
        .unwrap();
    assert!(f3.values().iter().all(|&v| v == 2.5));
}

#[test]
fn all_constant_chunk_passes_through() {
    let data: Vec<Row> = (0..8)
        .map(|i| Row {
            f1: 1.5,
            f2: -2.0,
            f3: 0.25,
            category: Some(["A", "C"][i % 2]),
            target: 0,
        })
        .collect();
    assert_matches_reference(&seed_sql().apply(&to_batch(&data)).unwrap(), &data);
}

#[test]
fn null_category_is_all_false_like_get_dummies() {
    let mut data = generated_rows(20, 9);
    data[3].category = None;
    data[11].category = None;
    assert_matches_reference(&seed_sql().apply(&to_batch(&data)).unwrap(), &data);
}

#[test]
fn empty_chunk_gives_empty_batch() {
    let sql = seed_sql();
    let out = sql.apply(&to_batch(&[])).unwrap();
    assert_eq!(out.num_rows(), 0);
    assert_eq!(out.schema(), sql.output_schema());
}

fn row_strategy() -> impl Strategy<Value = Row> {
    (
        -1e3..1e3f64,
        -1e3..1e3f64,
        -1e3..1e3f64,
        prop::sample::select(vec![Some("A"), Some("B"), Some("C"), None]),
        0..2i64,
    )
        .prop_map(|(f1, f2, f3, category, target)| Row {
            f1,
            f2,
            f3,
            category,
            target,
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Any chunk, any size from one row up: the SQL equals the hand-written transform.
    #[test]
    fn any_chunk_matches_reference(data in prop::collection::vec(row_strategy(), 1..400)) {
        let out = seed_sql().apply(&to_batch(&data)).unwrap();
        assert_matches_reference(&out, &data);
    }
}
