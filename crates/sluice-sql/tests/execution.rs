//! Running a planned query: results per chunk (never folded from planning-time guesses),
//! empty results, the plan built once and reused, and `apply` from several threads at once
//! giving exactly what it gives on one.

mod common;

use std::sync::Arc;
use std::thread;

use arrow::array::{Array, Float64Array, Int64Array};
use arrow::record_batch::RecordBatch;
use common::{assert_matches_reference, generated_rows, seed_schema, to_batch, Row, SEED_SQL};
use sluice_sql::ChunkSql;

fn plan(sql: &str) -> ChunkSql {
    ChunkSql::new(sql, seed_schema()).unwrap()
}

fn int_column(batch: &RecordBatch, at: usize) -> Vec<i64> {
    let col = batch
        .column(at)
        .as_any()
        .downcast_ref::<Int64Array>()
        .unwrap();
    col.values().to_vec()
}

fn float_column(batch: &RecordBatch, at: usize) -> Vec<f64> {
    let col = batch
        .column(at)
        .as_any()
        .downcast_ref::<Float64Array>()
        .unwrap();
    col.values().to_vec()
}

#[test]
fn chunk_sql_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<ChunkSql>();
    assert_send_sync::<sluice_sql::SqlError>();
}

#[test]
fn filter_with_no_match_gives_empty_batch_with_schema() {
    let sql = plan("SELECT feature_1, category, target * 2 AS t2 FROM chunk WHERE feature_1 > 100");
    let out = sql.apply(&to_batch(&generated_rows(500, 3))).unwrap();
    assert_eq!(out.num_rows(), 0);
    assert_eq!(out.schema(), sql.output_schema());
    let names: Vec<&str> = out
        .schema_ref()
        .fields()
        .iter()
        .map(|f| f.name().as_str())
        .collect();
    assert_eq!(names, ["feature_1", "category", "t2"]);
}

#[test]
fn filter_keeps_matching_rows_in_order() {
    let data = generated_rows(1_000, 5);
    let sql = plan("SELECT feature_1 FROM chunk WHERE feature_1 > 0 AND category = 'B'");
    let out = sql.apply(&to_batch(&data)).unwrap();
    let want: Vec<f64> = data
        .iter()
        .filter(|r| r.f1 > 0.0 && r.category == Some("B"))
        .map(|r| r.f1)
        .collect();
    assert_eq!(float_column(&out, 0), want);
}

#[test]
fn aggregates_see_each_chunk_not_planning_time_statistics() {
    // The placeholder table has no statistics, so COUNT(*) cannot be folded to a constant.
    let sql = plan("SELECT COUNT(*) AS n, SUM(target) AS s FROM chunk");
    for rows in [0, 1, 9, 2_000] {
        let data = generated_rows(rows, rows as u64);
        let out = sql.apply(&to_batch(&data)).unwrap();
        assert_eq!(int_column(&out, 0), [rows as i64]);
        let sum = out.column(1).as_any().downcast_ref::<Int64Array>().unwrap();
        if rows == 0 {
            assert!(sum.is_null(0));
        } else {
            assert_eq!(sum.value(0), data.iter().map(|r| r.target).sum::<i64>());
        }
    }
}

#[test]
fn group_by_order_by_and_limit() {
    let data = generated_rows(300, 11);
    let sql = plan(
        "SELECT category, COUNT(*) AS n FROM chunk GROUP BY category ORDER BY category DESC LIMIT 2",
    );
    let out = sql.apply(&to_batch(&data)).unwrap();
    let count = |c| data.iter().filter(|r| r.category == Some(c)).count() as i64;
    assert_eq!(int_column(&out, 1), [count("C"), count("B")]);

    let sql = plan("SELECT target FROM chunk LIMIT 3");
    assert_eq!(sql.apply(&to_batch(&data)).unwrap().num_rows(), 3);
}

#[test]
fn zero_column_projection_keeps_row_count() {
    let sql = plan("SELECT 1 AS one FROM chunk");
    let out = sql.apply(&to_batch(&generated_rows(42, 1))).unwrap();
    assert_eq!(int_column(&out, 0), vec![1; 42]);
}

#[test]
fn plan_is_built_once_and_reused() {
    let sql = plan(SEED_SQL);
    assert_eq!(sql.scans_planned(), 1);
    for seed in 0..50 {
        let data = generated_rows(100 + seed as usize, seed);
        assert_matches_reference(&sql.apply(&to_batch(&data)).unwrap(), &data);
    }
    assert_eq!(sql.scans_planned(), 1, "apply planned a scan again");

    // A self-join has two scans of `chunk`, both bound to the same chunk on each run.
    let join = plan(
        "SELECT a.target, COUNT(*) AS n FROM chunk a JOIN chunk b ON a.category = b.category \
         GROUP BY a.target ORDER BY a.target",
    );
    assert_eq!(join.scans_planned(), 2);
    for seed in 0..5 {
        let data = generated_rows(30, seed);
        let out = join.apply(&to_batch(&data)).unwrap();
        let pairs = |t: i64| {
            data.iter()
                .filter(|a| a.target == t)
                .map(|a| data.iter().filter(|b| b.category == a.category).count() as i64)
                .sum::<i64>()
        };
        let want: Vec<i64> = [0, 1].into_iter().map(pairs).filter(|&n| n > 0).collect();
        assert_eq!(int_column(&out, 1), want, "seed {seed}");
    }
    assert_eq!(join.scans_planned(), 2);
}

/// Runs `sql` on `chunks` from `threads` threads at once, each thread over every chunk
/// (starting at a different one), and checks every result equals the one-thread result.
fn assert_concurrent_equals_sequential(sql: &ChunkSql, chunks: &[RecordBatch], threads: usize) {
    let sequential: Vec<RecordBatch> = chunks.iter().map(|c| sql.apply(c).unwrap()).collect();
    thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let sequential = &sequential;
                scope.spawn(move || {
                    for round in 0..chunks.len() * 3 {
                        let i = (t + round) % chunks.len();
                        assert_eq!(sql.apply(&chunks[i]).unwrap(), sequential[i], "chunk {i}");
                    }
                })
            })
            .collect();
        for handle in handles {
            handle.join().unwrap();
        }
    });
}

#[test]
fn concurrent_apply_from_four_threads_matches_reference() {
    let sql = Arc::new(plan(SEED_SQL));
    let datasets: Vec<Vec<Row>> = (0..8)
        .map(|s| generated_rows(200 + 37 * s as usize, s))
        .collect();
    let handles: Vec<_> = (0..4)
        .map(|t| {
            let sql = Arc::clone(&sql);
            let datasets = datasets.clone();
            thread::spawn(move || {
                for round in 0..20 {
                    let data = &datasets[(t * 3 + round) % datasets.len()];
                    assert_matches_reference(&sql.apply(&to_batch(data)).unwrap(), data);
                }
            })
        })
        .collect();
    for handle in handles {
        handle.join().unwrap();
    }
    assert_eq!(sql.scans_planned(), 1);
}

#[test]
fn concurrent_apply_of_stateful_operators() {
    let chunks: Vec<RecordBatch> = (0..6)
        .map(|s| to_batch(&generated_rows(50 + 25 * s as usize, s)))
        .collect();
    for text in [
        // A scalar subquery: its result container is shared, so runs take turns.
        "SELECT feature_1 - (SELECT AVG(feature_1) FROM chunk) AS centered FROM chunk",
        // A hash join keeps its build side per run.
        "SELECT a.feature_1, b.target FROM chunk a JOIN chunk b ON a.feature_1 = b.feature_1",
        // Sort with a limit (top-k) and a window with an ordering.
        "SELECT feature_2 FROM chunk ORDER BY feature_2 DESC LIMIT 5",
        "SELECT SUM(feature_3) OVER (ORDER BY feature_1 ROWS 2 PRECEDING) AS s FROM chunk",
    ] {
        assert_concurrent_equals_sequential(&plan(text), &chunks, 4);
    }
}

/// Copies of a plan with a scalar subquery share its result slot, so their runs must take
/// turns: without that, threads read each other's subquery result or fail to store theirs.
#[test]
fn scalar_subquery_from_many_threads_uses_each_chunks_own_result() {
    let sql = plan("SELECT feature_1 - (SELECT AVG(feature_1) FROM chunk) AS centered FROM chunk");
    thread::scope(|scope| {
        for t in 0..4 {
            let sql = &sql;
            scope.spawn(move || {
                for round in 0..300 {
                    // Chunks far apart in value: a borrowed mean is off by thousands.
                    let mut data = generated_rows(3, (t * 1000 + round) as u64);
                    for row in &mut data {
                        row.f1 += 10_000.0 * t as f64;
                    }
                    let out = sql.apply(&to_batch(&data)).unwrap();
                    let centered_sum: f64 = float_column(&out, 0).iter().sum();
                    assert!(centered_sum.abs() < 1e-6, "thread {t} round {round}");
                }
            });
        }
    });
}

#[test]
fn scalar_subquery_is_per_chunk() {
    let sql = plan("SELECT feature_1 - (SELECT AVG(feature_1) FROM chunk) AS centered FROM chunk");
    for seed in 0..3 {
        let data = generated_rows(40, seed);
        let mean = data.iter().map(|r| r.f1).sum::<f64>() / data.len() as f64;
        let out = sql.apply(&to_batch(&data)).unwrap();
        for (got, row) in float_column(&out, 0).iter().zip(&data) {
            assert!((got - (row.f1 - mean)).abs() < 1e-9, "seed {seed}");
        }
    }
}

/// Text compared with a literal runs sluice's kernel (`string_eq_literal`) in a projection,
/// with SQL's answers: equal, not equal, NULL for a NULL row, the literal on either side,
/// and the same answers in a filter (which keeps DataFusion's kernel).
#[test]
fn text_compared_with_a_literal_gives_sqls_answers() {
    let rows: Vec<Row> = ["A", "B", "AB", "", "A"]
        .iter()
        .map(|c| Some(*c))
        .chain([None])
        .enumerate()
        .map(|(i, category)| Row {
            f1: i as f64,
            f2: 0.0,
            f3: 0.0,
            category,
            target: i as i64,
        })
        .collect();
    let sql = plan(
        "SELECT category = 'A' AS is_a, 'B' <> category AS not_b, category = '' AS empty, \
         COALESCE(category = 'AB', FALSE) AS is_ab FROM chunk",
    );
    let text = sql.physical_plan_text();
    assert_eq!(text.matches("(string_eq_literal)").count(), 4, "{text}");
    let out = sql.apply(&to_batch(&rows)).unwrap();
    let column = |at: usize| -> Vec<Option<bool>> {
        out.column(at)
            .as_any()
            .downcast_ref::<arrow::array::BooleanArray>()
            .unwrap()
            .iter()
            .collect()
    };
    let (t, f) = (Some(true), Some(false));
    assert_eq!(column(0), [t, f, f, f, t, None]);
    assert_eq!(column(1), [t, f, t, t, t, None]);
    assert_eq!(column(2), [f, f, f, t, f, None]);
    assert_eq!(column(3), [f, f, t, f, f, f]);

    let filtered = plan("SELECT target FROM chunk WHERE category <> 'A'")
        .apply(&to_batch(&rows))
        .unwrap();
    assert_eq!(int_column(&filtered, 0), [1, 2, 3]);
}
