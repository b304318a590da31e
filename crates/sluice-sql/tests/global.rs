//! Whole-input windows (`GlobalSql`): the z-score with the whole input's mean and standard
//! deviation equals an exact reference (integer arithmetic on scaled values) to 1e-9, and
//! gives the same bits whatever the chunk size and merge order; NULLs and empty inputs
//! follow SQL; on one chunk it agrees with DataFusion's own window functions; windows it
//! cannot compute exactly are refused with the reason.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, Float64Array, Int64Array, StringArray};
use arrow::compute::concat_batches;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use datafusion::common::ScalarValue;
use sluice_sql::{ChunkSql, GlobalPartial, GlobalSql, GlobalValues, SqlError};

const ROWS: usize = 12_000;
/// Floats are k / 1024 for integers k, so sums of them and of their squares are exact in i128.
const SCALE: f64 = 1024.0;
const OFFSET: i64 = 1_024_000_000_000; // 1e9 * SCALE

const ZSCORE_SQL: &str = "
SELECT id,
       (x - AVG(x) OVER ()) / STDDEV_SAMP(x) OVER () AS zx,
       (big - AVG(big) OVER ()) / STDDEV(big) OVER () AS zbig,
       COUNT(x) OVER () AS cx,
       COUNT(*) OVER () AS all_rows,
       SUM(n) OVER () AS sn,
       MIN(x) OVER () AS mnx,
       MAX(big) OVER () AS mxb,
       VAR_POP(n) OVER () AS vpn,
       STDDEV_POP(x) OVER () AS sdpx,
       AVG(n) OVER () AS avgn,
       MAX(label) OVER () AS mxl
FROM chunk";

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("x", DataType::Float64, true),
        Field::new("big", DataType::Float64, false),
        Field::new("n", DataType::Int64, true),
        Field::new("label", DataType::Utf8, true),
    ]))
}

/// The integers behind the generated columns: x = kx / SCALE (NULL for every 17th row),
/// big = (OFFSET + kb) / SCALE, n (NULL for every 13th row).
struct Data {
    kx: Vec<Option<i64>>,
    kb: Vec<i64>,
    n: Vec<Option<i64>>,
}

fn generate(rows: usize) -> Data {
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut data = Data {
        kx: Vec::new(),
        kb: Vec::new(),
        n: Vec::new(),
    };
    for i in 0..rows {
        let kx = (next() % (1 << 41)) as i64 - (1 << 40);
        data.kx.push((i % 17 != 3).then_some(kx));
        data.kb.push((next() % (1 << 30)) as i64 - (1 << 29));
        data.n
            .push((i % 13 != 5).then_some((next() % 2_000_001) as i64 - 1_000_000));
    }
    data
}

fn batch(data: &Data, range: std::ops::Range<usize>) -> RecordBatch {
    let ids: ArrayRef = Arc::new(Int64Array::from_iter_values(
        range.clone().map(|i| i as i64),
    ));
    let x: ArrayRef = Arc::new(Float64Array::from_iter(
        data.kx[range.clone()]
            .iter()
            .map(|k| k.map(|k| k as f64 / SCALE)),
    ));
    let big: ArrayRef = Arc::new(Float64Array::from_iter_values(
        data.kb[range.clone()]
            .iter()
            .map(|&k| (OFFSET + k) as f64 / SCALE),
    ));
    let n: ArrayRef = Arc::new(Int64Array::from(data.n[range.clone()].to_vec()));
    let label: ArrayRef = Arc::new(StringArray::from_iter(
        range.map(|i| (i % 5 != 0).then(|| format!("l{}", i % 997))),
    ));
    RecordBatch::try_new(schema(), vec![ids, x, big, n, label]).unwrap()
}

fn chunks(data: &Data, size: usize) -> Vec<RecordBatch> {
    let rows = data.kb.len();
    (0..rows)
        .step_by(size)
        .map(|start| batch(data, start..(start + size).min(rows)))
        .collect()
}

/// Mean and sample / population variance of `k / SCALE` from exact integer sums, each
/// rounded once at the end.
fn exact_stats(ks: impl Iterator<Item = i128>, scale: f64) -> (f64, f64, f64) {
    let (mut n, mut s1, mut s2) = (0i128, 0i128, 0i128);
    for k in ks {
        n += 1;
        s1 += k;
        s2 += k * k;
    }
    let numerator = n * s2 - s1 * s1;
    let mean = s1 as f64 / scale / n as f64;
    let var_samp = numerator as f64 / (n * (n - 1)) as f64 / (scale * scale);
    let var_pop = numerator as f64 / (n * n) as f64 / (scale * scale);
    (mean, var_samp, var_pop)
}

fn close(got: f64, want: f64, what: &str) {
    assert!(
        (got - want).abs() <= 1e-9 * want.abs() + 1e-12,
        "{what}: {got} vs exact {want}"
    );
}

fn floats(batch: &RecordBatch, name: &str) -> Vec<Option<f64>> {
    let col = batch.column_by_name(name).unwrap();
    let col = col.as_any().downcast_ref::<Float64Array>().unwrap();
    col.iter().collect()
}

fn ints(batch: &RecordBatch, name: &str) -> Vec<Option<i64>> {
    let col = batch.column_by_name(name).unwrap();
    let col = col.as_any().downcast_ref::<Int64Array>().unwrap();
    col.iter().collect()
}

/// Pass 1 over `chunks` (merged in `order`), then pass 2 on each chunk, concatenated.
fn run_global(sql: &GlobalSql, chunks: &[RecordBatch], reverse: bool) -> RecordBatch {
    let mut partials: Vec<GlobalPartial> = chunks.iter().map(|c| sql.partial(c).unwrap()).collect();
    if reverse {
        partials.reverse();
    }
    let mut total = sql.empty_partial();
    for p in &partials {
        total.merge(p);
    }
    let values = sql.finish(&total).unwrap();
    let pass2 = sql.pass2(&values).unwrap();
    let outs: Vec<RecordBatch> = chunks.iter().map(|c| pass2.apply(c).unwrap()).collect();
    concat_batches(&pass2.output_schema(), &outs).unwrap()
}

#[test]
fn whole_input_zscore_equals_the_exact_reference_for_any_chunking() {
    let data = generate(ROWS);
    let sql = GlobalSql::new(ZSCORE_SQL, schema()).unwrap();
    assert_eq!(sql.windows().len(), 13);

    let (mx, vx_samp, vx_pop) = exact_stats(data.kx.iter().flatten().map(|&k| k as i128), SCALE);
    let (mb, vb_samp, _) = exact_stats(data.kb.iter().map(|&k| (OFFSET + k) as i128), SCALE);
    let (mn, _, vn_pop) = exact_stats(data.n.iter().flatten().map(|&k| k as i128), 1.0);
    let (sx, sb) = (vx_samp.sqrt(), vb_samp.sqrt());

    let mut outputs = Vec::new();
    for size in [1, 7, 100_000] {
        for reverse in [false, true] {
            let out = run_global(&sql, &chunks(&data, size), reverse);
            assert_eq!(out.num_rows(), ROWS);
            let zx = floats(&out, "zx");
            let zbig = floats(&out, "zbig");
            for i in 0..ROWS {
                match data.kx[i] {
                    Some(k) => close(zx[i].unwrap(), (k as f64 / SCALE - mx) / sx, "zx"),
                    None => assert_eq!(zx[i], None, "a NULL x gives a NULL z-score"),
                }
                let b = (OFFSET + data.kb[i]) as f64 / SCALE;
                close(zbig[i].unwrap(), (b - mb) / sb, "zbig");
            }
            let non_null_x = data.kx.iter().flatten().count() as i64;
            assert!(ints(&out, "cx").iter().all(|&c| c == Some(non_null_x)));
            assert!(ints(&out, "all_rows")
                .iter()
                .all(|&c| c == Some(ROWS as i64)));
            let sum_n: i64 = data.n.iter().flatten().sum();
            assert!(ints(&out, "sn").iter().all(|&s| s == Some(sum_n)));
            let min_x = data.kx.iter().flatten().min().unwrap();
            assert_eq!(floats(&out, "mnx")[0], Some(*min_x as f64 / SCALE));
            let max_b = data.kb.iter().max().unwrap();
            assert_eq!(
                floats(&out, "mxb")[0],
                Some((OFFSET + max_b) as f64 / SCALE)
            );
            close(floats(&out, "vpn")[0].unwrap(), vn_pop, "var_pop(n)");
            close(
                floats(&out, "sdpx")[0].unwrap(),
                vx_pop.sqrt(),
                "stddev_pop(x)",
            );
            close(floats(&out, "avgn")[0].unwrap(), mn, "avg(n)");
            let mxl = out.column_by_name("mxl").unwrap();
            let mxl = mxl.as_any().downcast_ref::<StringArray>().unwrap();
            assert_eq!(mxl.value(0), "l996");
            outputs.push((size, reverse, out));
        }
    }
    // The same bits whatever the chunk size and the order partial states were merged in.
    let (_, _, first) = &outputs[0];
    for (size, reverse, out) in &outputs[1..] {
        for column in ["zx", "zbig", "vpn", "sdpx", "avgn"] {
            let a: Vec<Option<u64>> = floats(first, column)
                .iter()
                .map(|v| v.map(f64::to_bits))
                .collect();
            let b: Vec<Option<u64>> = floats(out, column)
                .iter()
                .map(|v| v.map(f64::to_bits))
                .collect();
            assert!(
                a == b,
                "{column} differs for chunks of {size} (reversed: {reverse})"
            );
        }
    }
}

#[test]
fn partial_states_merged_from_two_threads_give_the_same_values() {
    let data = generate(5_000);
    let sql = GlobalSql::new(ZSCORE_SQL, schema()).unwrap();
    let all = chunks(&data, 7);
    let sequential = sql.compute(all.iter().cloned()).unwrap();
    let (left, right) = all.split_at(all.len() / 3);
    let merged = std::thread::scope(|s| {
        let a = s.spawn(|| {
            let mut p = sql.empty_partial();
            left.iter().for_each(|c| p.merge(&sql.partial(c).unwrap()));
            p
        });
        let b = s.spawn(|| {
            let mut p = sql.empty_partial();
            right
                .iter()
                .rev()
                .for_each(|c| p.merge(&sql.partial(c).unwrap()));
            p
        });
        let (a, b) = (a.join().unwrap(), b.join().unwrap());
        let mut total = b;
        total.merge(&a);
        total
    });
    assert_eq!(merged.rows(), 5_000);
    assert_eq!(sql.finish(&merged).unwrap(), sequential);
    // Saved and read back exactly (the run record's form).
    let bytes = sequential.to_bytes().unwrap();
    assert_eq!(GlobalValues::from_bytes(&bytes).unwrap(), sequential);
}

#[test]
fn on_one_chunk_it_agrees_with_datafusions_windows() {
    let data = generate(3_000);
    let whole = batch(&data, 0..3_000);
    let per_chunk = ChunkSql::new(ZSCORE_SQL, schema()).unwrap();
    let expected = per_chunk.apply(&whole).unwrap();
    let global = GlobalSql::new(ZSCORE_SQL, schema()).unwrap();
    let got = run_global(&global, &[whole], false);
    let names = |b: &RecordBatch| -> Vec<(String, DataType)> {
        b.schema()
            .fields()
            .iter()
            .map(|f| (f.name().clone(), f.data_type().clone()))
            .collect()
    };
    assert_eq!(names(&got), names(&expected), "same columns and types");
    assert_eq!(
        global
            .output_schema()
            .fields()
            .iter()
            .map(|f| (f.name().clone(), f.data_type().clone()))
            .collect::<Vec<_>>(),
        names(&expected)
    );
    for column in ["zx", "zbig", "vpn", "sdpx", "avgn", "mnx", "mxb"] {
        for (g, e) in floats(&got, column).iter().zip(floats(&expected, column)) {
            match (g, e) {
                (Some(g), Some(e)) => close(*g, e, column),
                (g, e) => assert_eq!(*g, e, "{column}"),
            }
        }
    }
    for column in ["cx", "all_rows", "sn", "id"] {
        assert_eq!(ints(&got, column), ints(&expected, column), "{column}");
    }
}

#[test]
fn nulls_single_rows_and_empty_input_follow_sql() {
    let sql = "SELECT AVG(x) OVER () AS a, STDDEV(x) OVER () AS s, STDDEV_POP(x) OVER () AS sp, \
               COUNT(x) OVER () AS c, COUNT(*) OVER () AS r, SUM(x) OVER () AS t, \
               MIN(n) OVER () AS mn, x FROM chunk";
    let global = GlobalSql::new(sql, schema()).unwrap();
    let value = |values: &GlobalValues, i: usize| values.values()[i].clone();

    // No rows at all: AVG, STDDEV, SUM, MIN NULL; COUNT 0.
    let empty = global.compute(std::iter::empty()).unwrap();
    assert_eq!(value(&empty, 0), ScalarValue::Float64(None));
    assert_eq!(value(&empty, 1), ScalarValue::Float64(None));
    assert_eq!(value(&empty, 2), ScalarValue::Float64(None));
    assert_eq!(value(&empty, 3), ScalarValue::Int64(Some(0)));
    assert_eq!(value(&empty, 4), ScalarValue::Int64(Some(0)));
    assert_eq!(value(&empty, 5), ScalarValue::Float64(None));
    assert_eq!(value(&empty, 6), ScalarValue::Int64(None));

    // Only NULLs, spread over chunks: aggregates skip them.
    let mut data = generate(40);
    data.kx.iter_mut().for_each(|k| *k = None);
    data.n.iter_mut().for_each(|k| *k = None);
    data.kx[11] = Some(3 * 1024);
    let values = global.compute(chunks(&data, 3)).unwrap();
    assert_eq!(value(&values, 0), ScalarValue::Float64(Some(3.0)));
    assert_eq!(
        value(&values, 1),
        ScalarValue::Float64(None),
        "STDDEV of one value"
    );
    assert_eq!(value(&values, 2), ScalarValue::Float64(Some(0.0)));
    assert_eq!(value(&values, 3), ScalarValue::Int64(Some(1)));
    assert_eq!(value(&values, 4), ScalarValue::Int64(Some(40)));
    assert_eq!(value(&values, 5), ScalarValue::Float64(Some(3.0)));
    assert_eq!(value(&values, 6), ScalarValue::Int64(None));
    let pass2 = global.pass2(&values).unwrap();
    let out = pass2.apply(&batch(&data, 0..40)).unwrap();
    assert_eq!(out.num_rows(), 40);
    assert!(floats(&out, "s").iter().all(Option::is_none));

    // An empty chunk changes nothing.
    let mut with_empty = chunks(&data, 3);
    with_empty.insert(2, batch(&data, 0..0));
    assert_eq!(global.compute(with_empty).unwrap(), values);
}

/// The seed's input: three float features, a category and a target.
fn seed_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("feature_1", DataType::Float64, true),
        Field::new("feature_2", DataType::Float64, true),
        Field::new("feature_3", DataType::Float64, true),
        Field::new("category", DataType::Utf8, true),
        Field::new("target", DataType::Int64, true),
    ]))
}

/// Three rows of the float columns `projection` names, in that order (as a projected read
/// hands them over): [1, 2, 4], [1, 2, 3] and [0.5, 0.5, 2].
fn three_rows(schema: &SchemaRef, projection: &[usize]) -> RecordBatch {
    let f = |v: Vec<f64>| Arc::new(Float64Array::from(v)) as ArrayRef;
    RecordBatch::try_new(
        Arc::new(schema.project(projection).unwrap()),
        vec![
            f(vec![1.0, 2.0, 4.0]),
            f(vec![1.0, 2.0, 3.0]),
            f(vec![0.5, 0.5, 2.0]),
        ],
    )
    .unwrap()
}

#[test]
fn the_seed_query_reads_only_the_columns_its_windows_need() {
    let schema = seed_schema();
    let sql = include_str!("../../../examples/seed_preprocessing.sql");
    let global = GlobalSql::new(sql, schema.clone()).unwrap();
    let mut columns = global.pass1_columns().to_vec();
    columns.sort();
    assert_eq!(columns, ["feature_1", "feature_2", "feature_3"]);
    // A chunk of only those columns (a projected Parquet read) is enough for pass 1.
    let projected = three_rows(&schema, &[2, 0, 1]);
    let values = global.compute([projected]).unwrap();
    // AVG(feature_1) over the three rows is 2.
    assert!(values
        .values()
        .iter()
        .any(|v| *v == ScalarValue::Float64(Some(2.0))));
}

#[test]
fn windows_it_cannot_compute_exactly_are_refused_with_the_reason() {
    let cases = [
        (
            "SELECT AVG(x) OVER (PARTITION BY n) FROM chunk",
            "PARTITION BY",
        ),
        ("SELECT SUM(x) OVER (ORDER BY id) FROM chunk", "ORDER BY"),
        (
            "SELECT AVG(x) OVER (ROWS BETWEEN 2 PRECEDING AND CURRENT ROW) FROM chunk",
            "sliding window",
        ),
        (
            "SELECT ROW_NUMBER() OVER () FROM chunk",
            "ranking or offset",
        ),
        (
            "SELECT MEDIAN(x) OVER () FROM chunk",
            "no exact whole-input merge",
        ),
        (
            "SELECT AVG(s) OVER () FROM (SELECT SUM(x) AS s FROM chunk GROUP BY n)",
            "GROUP BY",
        ),
        (
            "SELECT AVG(x) OVER () FROM (SELECT * FROM chunk LIMIT 10)",
            "LIMIT",
        ),
        (
            "SELECT id FROM chunk WHERE x > (SELECT AVG(x) OVER () FROM chunk LIMIT 1)",
            "inside a subquery",
        ),
        (
            "SELECT AVG(z) OVER () FROM (SELECT x - AVG(x) OVER () AS z FROM chunk)",
            "nested windows",
        ),
        ("SELECT SUM(label) OVER () FROM chunk", "Utf8"),
    ];
    for (sql, reason) in cases {
        match GlobalSql::new(sql, schema()) {
            Err(SqlError::GlobalWindow {
                window,
                reason: why,
            }) => {
                assert!(why.contains(reason), "{sql}: {why}");
                assert!(!window.is_empty(), "{sql}");
                let message = SqlError::GlobalWindow {
                    window,
                    reason: why,
                }
                .to_string();
                assert!(message.contains("--windows global"), "{message}");
            }
            Err(other) if reason == "Utf8" => {
                // DataFusion itself may refuse SUM of a string first.
                assert!(matches!(other, SqlError::Plan { .. }), "{sql}: {other}");
            }
            other => panic!("{sql}: expected a refusal naming {reason:?}, got {other:?}"),
        }
    }
}

#[test]
fn a_query_without_windows_needs_no_first_pass() {
    let global = GlobalSql::new("SELECT id, x * 2 AS y FROM chunk WHERE n > 0", schema()).unwrap();
    assert!(!global.has_windows());
    let values = global.compute(std::iter::empty()).unwrap();
    let data = generate(100);
    let pass2 = global.pass2(&values).unwrap();
    let direct = ChunkSql::new("SELECT id, x * 2 AS y FROM chunk WHERE n > 0", schema()).unwrap();
    let b = batch(&data, 0..100);
    assert_eq!(pass2.apply(&b).unwrap(), direct.apply(&b).unwrap());
}

#[test]
fn pass2_folds_the_values_into_the_query() {
    let schema = seed_schema();
    let sql = include_str!("../../../examples/seed_preprocessing_global.sql");
    let global = GlobalSql::new(sql, schema.clone()).unwrap();
    let projected = three_rows(&schema, &[0, 1, 2]);
    let values = global.compute([projected]).unwrap();
    let plan = global.pass2(&values).unwrap().physical_plan_text();
    // Every std is > 0, so each CASE is its THEN branch with the values as literals: no
    // column of constants is built, compared and divided by per chunk.
    assert!(!plan.contains("CASE"), "{plan}");
    assert!(
        !plan.contains("OVER") && !plan.contains("UNBOUNDED"),
        "{plan}"
    );
    assert!(
        plan.contains(" - 2.3333333333333335) / 1.5275252316519468 as feature_1"),
        "{plan}"
    );
    // The one-hot comparisons run sluice's text kernel in pass 2 too.
    assert_eq!(plan.matches("(string_eq_literal)").count(), 3, "{plan}");
}
