//! `sluice run` options through the real binary: every input and output format, workers,
//! unordered output, the error policies, --stats-json, --max-memory, --rows-per-part,
//! --quiet; plus `--version`, `inspect` and `demo`.

mod common;

use common::*;
use predicates::str::contains;
use serde_json::Value;

/// Fails chunk 2 (input rows 2000..3000) of a fixed 1000-row run: a cast error.
const FAILING_SQL: &str =
    "SELECT id, CAST(CASE WHEN id >= 2000 AND id < 3000 THEN 'oops' ELSE CAST(id AS VARCHAR) END AS BIGINT) AS v FROM chunk";

fn ids_input(dir: &std::path::Path, ext: &str, rows: i64) -> TestResult<std::path::PathBuf> {
    let path = dir.join(format!("ids.{ext}"));
    write_ids(&path, rows)?;
    Ok(path)
}

#[test]
fn every_input_and_output_format_copies_every_row_in_order() -> TestResult {
    let dir = tempfile::tempdir()?;
    for input_ext in ["csv", "parquet", "ndjson", "arrow"] {
        let input = ids_input(dir.path(), input_ext, 12_345)?;
        for output_format in ["parquet", "csv", "ipc"] {
            let out = dir.path().join(format!("out-{input_ext}-{output_format}"));
            let output = sluice()
                .args([
                    "run",
                    "--quiet",
                    "--rows-per-part",
                    "5000",
                    "--output-format",
                    output_format,
                ])
                .args(["--input", path_str(&input), "--output", path_str(&out)])
                .output()?;
            assert_eq!(
                output.status.code(),
                Some(0),
                "{input_ext} -> {output_format}: {}",
                stderr_of(&output)
            );
            let batches = read_output(&out)?;
            assert_eq!(
                int_column(&batches, "id")?,
                (0..12_345).collect::<Vec<_>>(),
                "{input_ext} -> {output_format}"
            );
            let x = float_column(&batches, "x")?;
            assert!(x.iter().enumerate().all(|(i, &x)| x == i as f64 / 4.0));
            let m = manifest(&out)?;
            assert_eq!(m["status"], "complete");
            assert_eq!(m["total_rows"], 12_345);
            assert_eq!(m["format"], output_format);
        }
    }
    Ok(())
}

#[test]
fn format_flag_overrides_the_extension_and_inputs_may_be_globs_or_folders() -> TestResult {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    std::fs::create_dir(&data)?;
    for (i, rows) in [(0, 0..3000), (1, 3000..5000)] {
        write_batches(
            &data.join(format!("f{i}.csv")),
            &ids_schema(),
            &[ids_batch(rows)?],
        )?;
    }
    std::fs::copy(data.join("f0.csv"), dir.path().join("f0.txt"))?;
    // A folder of CSV files, read in name order.
    let out = dir.path().join("out-folder");
    sluice()
        .args([
            "run",
            "--quiet",
            "--input",
            path_str(&data),
            "--output",
            path_str(&out),
        ])
        .assert()
        .code(0);
    assert_eq!(
        int_column(&read_output(&out)?, "id")?,
        (0..5000).collect::<Vec<_>>()
    );
    // A glob.
    let out = dir.path().join("out-glob");
    let glob = format!("{}/f*.csv", data.display());
    sluice()
        .args([
            "run",
            "--quiet",
            "--input",
            &glob,
            "--output",
            path_str(&out),
        ])
        .assert()
        .code(0);
    assert_eq!(
        int_column(&read_output(&out)?, "id")?,
        (0..5000).collect::<Vec<_>>()
    );
    // An extension that names no format, with --format.
    let txt = dir.path().join("f0.txt");
    let out = dir.path().join("out-txt");
    sluice()
        .args([
            "run",
            "--quiet",
            "--format",
            "csv",
            "--input",
            path_str(&txt),
            "--output",
            path_str(&out),
        ])
        .assert()
        .code(0);
    assert_eq!(
        int_column(&read_output(&out)?, "id")?,
        (0..3000).collect::<Vec<_>>()
    );
    Ok(())
}

#[test]
fn workers_and_unordered_hold_the_same_rows() -> TestResult {
    let dir = tempfile::tempdir()?;
    let input = ids_input(dir.path(), "parquet", 30_000)?;
    let sql = "SELECT id, x + 1 AS x1 FROM chunk";
    let mut results = Vec::new();
    for extra in [
        &["--workers", "1"][..],
        &["--workers", "3"],
        &["--workers", "2", "--unordered"],
    ] {
        let out = dir.path().join(format!("out-{}", results.len()));
        let output = sluice()
            .args([
                "run",
                "--quiet",
                "--chunk-size",
                "500",
                "--rows-per-part",
                "4000",
            ])
            .args(extra)
            .args([
                "--input",
                path_str(&input),
                "--output",
                path_str(&out),
                "--sql-text",
                sql,
            ])
            .output()?;
        assert_eq!(
            output.status.code(),
            Some(0),
            "{extra:?}: {}",
            stderr_of(&output)
        );
        results.push(int_column(&read_output(&out)?, "id")?);
    }
    let all: Vec<i64> = (0..30_000).collect();
    assert_eq!(results[0], all, "one worker, in order");
    assert_eq!(results[1], all, "three workers, in order");
    let mut unordered = results[2].clone();
    unordered.sort_unstable();
    assert_eq!(unordered, all, "unordered: every row exactly once");
    sluice()
        .args([
            "run",
            "--workers",
            "0",
            "--input",
            path_str(&input),
            "--output",
        ])
        .arg(dir.path().join("never"))
        .assert()
        .code(2)
        .stderr(contains("num_workers"));
    assert!(!dir.path().join("never").exists());
    Ok(())
}

fn run_policy(
    dir: &std::path::Path,
    input: &std::path::Path,
    policy: &str,
    name: &str,
) -> TestResult<(std::process::Output, std::path::PathBuf, Value)> {
    let out = dir.join(format!("out-{name}"));
    let stats = dir.join(format!("stats-{name}.json"));
    let output = sluice()
        .args([
            "run",
            "--fixed-chunks",
            "--chunk-size",
            "1000",
            "--rows-per-part",
            "1000",
            "--workers",
            "2",
        ])
        .args(["--on-error", policy, "--stats-json", path_str(&stats)])
        .args([
            "--input",
            path_str(input),
            "--output",
            path_str(&out),
            "--sql-text",
            FAILING_SQL,
        ])
        .output()?;
    let stats: Value = serde_json::from_str(&std::fs::read_to_string(&stats)?)?;
    Ok((output, out, stats))
}

#[test]
fn error_policies_fail_skip_pass_through_and_dead_letter() -> TestResult {
    let dir = tempfile::tempdir()?;
    let input = ids_input(dir.path(), "csv", 5_000)?;

    // fail: exit 1, the chunk, its rows and the cause named; the parts committed before
    // the failure are kept (a --resume goes on from them), and the manifest says failed.
    let (output, out, stats) = run_policy(dir.path(), &input, "fail", "fail")?;
    let err = one_line_error(&output, 1);
    assert!(
        err.contains("chunk 2 (input rows 2000..3000)") && err.contains("oops"),
        "{err}"
    );
    let m = manifest(&out)?;
    assert_eq!(m["status"], "failed");
    assert_eq!(m["parts"].as_array().map(Vec::len), Some(2), "{m}");
    assert_only_listed_parts(&out, &m)?;
    assert_eq!(
        int_column(&read_output(&out)?, "v")?,
        (0..2000).collect::<Vec<_>>()
    );
    assert_eq!(stats["failed_chunks"], 1);

    // skip: the chunk is dropped and counted.
    let (output, out, stats) = run_policy(dir.path(), &input, "skip", "skip")?;
    assert_eq!(output.status.code(), Some(0), "{}", stderr_of(&output));
    let ids = int_column(&read_output(&out)?, "v")?;
    assert_eq!(ids, (0..2000).chain(3000..5000).collect::<Vec<_>>());
    assert_eq!(stats["failed_chunks"], 1);
    assert_eq!(stats["failed_rows"], 1000);
    assert_eq!(stats["total_rows_processed"], 4000);

    // pass-through: the failed chunk comes out as it came in.
    let (output, out, stats) = run_policy(dir.path(), &input, "pass-through", "pass")?;
    assert_eq!(output.status.code(), Some(0), "{}", stderr_of(&output));
    let batches = read_output(&out)?;
    assert_eq!(int_column(&batches, "id")?, (0..5000).collect::<Vec<_>>());
    let passed: Vec<_> = batches
        .iter()
        .filter(|b| b.column_by_name("name").is_some())
        .collect();
    assert_eq!(passed.iter().map(|b| b.num_rows()).sum::<usize>(), 1000);
    assert_eq!(stats["passed_through_chunks"], 1);
    assert_eq!(stats["total_rows_processed"], 5000);

    // dead letter: the failed input chunk and its cause are kept aside.
    let letters = dir.path().join("letters");
    let policy = format!("dead-letter={}", letters.display());
    let (output, out, _) = run_policy(dir.path(), &input, &policy, "dead")?;
    assert_eq!(output.status.code(), Some(0), "{}", stderr_of(&output));
    assert_eq!(int_column(&read_output(&out)?, "v")?.len(), 4000);
    let dead = read_file(&letters.join("rows-000000002000-000000003000.arrow"))?;
    assert_eq!(int_column(&dead, "id")?, (2000..3000).collect::<Vec<_>>());
    let cause = std::fs::read_to_string(letters.join("rows-000000002000-000000003000.error.txt"))?;
    assert!(
        cause.contains("input rows 2000..3000") && cause.contains("oops"),
        "{cause}"
    );

    // An unknown policy is bad usage.
    sluice()
        .args([
            "run",
            "--on-error",
            "explode",
            "--input",
            path_str(&input),
            "--output",
        ])
        .arg(dir.path().join("never"))
        .assert()
        .code(2)
        .stderr(contains("invalid --on-error \"explode\""));
    assert!(!dir.path().join("never").exists());
    Ok(())
}

#[test]
fn stats_json_max_memory_and_the_statistics_block() -> TestResult {
    let dir = tempfile::tempdir()?;
    let input = ids_input(dir.path(), "csv", 5_000)?;
    let out = dir.path().join("out");
    let stats_path = dir.path().join("stats.json");
    let output = sluice()
        .args([
            "run",
            "--fixed-chunks",
            "--chunk-size",
            "1000",
            "--max-memory",
            "48MiB",
        ])
        .args(["--stats-json", path_str(&stats_path)])
        .args(["--input", path_str(&input), "--output", path_str(&out)])
        .output()?;
    assert_eq!(output.status.code(), Some(0), "{}", stderr_of(&output));
    let stdout = stdout_of(&output);
    assert!(stdout.starts_with("Performance Statistics:\n"), "{stdout}");
    assert!(
        stdout.contains("  Rows processed: 5000\n") && stdout.contains("  Chunks processed: 5\n"),
        "{stdout}"
    );
    assert!(
        stderr_of(&output).contains("wrote 5000 rows in 1 parts"),
        "{}",
        stderr_of(&output)
    );

    let stats: Value = serde_json::from_str(&std::fs::read_to_string(&stats_path)?)?;
    assert_eq!(stats["total_rows_processed"], 5000);
    assert_eq!(stats["total_chunks_processed"], 5);
    // The engine tracks its share of --max-memory; the rest is headroom for temporaries.
    let budget = stats["memory_budget_mb"].as_f64().ok_or("budget")?;
    assert!(
        (budget * 1048576.0 - sluice::pipeline::tracked_budget_bytes(48 << 20) as f64).abs() < 1.0,
        "budget {budget}"
    );
    assert_eq!(stats["current_chunk_size"], 1000);
    assert_eq!(stats["errors_encountered"], 0);
    assert!(stats["memory_peak_mb"].as_f64().is_some_and(|m| m > 0.0));
    assert!(stats["input_bytes_read"].as_u64() == Some(std::fs::metadata(&input)?.len()));
    for key in [
        "total_processing_time",
        "throughput_rows_per_second",
        "backpressure_events",
        "latency_p50_ms",
    ] {
        assert!(stats.get(key).is_some(), "stats has no {key}");
    }

    for (bad, reason) in [
        ("lots", "expected a number"),
        ("12 parsecs", "unknown unit"),
        ("100B", "too small"),
    ] {
        let never = dir.path().join("never");
        sluice()
            .args([
                "run",
                "--max-memory",
                bad,
                "--input",
                path_str(&input),
                "--output",
                path_str(&never),
            ])
            .assert()
            .code(2)
            .stderr(contains(reason));
        assert!(
            !never.exists(),
            "--max-memory {bad} created the output folder"
        );
    }
    Ok(())
}

#[test]
fn a_second_run_into_the_same_folder_needs_resume_or_overwrite() -> TestResult {
    let dir = tempfile::tempdir()?;
    let input = ids_input(dir.path(), "csv", 3_000)?;
    let out = dir.path().join("out");
    let run = |extra: &[&str]| {
        let mut cmd = sluice();
        cmd.args([
            "run",
            "--quiet",
            "--input",
            path_str(&input),
            "--output",
            path_str(&out),
        ]);
        cmd.args(extra);
        cmd.output()
    };
    assert_eq!(run(&["--rows-per-part", "1000"])?.status.code(), Some(0));
    let again = run(&["--rows-per-part", "1000"])?;
    assert_eq!(again.status.code(), Some(2));
    assert!(
        stderr_of(&again).contains("--overwrite"),
        "{}",
        stderr_of(&again)
    );
    assert_eq!(
        run(&["--overwrite", "--rows-per-part", "2000"])?
            .status
            .code(),
        Some(0)
    );
    assert_eq!(
        part_files(&out)?.0,
        ["part-00000.parquet", "part-00001.parquet"]
    );
    assert_eq!(
        int_column(&read_output(&out)?, "id")?,
        (0..3000).collect::<Vec<_>>()
    );
    Ok(())
}

#[test]
fn version_inspect_and_demo() -> TestResult {
    let output = sluice().arg("--version").output()?;
    assert_eq!(
        stdout_of(&output),
        format!("sluice {}\n", env!("CARGO_PKG_VERSION"))
    );

    let dir = tempfile::tempdir()?;
    let parquet = ids_input(dir.path(), "parquet", 25_000)?;
    let output = sluice().args(["inspect", path_str(&parquet)]).output()?;
    assert_eq!(output.status.code(), Some(0), "{}", stderr_of(&output));
    let text = stdout_of(&output);
    assert!(text.contains("  rows:         25000\n"), "{text}");
    assert!(
        text.contains("  row groups:   3\n") && text.contains("    2: 5000 rows, "),
        "{text}"
    );
    assert!(text.contains("    id    Int64 not null\n"), "{text}");
    for (ext, format) in [("csv", "csv"), ("ndjson", "ndjson"), ("arrow", "ipc")] {
        let file = ids_input(dir.path(), ext, 25_000)?;
        let output = sluice().args(["inspect", path_str(&file)]).output()?;
        assert_eq!(output.status.code(), Some(0), "{}", stderr_of(&output));
        let text = stdout_of(&output);
        assert!(
            text.contains(&format!("  format:       {format}\n"))
                && text.contains("  rows:         25000\n")
                && text.contains("  columns:      3\n"),
            "{text}"
        );
    }
    // A missing file is bad usage.
    let output = sluice()
        .args(["inspect", path_str(&dir.path().join("nowhere.parquet"))])
        .output()?;
    one_line_error(&output, 2);

    // The demo generates into a temporary folder and removes it.
    let tmp = dir.path().join("tmp");
    std::fs::create_dir(&tmp)?;
    let output = sluice()
        .args(["demo", "--rows", "20000"])
        .env("TMPDIR", &tmp)
        .output()?;
    assert_eq!(output.status.code(), Some(0), "{}", stderr_of(&output));
    let text = stdout_of(&output);
    assert!(text.contains("Dataset created: (20000, 5)"), "{text}");
    assert!(text.contains("Final result shape: (20000, 9)"), "{text}");
    assert!(
        text.contains("Performance Statistics:\n  Total processing time: "),
        "{text}"
    );
    assert!(text.contains("  Rows processed: 20000\n"), "{text}");
    assert!(text.contains("  Backpressure events: "), "{text}");
    assert_eq!(
        std::fs::read_dir(&tmp)?.count(),
        0,
        "the demo left files behind"
    );
    Ok(())
}

#[test]
fn format_flag_reads_each_input_format_whatever_the_file_is_called() -> TestResult {
    let dir = tempfile::tempdir()?;
    for (format, ext) in [
        ("csv", "csv"),
        ("parquet", "parquet"),
        ("ndjson", "ndjson"),
        ("ipc", "arrow"),
    ] {
        // The same data under a name whose extension says nothing.
        let named = ids_input(dir.path(), ext, 7_000)?;
        let data = dir.path().join(format!("{format}.data"));
        std::fs::rename(&named, &data)?;
        let out = dir.path().join(format!("out-{format}"));
        let output = sluice()
            .args(["run", "--quiet", "--format", format])
            .args(["--input", path_str(&data), "--output", path_str(&out)])
            .output()?;
        assert_eq!(
            output.status.code(),
            Some(0),
            "--format {format}: {}",
            stderr_of(&output)
        );
        let batches = read_output(&out)?;
        assert_eq!(
            int_column(&batches, "id")?,
            (0..7_000).collect::<Vec<_>>(),
            "--format {format}"
        );
        assert_eq!(
            float_column(&batches, "x")?[6_999],
            6_999.0 / 4.0,
            "--format {format}"
        );
        // Without the flag the extension names no format: bad usage, no output.
        let never = dir.path().join(format!("never-{format}"));
        let output = sluice()
            .args([
                "run",
                "--input",
                path_str(&data),
                "--output",
                path_str(&never),
            ])
            .output()?;
        one_line_error(&output, 2);
        assert!(!never.exists());
    }
    Ok(())
}

/// Sizes of the chunks an output came from, read off `first = MIN(id) OVER ()`.
fn chunk_sizes(batches: &[arrow::record_batch::RecordBatch]) -> TestResult<Vec<usize>> {
    let mut sizes: Vec<(i64, usize)> = Vec::new();
    for first in int_column(batches, "first")? {
        match sizes.last_mut() {
            Some((f, n)) if *f == first => *n += 1,
            _ => sizes.push((first, 1)),
        }
    }
    Ok(sizes.into_iter().map(|(_, n)| n).collect())
}

#[test]
fn chunk_size_is_the_first_chunk_and_fixed_chunks_keeps_it() -> TestResult {
    let dir = tempfile::tempdir()?;
    let input = ids_input(dir.path(), "csv", 20_000)?;
    let sql = "SELECT id, MIN(id) OVER () AS first, COUNT(*) OVER () AS n FROM chunk";
    let run = |name: &str, extra: &[&str]| -> TestResult<(Vec<usize>, Value)> {
        let out = dir.path().join(format!("out-{name}"));
        let stats = dir.path().join(format!("stats-{name}.json"));
        let output = sluice()
            .args(["run", "--quiet", "--workers", "2", "--chunk-size", "700"])
            .args(extra)
            .args(["--stats-json", path_str(&stats)])
            .args(["--input", path_str(&input), "--output", path_str(&out)])
            .args(["--sql-text", sql])
            .output()?;
        assert_eq!(output.status.code(), Some(0), "{}", stderr_of(&output));
        let batches = read_output(&out)?;
        assert_eq!(int_column(&batches, "id")?, (0..20_000).collect::<Vec<_>>());
        let sizes = chunk_sizes(&batches)?;
        // COUNT(*) OVER () saw exactly the rows of its chunk.
        let n = int_column(&batches, "n")?;
        let mut row = 0;
        for &size in &sizes {
            assert!(n[row..row + size].iter().all(|&c| c == size as i64));
            row += size;
        }
        let stats: Value = serde_json::from_str(&std::fs::read_to_string(&stats)?)?;
        assert_eq!(stats["total_chunks_processed"], sizes.len());
        Ok((sizes, stats))
    };

    // Fixed: every chunk has --chunk-size rows, the last one the rest.
    let (sizes, stats) = run("fixed", &["--fixed-chunks"])?;
    let mut want = vec![700; 28];
    want.push(400);
    assert_eq!(sizes, want);
    assert_eq!(stats["current_chunk_size"], 700);
    assert_eq!(
        stats["chunk_size_history"].as_array().map(Vec::len),
        Some(1),
        "{}",
        stats["chunk_size_history"]
    );
    // The same run again gives the same chunks.
    assert_eq!(run("fixed-again", &["--fixed-chunks"])?.0, want);

    // Adaptive: --chunk-size is the first chunk's size, then the sizer grows it (the budget
    // is nearly empty).
    let (sizes, stats) = run("adaptive", &[])?;
    assert_eq!(sizes[0], 700, "{sizes:?}");
    assert!(sizes.iter().any(|&s| s > 700), "{sizes:?}");
    assert!(
        stats["chunk_size_history"]
            .as_array()
            .is_some_and(|h| h.len() > 1 && h[0]["rows"] == 700),
        "{}",
        stats["chunk_size_history"]
    );
    Ok(())
}

#[cfg(target_os = "linux")]
#[test]
fn workers_is_the_number_of_worker_threads() -> TestResult {
    let dir = tempfile::tempdir()?;
    // 30 slow chunks: the threads are counted once the first is written.
    let input = ids_input(dir.path(), "csv", 30 * slow_chunk_rows())?;
    for workers in ["1", "3"] {
        let out = dir.path().join(format!("out-{workers}"));
        let mut child = spawn(&[
            "run",
            "--quiet",
            "--fixed-chunks",
            "--chunk-size",
            SLOW_CHUNK,
            "--rows-per-part",
            SLOW_CHUNK,
            "--workers",
            workers,
            "--input",
            path_str(&input),
            "--output",
            path_str(&out),
            "--sql-text",
            SLOW_SQL,
        ])?;
        let pid = child.id();
        // The workers are started together, before the first chunk is read: once a part
        // is listed, every one of them exists.
        let caught = wait_until(std::time::Duration::from_secs(120), || {
            listed_parts(&out) >= 1
        });
        let seen = thread_names(pid);
        let still_running = child.try_wait()?.is_none();
        child.kill()?;
        child.wait()?;
        assert!(caught && still_running, "the run was not caught running");
        let count = seen
            .iter()
            .filter(|n| n.starts_with("sluice-worker"))
            .count();
        assert_eq!(count.to_string(), workers, "{seen:?}");
    }
    Ok(())
}

#[test]
fn unordered_runs_are_recorded_as_such_and_cannot_be_resumed() -> TestResult {
    let dir = tempfile::tempdir()?;
    let input = ids_input(dir.path(), "csv", 5_000)?;
    let out = dir.path().join("out");
    let output = sluice()
        .args(["run", "--quiet", "--unordered", "--workers", "2"])
        .args(["--chunk-size", "500", "--rows-per-part", "1000"])
        .args(["--input", path_str(&input), "--output", path_str(&out)])
        .output()?;
    assert_eq!(output.status.code(), Some(0), "{}", stderr_of(&output));
    let mut ids = int_column(&read_output(&out)?, "id")?;
    ids.sort_unstable();
    assert_eq!(ids, (0..5_000).collect::<Vec<_>>());
    let record: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("_sluice_run.json"))?)?;
    assert_eq!(record["ordered"], false, "{record}");

    // Made to look interrupted, it is refused: its parts are no prefix of the input.
    let text =
        std::fs::read_to_string(out.join("_manifest.json"))?.replace("\"complete\"", "\"stopped\"");
    std::fs::write(out.join("_manifest.json"), text)?;
    let output = sluice()
        .args(["run", "--resume"])
        .args(["--input", path_str(&input), "--output", path_str(&out)])
        .output()?;
    let err = one_line_error(&output, 2);
    assert!(err.contains("--unordered"), "{err}");
    Ok(())
}
