//! The engine's own overhead, with an identity function on in-memory batches: admission
//! (reservations), the whole pipeline ordered (reorder buffer) and unordered, and stats.
//! CI only builds these (`cargo bench --no-run`); run them with `cargo bench -p sluice`.

use std::sync::Arc;

use arrow::array::{Float64Array, Int64Array};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use sluice::source::MemorySource;
use sluice::{BackpressureController, SluiceError, StreamingDataPipeline};

fn table(rows: usize) -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("x", DataType::Float64, false),
    ]));
    RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int64Array::from_iter_values(0..rows as i64)),
            Arc::new(Float64Array::from_iter_values((0..rows).map(|i| i as f64))),
        ],
    )
    .expect("valid")
}

fn admission(c: &mut Criterion) {
    let controller =
        BackpressureController::with_budget_bytes(100, 1 << 30, true, 1000, 1, 1 << 20);
    c.bench_function("admission/try_admit+release", |b| {
        b.iter(|| {
            let r = controller.try_admit(4096).expect("fits");
            drop(r);
        })
    });
}

fn pipeline(c: &mut Criterion) {
    let rows = 1_000_000;
    let data = table(rows);
    let mut group = c.benchmark_group("pipeline/identity");
    group.throughput(Throughput::Elements(rows as u64));
    group.sample_size(10);
    for (ordered, chunk) in [(true, 1000usize), (true, 10_000), (false, 1000)] {
        let id = BenchmarkId::new(if ordered { "ordered" } else { "unordered" }, chunk);
        group.bench_with_input(id, &chunk, |b, &chunk| {
            b.iter(|| {
                let p = StreamingDataPipeline::builder()
                    .chunk_size(chunk)
                    .adaptive_batching(false)
                    .ordered(ordered)
                    .build()
                    .expect("valid");
                let n: usize = p
                    .process(MemorySource::from_batch(data.clone()), |b: RecordBatch| {
                        Ok::<_, SluiceError>(b)
                    })
                    .expect("start")
                    .map(|c| c.expect("ok").batch.num_rows())
                    .sum();
                assert_eq!(n, rows);
            })
        });
    }
    group.finish();
}

fn stats(c: &mut Criterion) {
    let p = StreamingDataPipeline::builder().build().expect("valid");
    c.bench_function("stats/snapshot", |b| b.iter(|| p.stats()));
}

criterion_group!(benches, admission, pipeline, stats);
criterion_main!(benches);
