//! The push API: frames sent from other threads come out once each, in send order; a short
//! chunk is cut after `max_latency`; a full engine blocks `send`; latency is end to end.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arrow::record_batch::RecordBatch;
use sluice::sink::CommitHook;
use sluice::{
    Manifest, OutputOptions, RunStatus, SluiceError, StreamOptions, StreamingDataPipeline,
};

use common::*;

fn pipeline(chunk_size: usize) -> StreamingDataPipeline {
    StreamingDataPipeline::builder()
        .chunk_size(chunk_size)
        .num_workers(3)
        .build()
        .expect("valid settings")
}

fn identity(b: RecordBatch) -> Result<RecordBatch, SluiceError> {
    Ok(b)
}

#[test]
fn frames_from_two_producers_come_out_once_each_in_send_order() {
    let p = pipeline(500);
    let stream = p
        .open_stream(schema(), identity, StreamOptions::default())
        .expect("open");
    // Each producer sends its own id range; frames of both interleave in the channel.
    let producers: Vec<_> = (0..2i64)
        .map(|k| {
            let sender = stream.sender.clone();
            std::thread::spawn(move || {
                for f in 0..200i64 {
                    sender
                        .send(batch(k * 1_000_000 + f * 37, 37))
                        .expect("send");
                }
            })
        })
        .collect();
    let sender = stream.sender.clone();
    let closer = std::thread::spawn(move || {
        for p in producers {
            p.join().expect("producer");
        }
        sender.close();
    });
    let mut ids = Vec::new();
    let mut next_row = 0;
    for chunk in stream.results {
        let chunk = chunk.expect("chunk");
        assert_eq!(chunk.input_rows.start, next_row, "chunks in send order");
        next_row = chunk.input_rows.end;
        ids.extend(ids_of(&chunk.batch));
    }
    closer.join().expect("closer");
    assert_eq!(ids.len(), 2 * 200 * 37);
    // Per producer, its rows keep their order.
    for k in 0..2i64 {
        let mine: Vec<i64> = ids
            .iter()
            .copied()
            .filter(|&i| i / 1_000_000 == k)
            .collect();
        let expected: Vec<i64> = (0..200 * 37).map(|i| k * 1_000_000 + i).collect();
        assert_eq!(mine, expected);
    }
    // Small frames were joined into chunks: far fewer chunks than frames.
    assert!(p.stats().total_chunks_processed < 100);
}

#[test]
fn a_short_chunk_comes_out_after_max_latency_while_the_stream_is_open() {
    let p = pipeline(10_000);
    let options = StreamOptions {
        max_latency: Duration::from_millis(200),
        ..StreamOptions::default()
    };
    let stream = p.open_stream(schema(), identity, options).expect("open");
    stream.sender.send(batch(0, 10)).expect("send");
    // The chunk (10 rows of 10,000) must come while the sender is still open; without the
    // latency cut it would wait for close() and this receive would time out.
    let (tx, rx) = crossbeam_channel::bounded(1);
    let mut results = stream.results;
    let reader = std::thread::spawn(move || {
        let first = results.next().map(|c| c.expect("chunk"));
        let _ = tx.send(first.map(|c| ids_of(&c.batch)));
        results
    });
    let first = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("a chunk before close()");
    assert_eq!(first, Some((0..10).collect::<Vec<i64>>()));
    stream.sender.close();
    let results = reader.join().expect("reader");
    assert_eq!(results.count(), 0);
    // Each row waited for the latency cut: end-to-end latency, not the function's.
    let stats = p.stats();
    assert!(
        stats.latency_p50_ms >= 200.0,
        "p50 {} ms is the function's time, not send to hand-over",
        stats.latency_p50_ms
    );
}

#[test]
fn a_full_engine_blocks_send_until_results_are_taken() {
    // 1 MB budget, rows of ~40 bytes, 1,000-row frames: the engine holds a few dozen
    // frames at most. The consumer takes nothing until the producer has gone as far as it
    // can; then we count how far ahead it got.
    let p = StreamingDataPipeline::builder()
        .chunk_size(1000)
        .max_memory_mb(1.0)
        .num_workers(2)
        .build()
        .expect("settings");
    let stream = p
        .open_stream(schema(), identity, StreamOptions::default())
        .expect("open");
    let sent = Arc::new(AtomicU64::new(0));
    let producer = {
        let sender = stream.sender.clone();
        let sent = sent.clone();
        std::thread::spawn(move || {
            for f in 0..2000i64 {
                sender.send(batch(f * 1000, 1000)).expect("send");
                sent.fetch_add(1, Ordering::SeqCst);
            }
            sender.close();
        })
    };
    let mut max_ahead = 0u64;
    let mut taken = 0u64;
    let mut rows = 0u64;
    for chunk in stream.results {
        let chunk = chunk.expect("chunk");
        rows += chunk.batch.num_rows() as u64;
        taken = rows / 1000;
        max_ahead = max_ahead.max(sent.load(Ordering::SeqCst).saturating_sub(taken));
        // A slow consumer (not synchronization: the run is made slow).
        std::thread::sleep(Duration::from_millis(2));
    }
    producer.join().expect("producer");
    assert_eq!(rows, 2_000_000);
    assert_eq!(taken, 2000);
    assert!(
        max_ahead < 200,
        "the producer ran {max_ahead} frames ahead of the consumer: send did not block"
    );
}

#[test]
fn send_after_close_and_a_wrong_schema_fail() {
    let p = pipeline(100);
    let stream = p
        .open_stream(schema(), identity, StreamOptions::default())
        .expect("open");
    let other = out_schema();
    let wrong = RecordBatch::new_empty(other);
    assert!(stream.sender.send(wrong).is_err());
    stream.sender.send(batch(0, 5)).expect("send");
    stream.sender.close();
    assert!(stream.sender.send(batch(5, 5)).is_err());
    let rows: usize = stream
        .results
        .map(|c| c.expect("chunk").batch.num_rows())
        .sum();
    assert_eq!(rows, 5);
}

#[test]
fn a_stream_with_an_output_folder_writes_every_row_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = pipeline(300);
    let options = StreamOptions {
        output: Some(OutputOptions::new(dir.path()).rows_per_part(1000)),
        ..StreamOptions::default()
    };
    let stream = p
        .open_stream(
            schema(),
            |b: RecordBatch| Ok::<_, SluiceError>(transform(&b)),
            options,
        )
        .expect("open");
    let sender = stream.sender.clone();
    let producer = std::thread::spawn(move || {
        for f in 0..50i64 {
            sender.send(batch(f * 99, 99)).expect("send");
        }
        sender.close();
    });
    let handed: usize = stream
        .results
        .map(|c| c.expect("chunk").batch.num_rows())
        .sum();
    producer.join().expect("producer");
    assert_eq!(handed, 50 * 99);
    let written: Vec<i64> = read_parts(dir.path()).iter().flat_map(ids_of).collect();
    assert_eq!(written, (0..50 * 99).collect::<Vec<i64>>());
}

#[test]
fn a_quiet_stream_commits_on_time_and_the_hook_runs_once_the_manifest_lists_the_part() {
    let dir = tempfile::tempdir().expect("tmp");
    let out = dir.path().to_path_buf();
    let (told, calls) = crossbeam_channel::unbounded();
    let hook = {
        let out = out.clone();
        CommitHook::new(move |m: &Manifest| {
            let on_disk = Manifest::read_from(&out)?;
            let _ = told.send((m.parts.clone(), on_disk.parts, m.status));
            Ok(())
        })
    };
    let output = OutputOptions::new(&out)
        .rows_per_part(1_000_000)
        .commit_interval(Duration::from_millis(300))
        .on_commit(hook);
    let options = StreamOptions {
        max_latency: Duration::from_millis(20),
        output: Some(output),
        capacity: None,
    };
    let p = pipeline(1_000);
    let stream = p.open_stream(schema(), identity, options).expect("open");
    let sender = stream.sender.clone();
    let results = stream.results;
    let consumer = std::thread::spawn(move || {
        let mut ids = Vec::new();
        for chunk in results {
            ids.extend(ids_of(&chunk.expect("chunk").batch));
        }
        ids
    });
    sender.send(batch(0, 10)).expect("send");
    // 10 rows of a 1,000,000-row part, and nothing more comes: only the interval commits.
    let (parts, on_disk, status) = calls
        .recv_timeout(Duration::from_secs(60))
        .expect("the part committed on time");
    assert_eq!(status, RunStatus::Running);
    assert_eq!(parts.len(), 1);
    assert_eq!(
        (
            parts[0].rows,
            parts[0].input_row_start,
            parts[0].input_row_end
        ),
        (10, 0, 10)
    );
    assert_eq!(
        on_disk, parts,
        "the hook runs after the manifest on disk lists the part"
    );

    sender.send(batch(10, 5)).expect("send");
    sender.close();
    assert_eq!(
        consumer.join().expect("consumer"),
        (0..15).collect::<Vec<i64>>()
    );
    let rest: Vec<_> = calls.try_iter().collect();
    let (parts, on_disk, status) = rest.last().expect("the final manifest's call");
    assert_eq!(*status, RunStatus::Complete);
    assert_eq!(on_disk, parts);
    assert_eq!(parts.iter().map(|p| p.rows).sum::<u64>(), 15);
    assert_eq!(parts.last().map(|p| p.input_row_end), Some(15));
}
