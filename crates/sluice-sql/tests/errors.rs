//! Known errors, each checked for the variant and for a message that names the problem:
//! bad SQL and missing columns at planning time (before any data), statements that are not
//! queries, chunks of the wrong shape, and failures while running on a chunk.

mod common;

use std::sync::Arc;

use arrow::array::{Int64Array, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use common::{generated_rows, seed_schema, to_batch};
use sluice_sql::{ChunkSql, SqlError};

fn plan_err(sql: &str) -> SqlError {
    ChunkSql::new(sql, seed_schema()).expect_err("planning should fail")
}

#[test]
fn parse_error_is_reported_with_parser_message() {
    let err = plan_err("SELEC feature_1 FROM chunk");
    assert!(matches!(err, SqlError::Parse { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("does not parse"), "{msg}");
    assert!(msg.contains("SELEC"), "{msg}");

    let err = plan_err("SELECT feature_1 FROM chunk WHERE (feature_2 > 1");
    assert!(matches!(err, SqlError::Parse { .. }), "{err:?}");
}

#[test]
fn missing_column_is_named_in_select_where_and_window() {
    for (sql, column) in [
        ("SELECT feature_9 FROM chunk", "feature_9"),
        ("SELECT feature_1 FROM chunk WHERE nope > 1", "nope"),
        ("SELECT AVG(feature_x) OVER () FROM chunk", "feature_x"),
        ("SELECT \"Feature_1\" FROM chunk", "Feature_1"),
    ] {
        let err = plan_err(sql);
        match &err {
            SqlError::UnknownColumn { column: c, .. } => assert_eq!(c, column, "{sql}"),
            other => panic!("{sql}: expected UnknownColumn, got {other:?}"),
        }
        let msg = err.to_string();
        assert!(msg.contains(column), "{sql}: {msg}");
        // DataFusion's own message lists the columns there are.
        assert!(msg.contains("feature_2"), "{sql}: {msg}");
    }
}

#[test]
fn unknown_table_says_the_table_is_chunk() {
    let err = plan_err("SELECT * FROM data");
    assert!(matches!(err, SqlError::Plan { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("data") && msg.contains("`chunk`"), "{msg}");
}

#[test]
fn type_error_is_a_plan_error() {
    let err = plan_err("SELECT feature_1 + category FROM chunk");
    assert!(matches!(err, SqlError::Plan { .. }), "{err:?}");
}

#[test]
fn only_queries_are_accepted() {
    for sql in [
        "CREATE TABLE t AS SELECT * FROM chunk",
        "INSERT INTO chunk VALUES (1, 2, 3, 'A', 1)",
        "COPY (SELECT * FROM chunk) TO '/tmp/sluice-sql-should-not-exist.csv'",
        "SET datafusion.execution.batch_size = 1",
    ] {
        let err = plan_err(sql);
        assert!(matches!(err, SqlError::Plan { .. }), "{sql}: {err:?}");
    }
    let err = plan_err("SELECT 1; SELECT 2");
    assert!(matches!(err, SqlError::Plan { .. }), "{err:?}");
}

#[test]
fn explain_analyze_is_unsupported_but_explain_works() {
    let err = plan_err("EXPLAIN ANALYZE SELECT * FROM chunk");
    assert!(matches!(err, SqlError::Unsupported { .. }), "{err:?}");
    assert!(err.to_string().contains("EXPLAIN ANALYZE"), "{err}");

    let sql = ChunkSql::new("EXPLAIN SELECT * FROM chunk", seed_schema()).unwrap();
    let out = sql.apply(&to_batch(&generated_rows(3, 1))).unwrap();
    assert!(out.num_rows() > 0);
}

#[test]
fn recursive_cte_is_rejected_at_planning() {
    let err = plan_err(
        "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 3) \
         SELECT * FROM r",
    );
    assert!(matches!(err, SqlError::Plan { .. }), "{err:?}");
}

#[test]
fn chunk_with_other_columns_is_a_schema_mismatch() {
    let sql = ChunkSql::new("SELECT target FROM chunk", seed_schema()).unwrap();

    let fewer = RecordBatch::try_new(
        Arc::new(Schema::new(vec![Field::new(
            "target",
            DataType::Int64,
            true,
        )])),
        vec![Arc::new(Int64Array::from(vec![1]))],
    )
    .unwrap();
    let err = sql.apply(&fewer).unwrap_err();
    assert!(matches!(err, SqlError::SchemaMismatch { .. }), "{err:?}");
    assert!(err.to_string().contains("expected 5 columns"), "{err}");

    let full = to_batch(&generated_rows(2, 1));
    let mut columns = full.columns().to_vec();
    columns[3] = Arc::new(Int64Array::from(vec![1, 2]));
    let mut fields: Vec<Field> = seed_schema()
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    fields[3] = Field::new("category", DataType::Int64, true);
    let retyped = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap();
    let err = sql.apply(&retyped).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("`category`") && msg.contains("Utf8") && msg.contains("Int64"),
        "{msg}"
    );
}

#[test]
fn nulls_in_a_column_planned_non_nullable_are_rejected() {
    let strict = Arc::new(Schema::new(vec![Field::new("name", DataType::Utf8, false)]));
    let sql = ChunkSql::new("SELECT name IS NULL AS missing FROM chunk", strict).unwrap();
    let loose = RecordBatch::try_new(
        Arc::new(Schema::new(vec![Field::new("name", DataType::Utf8, true)])),
        vec![Arc::new(StringArray::from(vec![Some("a"), None]))],
    )
    .unwrap();
    let err = sql.apply(&loose).unwrap_err();
    assert!(matches!(err, SqlError::SchemaMismatch { .. }), "{err:?}");
    assert!(err.to_string().contains("name"), "{err}");
}

#[test]
fn failure_on_a_value_is_an_execute_error_with_the_chunk_size() {
    let sql = ChunkSql::new(
        "SELECT CAST(category AS BIGINT) AS c FROM chunk",
        seed_schema(),
    )
    .unwrap();
    let err = sql.apply(&to_batch(&generated_rows(7, 1))).unwrap_err();
    assert!(matches!(err, SqlError::Execute { rows: 7, .. }), "{err:?}");
    assert!(err.to_string().contains("7 rows"), "{err}");
}
