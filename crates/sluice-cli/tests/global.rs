//! `sluice run --windows global` through the real binary: the whole-input z-score equals an
//! exact reference to 1e-9 and has the same bits for every chunk size, worker count, order
//! and input format; a run killed in pass 2 resumes pass 2 with the saved values; an input
//! changed during the run fails it; stdin and windows it cannot compute are refused.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{ArrayRef, Float64Array, Int64Array, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use common::*;

const SCALE: f64 = 1024.0;
/// The rows pass 1 keeps for pass 2 when the input is text.
const COPY_FILE: &str = ".sluice-pass1-rows.arrow";
const ZSCORE_SQL: &str = "SELECT id, \
    (x - AVG(x) OVER ()) / STDDEV_SAMP(x) OVER () AS zx, \
    (big - AVG(big) OVER ()) / STDDEV(big) OVER () AS zbig, \
    length(repeat(name, 10)) AS l \
    FROM chunk";

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("x", DataType::Float64, false),
        Field::new("big", DataType::Float64, false),
        Field::new("name", DataType::Utf8, false),
    ]))
}

/// x = kx / 1024 and big = 1e9 + kb / 1024 for pseudo-random integers: exact in binary and
/// in the CSV text, with integer sums for the reference.
fn integers(rows: usize) -> (Vec<i64>, Vec<i64>) {
    let mut state: u64 = 0x2545_F491_4F6C_DD1D;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    (0..rows)
        .map(|_| {
            let kx = (next() % (1 << 36)) as i64 - (1 << 35);
            let kb = (next() % (1 << 26)) as i64;
            (kx, kb)
        })
        .unzip()
}

fn write_input(path: &Path, rows: usize) -> TestResult {
    let (kx, kb) = integers(rows);
    let mut batches = Vec::new();
    for start in (0..rows).step_by(10_000) {
        let end = (start + 10_000).min(rows);
        let columns: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from_iter_values(start as i64..end as i64)),
            Arc::new(Float64Array::from_iter_values(
                kx[start..end].iter().map(|&k| k as f64 / SCALE),
            )),
            Arc::new(Float64Array::from_iter_values(
                kb[start..end].iter().map(|&k| 1e9 + k as f64 / SCALE),
            )),
            Arc::new(StringArray::from_iter_values(
                (start..end).map(|i| format!("n{i}")),
            )),
        ];
        batches.push(RecordBatch::try_new(schema(), columns)?);
    }
    write_batches(path, &schema(), &batches)
}

/// The z-scores from exact integer sums: mean and sample variance each rounded once.
fn reference(ks: &[i64], offset: i128) -> Vec<f64> {
    let n = ks.len() as i128;
    let (mut s1, mut s2) = (0i128, 0i128);
    for &k in ks {
        let k = offset + k as i128;
        s1 += k;
        s2 += k * k;
    }
    let mean = s1 as f64 / SCALE / n as f64;
    let std = ((n * s2 - s1 * s1) as f64 / (n * (n - 1)) as f64).sqrt() / SCALE;
    ks.iter()
        .map(|&k| ((offset + k as i128) as f64 / SCALE - mean) / std)
        .collect()
}

fn run_args<'a>(input: &'a Path, out: &'a Path, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "run",
        "--quiet",
        "--windows",
        "global",
        "--input",
        path_str(input),
        "--output",
        path_str(out),
        "--sql-text",
        ZSCORE_SQL,
    ];
    args.extend_from_slice(extra);
    args
}

/// (id, zx, zbig) of an output folder, by id.
fn read_scores(out: &Path) -> TestResult<Vec<(i64, f64, f64)>> {
    let batches = read_output(out)?;
    let ids = int_column(&batches, "id")?;
    let zx = float_column(&batches, "zx")?;
    let zbig = float_column(&batches, "zbig")?;
    let mut rows: Vec<(i64, f64, f64)> = ids
        .into_iter()
        .zip(zx)
        .zip(zbig)
        .map(|((i, a), b)| (i, a, b))
        .collect();
    rows.sort_by_key(|r| r.0);
    Ok(rows)
}

fn close(got: f64, want: f64) -> bool {
    (got - want).abs() <= 1e-9 * want.abs() + 1e-12
}

#[test]
fn the_whole_input_zscore_is_exact_and_the_same_for_every_chunking_and_order() -> TestResult {
    const ROWS: usize = 2_000;
    let dir = tempfile::tempdir()?;
    let (kx, kb) = integers(ROWS);
    let want_x = reference(&kx, 0);
    let want_b = reference(&kb, 1_024_000_000_000);
    let mut first: Option<Vec<(i64, u64, u64)>> = None;
    for format in ["csv", "parquet"] {
        let input = dir.path().join(format!("data.{format}"));
        write_input(&input, ROWS)?;
        for chunk in ["1", "7", "100000"] {
            for workers in ["1", "2"] {
                for unordered in [false, true] {
                    let what = format!(
                        "{format}, chunks of {chunk}, {workers} workers, unordered {unordered}"
                    );
                    let out = dir
                        .path()
                        .join(format!("out-{format}-{chunk}-{workers}-{unordered}"));
                    let mut extra = vec![
                        "--fixed-chunks",
                        "--chunk-size",
                        chunk,
                        "--workers",
                        workers,
                    ];
                    if unordered {
                        extra.push("--unordered");
                    }
                    let output = sluice().args(run_args(&input, &out, &extra)).output()?;
                    assert_eq!(
                        output.status.code(),
                        Some(0),
                        "{what}: {}",
                        stderr_of(&output)
                    );
                    let rows = read_scores(&out)?;
                    assert_eq!(rows.len(), ROWS, "{what}");
                    for (i, &(id, zx, zbig)) in rows.iter().enumerate() {
                        assert_eq!(id, i as i64, "{what}: every row once");
                        assert!(
                            close(zx, want_x[i]),
                            "{what}: zx[{i}] {zx} vs {}",
                            want_x[i]
                        );
                        assert!(
                            close(zbig, want_b[i]),
                            "{what}: zbig[{i}] {zbig} vs {}",
                            want_b[i]
                        );
                    }
                    let bits: Vec<(i64, u64, u64)> = rows
                        .iter()
                        .map(|&(i, a, b)| (i, a.to_bits(), b.to_bits()))
                        .collect();
                    match &first {
                        None => first = Some(bits),
                        Some(first) => assert!(first == &bits, "{what}: not the same bits"),
                    }
                }
            }
        }
    }
    Ok(())
}

/// Small fixed chunks, small parts, one worker: slow enough to be caught in pass 2.
fn slow_extra() -> Vec<&'static str> {
    vec![
        "--fixed-chunks",
        "--chunk-size",
        "200",
        "--rows-per-part",
        "4000",
        "--workers",
        "1",
    ]
}

#[test]
fn a_run_killed_in_pass_2_resumes_pass_2_with_the_saved_values() -> TestResult {
    // Parquet: pass 2 reads the input again; CSV: it reads the rows pass 1 kept, a copy
    // the kill leaves behind and the resumed run (which reads the input) removes.
    for format in ["parquet", "csv"] {
        killed_in_pass_2_and_resumed(format)?;
    }
    Ok(())
}

fn killed_in_pass_2_and_resumed(format: &str) -> TestResult {
    const ROWS: usize = 300_000;
    let dir = tempfile::tempdir()?;
    let input = dir.path().join(format!("data.{format}"));
    write_input(&input, ROWS)?;

    // The whole run, uninterrupted, for comparison.
    let whole = dir.path().join("whole");
    let output = sluice()
        .args(run_args(&input, &whole, &["--rows-per-part", "50000"]))
        .output()?;
    assert_eq!(output.status.code(), Some(0), "{}", stderr_of(&output));

    let out = dir.path().join("out");
    let extra = slow_extra();
    let mut child = spawn(&run_args(&input, &out, &extra))?;
    // Parts are written only in pass 2.
    let caught = wait_until(Duration::from_secs(60), || listed_parts(&out) >= 1);
    child.kill()?; // SIGKILL
    child.wait()?;
    assert!(caught, "no part was listed in time");
    let m = manifest(&out)?;
    assert_eq!(
        m["status"], "running",
        "the run finished before it was killed; make the input bigger"
    );
    assert_eq!(
        out.join(COPY_FILE).is_file(),
        format == "csv",
        "{format}: the rows pass 1 kept are in the folder until pass 2 ends"
    );
    let record: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("_sluice_run.json"))?)?;
    assert!(
        record["global"]["values"]
            .as_str()
            .is_some_and(|v| !v.is_empty()),
        "pass 1's values are in the run record: {record}"
    );

    let stats = dir.path().join("stats.json");
    let mut args = run_args(&input, &out, &extra);
    args[1] = "--resume";
    args.extend(["--stats-json", path_str(&stats)]);
    let output = sluice().args(&args).output()?;
    assert_eq!(output.status.code(), Some(0), "{}", stderr_of(&output));
    assert!(
        stderr_of(&output).contains("resuming pass 2/2"),
        "{}",
        stderr_of(&output)
    );
    let stats: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&stats)?)?;
    assert_eq!(
        stats["passes"][0]["reused"], true,
        "pass 1 was not run again: {stats}"
    );
    assert_eq!(stats["passes"][1]["pass"], 2);
    assert!(
        stats["passes"][1]["rows"]
            .as_u64()
            .is_some_and(|r| r < ROWS as u64),
        "pass 2 skipped the rows of the kept parts: {stats}"
    );
    assert_eq!(manifest(&out)?["status"], "complete");
    let got = read_scores(&out)?;
    let want = read_scores(&whole)?;
    assert_eq!(got.len(), ROWS);
    let bits = |rows: &[(i64, f64, f64)]| -> Vec<(i64, u64, u64)> {
        rows.iter()
            .map(|&(i, a, b)| (i, a.to_bits(), b.to_bits()))
            .collect()
    };
    assert!(
        bits(&got) == bits(&want),
        "{format}: the resumed output differs from a whole run's"
    );
    assert!(
        !out.join(COPY_FILE).exists(),
        "{format}: the stale copy is removed"
    );
    assert!(
        !whole.join(COPY_FILE).exists(),
        "{format}: the copy is removed"
    );
    Ok(())
}

/// Each pass's bytes read, from a run's `--stats-json`.
fn passes_bytes(stats: &Path) -> TestResult<[u64; 2]> {
    let stats: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(stats)?)?;
    let bytes = |i: usize| -> TestResult<u64> {
        assert_eq!(stats["passes"][i]["pass"], i + 1, "{stats}");
        Ok(stats["passes"][i]["input_bytes_read"]
            .as_u64()
            .ok_or("no input_bytes_read")?)
    };
    Ok([bytes(0)?, bytes(1)?])
}

#[test]
fn a_csv_input_is_parsed_once_and_its_copy_removed() -> TestResult {
    const ROWS: usize = 30_000;
    let dir = tempfile::tempdir()?;
    let (kx, _) = integers(ROWS);
    let want_x = reference(&kx, 0);
    let mut outputs = Vec::new();
    let cases = [
        ("csv", "auto"),
        ("csv", "off"),
        ("parquet", "auto"),
        ("parquet", "off"),
    ];
    for (format, copy) in cases {
        let what = format!("{format}, --pass1-copy {copy}");
        let input = dir.path().join(format!("data.{format}"));
        if !input.exists() {
            write_input(&input, ROWS)?;
        }
        let input_bytes = std::fs::metadata(&input)?.len();
        let out = dir.path().join(format!("out-{format}-{copy}"));
        let stats = dir.path().join(format!("stats-{format}-{copy}.json"));
        let extra = [
            "--pass1-copy",
            copy,
            "--chunk-size",
            "1000",
            "--stats-json",
            path_str(&stats),
        ];
        let output = sluice().args(run_args(&input, &out, &extra)).output()?;
        assert_eq!(
            output.status.code(),
            Some(0),
            "{what}: {}",
            stderr_of(&output)
        );
        let [pass_1, pass_2] = passes_bytes(&stats)?;
        if format == "csv" {
            // Pass 1 reads the text; pass 2 reads it again or the copy.
            assert_eq!(pass_1, input_bytes, "{what}");
            if copy == "off" {
                assert_eq!(pass_2, input_bytes, "{what}");
            }
        } else {
            // Pass 1 reads the column chunks of x and big only; pass 2 every column's.
            assert!(
                0 < pass_1 && pass_1 * 3 < pass_2 * 2 && pass_2 <= input_bytes,
                "{what}: {pass_1} and {pass_2} bytes of {input_bytes}"
            );
        }
        assert!(!out.join(COPY_FILE).exists(), "{what}: the copy is removed");
        let rows = read_scores(&out)?;
        assert_eq!(rows.len(), ROWS, "{what}");
        for (i, &(id, zx, _)) in rows.iter().enumerate() {
            assert_eq!(id, i as i64, "{what}: every row once");
            assert!(
                close(zx, want_x[i]),
                "{what}: zx[{i}] {zx} vs {}",
                want_x[i]
            );
        }
        let ordered = int_column(&read_output(&out)?, "id")?;
        assert!(
            ordered.iter().enumerate().all(|(i, &id)| id == i as i64),
            "{what}: in input order"
        );
        outputs.push(
            rows.iter()
                .map(|&(i, a, b)| (i, a.to_bits(), b.to_bits()))
                .collect::<Vec<_>>(),
        );
    }
    assert!(
        outputs.iter().all(|o| *o == outputs[0]),
        "the same bits every way"
    );
    Ok(())
}

#[test]
fn an_input_changed_during_the_run_fails_it() -> TestResult {
    const ROWS: usize = 200_000;
    let dir = tempfile::tempdir()?;
    let input = dir.path().join("data.csv");
    write_input(&input, ROWS)?;
    let out = dir.path().join("out");
    let mut args = run_args(&input, &out, &slow_extra());
    args[1] = "--verbose";
    let mut child = spawn(&args)?;
    let stderr = child.stderr.take().ok_or("no stderr")?;
    let mut lines = BufReader::new(stderr).lines();
    let mut seen = Vec::new();
    let mut in_pass_2 = false;
    for line in lines.by_ref() {
        let line = line?;
        in_pass_2 = line.contains("pass 2/2");
        seen.push(line);
        if in_pass_2 {
            break;
        }
    }
    assert!(in_pass_2, "pass 2 never started: {seen:?}");
    // Pass 2 has started: append a row to the input it is reading.
    let mut file = std::fs::OpenOptions::new().append(true).open(&input)?;
    writeln!(file, "{ROWS},1.0,1000000000.0,late")?;
    drop(file);
    let rest: Vec<String> = lines.collect::<Result<_, _>>()?;
    let status = child.wait()?;
    let text = rest.join("\n");
    assert_eq!(status.code(), Some(1), "{text}");
    assert!(text.contains("changed during the run"), "{text}");
    let m = manifest(&out)?;
    assert_eq!(m["status"], "failed");
    assert_only_listed_parts(&out, &m)?;
    assert!(
        !out.join(COPY_FILE).exists(),
        "a failed run removes its copy"
    );
    Ok(())
}

#[test]
fn a_run_failed_in_pass_1_leaves_no_output_folder() -> TestResult {
    let dir = tempfile::tempdir()?;
    let input = dir.path().join("data.csv");
    write_input(&input, 20_000)?;
    // A record with a field too many, after the first chunks have gone to the copy.
    let mut file = std::fs::OpenOptions::new().append(true).open(&input)?;
    writeln!(file, "20000,1.0,1000000000.0,late,extra")?;
    writeln!(file, "20001,1.0,1000000000.0,late")?;
    drop(file);
    // With the copy or without it, the bad record fails the run in pass 1.
    for copy in ["auto", "off"] {
        let out = dir.path().join(format!("out-{copy}"));
        let extra = ["--chunk-size", "1000", "--pass1-copy", copy];
        let output = sluice().args(run_args(&input, &out, &extra)).output()?;
        assert_eq!(
            output.status.code(),
            Some(1),
            "{copy}: {}",
            stderr_of(&output)
        );
        assert!(
            stderr_of(&output).contains("pass 1"),
            "{copy}: {}",
            stderr_of(&output)
        );
        assert!(
            !out.exists(),
            "{copy}: pass 1 left the output folder (and its copy) behind"
        );
    }
    Ok(())
}

#[test]
fn stdin_and_windows_it_cannot_compute_are_refused() -> TestResult {
    let dir = tempfile::tempdir()?;
    let out = dir.path().join("out");
    let output = sluice()
        .args([
            "run",
            "--windows",
            "global",
            "--format",
            "csv",
            "--input",
            "/dev/stdin",
            "--output",
            path_str(&out),
            "--sql-text",
            "SELECT x - AVG(x) OVER () AS d FROM chunk",
        ])
        .write_stdin("x\n1\n2\n")
        .output()?;
    let err = one_line_error(&output, 2);
    assert!(err.contains("not a regular file"), "{err}");
    assert!(!out.exists(), "nothing written");

    let input = dir.path().join("data.parquet");
    write_input(&input, 100)?;
    let output = sluice()
        .args([
            "run",
            "--windows",
            "global",
            "--input",
            path_str(&input),
            "--output",
            path_str(&out),
            "--sql-text",
            "SELECT x - AVG(x) OVER (PARTITION BY name) AS d FROM chunk",
        ])
        .output()?;
    let err = one_line_error(&output, 2);
    assert!(
        err.contains("--windows global") && err.contains("PARTITION BY"),
        "{err}"
    );
    assert!(!out.exists(), "nothing written");

    // A chunk-mode run cannot be resumed in global mode.
    let output = sluice()
        .args([
            "run",
            "--quiet",
            "--input",
            path_str(&input),
            "--output",
            path_str(&out),
        ])
        .args([
            "--sql-text",
            "SELECT id, x - AVG(x) OVER () AS d FROM chunk",
        ])
        .output()?;
    assert_eq!(output.status.code(), Some(0), "{}", stderr_of(&output));
    let text =
        std::fs::read_to_string(out.join("_manifest.json"))?.replace("\"complete\"", "\"stopped\"");
    std::fs::write(out.join("_manifest.json"), text)?;
    let output = sluice()
        .args([
            "run",
            "--resume",
            "--windows",
            "global",
            "--input",
            path_str(&input),
        ])
        .args(["--output", path_str(&out)])
        .args([
            "--sql-text",
            "SELECT id, x - AVG(x) OVER () AS d FROM chunk",
        ])
        .output()?;
    let err = one_line_error(&output, 2);
    assert!(err.contains("--windows chunk"), "{err}");
    Ok(())
}
