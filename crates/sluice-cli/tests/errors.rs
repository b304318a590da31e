//! Bad usage and bad data through the real binary: each gives one clear `error:` line, the
//! documented exit code (2 bad usage, 1 the data failed), and no output that looks complete.

mod common;

use std::io::Write;

use common::*;

fn assert_usage_error(output: &std::process::Output, needles: &[&str]) {
    let err = one_line_error(output, 2);
    for needle in needles {
        assert!(err.contains(needle), "{needle:?} not in {err}");
    }
}

#[test]
fn bad_sql_fails_before_any_output_exists() -> TestResult {
    let dir = tempfile::tempdir()?;
    let input = dir.path().join("ids.csv");
    write_ids(&input, 100)?;
    let out = dir.path().join("out");
    let run = |sql: &str| {
        sluice()
            .args([
                "run",
                "--input",
                path_str(&input),
                "--output",
                path_str(&out),
                "--sql-text",
                sql,
            ])
            .output()
    };

    assert_usage_error(
        &run("SELEC id FROM chunk")?,
        &["bad SQL", "SQL does not parse", "SELEC"],
    );
    assert!(!out.exists(), "bad SQL created the output folder");

    assert_usage_error(
        &run("SELECT id, nope * 2 AS y FROM chunk")?,
        &["column `nope`", "chunk"],
    );
    assert!(!out.exists(), "a missing column created the output folder");

    let sql_file = dir.path().join("missing.sql");
    let output = sluice()
        .args([
            "run",
            "--input",
            path_str(&input),
            "--output",
            path_str(&out),
            "--sql",
            path_str(&sql_file),
        ])
        .output()?;
    assert_usage_error(&output, &["cannot read the SQL file", "missing.sql"]);
    assert!(!out.exists());
    Ok(())
}

#[test]
fn a_missing_input_is_bad_usage() -> TestResult {
    let dir = tempfile::tempdir()?;
    let out = dir.path().join("out");
    let missing = dir.path().join("nowhere.csv");
    let output = sluice()
        .args([
            "run",
            "--input",
            path_str(&missing),
            "--output",
            path_str(&out),
        ])
        .output()?;
    assert_usage_error(&output, &["cannot open", "nowhere.csv"]);
    assert!(!out.exists());

    let glob = format!("{}/*.parquet", dir.path().display());
    let output = sluice()
        .args(["run", "--input", &glob, "--output", path_str(&out)])
        .output()?;
    assert_usage_error(&output, &["no input files match", "*.parquet"]);
    assert!(!out.exists());

    // clap's own errors are bad usage too.
    let output = sluice()
        .args(["run", "--output", path_str(&out)])
        .output()?;
    assert_eq!(output.status.code(), Some(2));
    let output = sluice()
        .args([
            "run",
            "--input",
            "x.csv",
            "--output",
            "o",
            "--resume",
            "--unordered",
        ])
        .output()?;
    assert_usage_error(&output, &["--resume needs ordered output"]);
    Ok(())
}

/// `rows` good rows of id,x,name, with row `bad` replaced by `bad_text`.
fn write_csv_with_bad_line(
    path: &std::path::Path,
    rows: usize,
    bad: usize,
    bad_text: &str,
) -> TestResult {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    writeln!(f, "id,x,name")?;
    for i in 0..rows {
        if i == bad {
            writeln!(f, "{bad_text}")?;
        } else {
            writeln!(f, "{i},{},n{i}", i as f64 / 4.0)?;
        }
    }
    Ok(())
}

#[test]
fn malformed_csv_fails_with_the_file_and_line_and_leaves_no_complete_looking_part() -> TestResult {
    let dir = tempfile::tempdir()?;

    // Inside the rows the schema is inferred from: the run fails before any output exists.
    let early = dir.path().join("early.csv");
    write_csv_with_bad_line(&early, 30_000, 500, "500,125.0,n500,surplus")?;
    let out = dir.path().join("out-early");
    let output = sluice()
        .args([
            "run",
            "--input",
            path_str(&early),
            "--output",
            path_str(&out),
        ])
        .output()?;
    let err = one_line_error(&output, 1);
    assert!(err.contains("early.csv") && err.contains("line"), "{err}");
    assert!(
        !out.exists(),
        "a run that could not start left an output folder"
    );

    // Past them: the run fails midway. The bad line is in the first part of the file read,
    // so no chunk was committed: no part; the manifest says the run failed, and why; no
    // temporary file.
    let late = dir.path().join("late.csv");
    write_csv_with_bad_line(&late, 30_000, 25_000, "25000,not-a-number,n25000")?;
    let out = dir.path().join("out-late");
    let output = sluice()
        .args([
            "run",
            "--fixed-chunks",
            "--chunk-size",
            "1000",
            "--rows-per-part",
            "10000",
        ])
        .args(["--input", path_str(&late), "--output", path_str(&out)])
        .output()?;
    let err = one_line_error(&output, 1);
    assert!(
        err.contains("late.csv") && err.contains("not-a-number"),
        "{err}"
    );
    let m = manifest(&out)?;
    assert_eq!(m["status"], "failed");
    assert!(
        m["error"]
            .as_str()
            .is_some_and(|e| e.contains("not-a-number")),
        "{m}"
    );
    assert_eq!(m["parts"].as_array().map(Vec::len), Some(0), "{m}");
    assert_eq!(m["total_rows"], 0);
    assert_only_listed_parts(&out, &m)?; // with none listed: no part file at all

    // --verbose adds the chain of causes.
    let output = sluice()
        .args([
            "--verbose",
            "run",
            "--overwrite",
            "--input",
            path_str(&late),
            "--output",
            path_str(&out),
        ])
        .output()?;
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr_of(&output).contains("caused by:"),
        "{}",
        stderr_of(&output)
    );
    Ok(())
}
