//! Malformed records through the real binary: `--on-error skip` and
//! `--on-error dead-letter=DIR` get through a CSV with bad lines (exit 0, every good row
//! written in order, the rejects counted in the summary and the stats, and under
//! dead-letter written to DIR); the default `fail` stops naming the file and the line.

mod common;

use common::*;
use serde_json::Value;

/// 12 000 good rows `i,name i`; after the inference sample, three malformed lines.
/// Returns the file and the (line, raw text) of each bad line.
fn input_with_bad_lines(
    dir: &std::path::Path,
) -> TestResult<(std::path::PathBuf, Vec<(u64, String)>)> {
    let path = dir.join("in.csv");
    let mut text = String::from("id,name\n");
    let mut bad = Vec::new();
    let mut line = 2;
    for i in 0..12_000 {
        let extra = match i {
            11_000 => Some("x11000,a number that is not"),
            11_500 => Some("11500,one,field too many"),
            11_999 => Some("11999"),
            _ => None,
        };
        if let Some(record) = extra {
            text.push_str(record);
            text.push('\n');
            bad.push((line, record.to_string()));
            line += 1;
        }
        text.push_str(&format!("{i},name {i}\n"));
        line += 1;
    }
    std::fs::write(&path, text)?;
    Ok((path, bad))
}

fn run(
    input: &std::path::Path,
    out: &std::path::Path,
    policy: Option<&str>,
    stats: &std::path::Path,
) -> TestResult<std::process::Output> {
    let mut cmd = sluice();
    cmd.args(["run", "--chunk-size", "1000", "--workers", "2"])
        .args(["--input", path_str(input), "--output", path_str(out)])
        .args(["--stats-json", path_str(stats)]);
    if let Some(policy) = policy {
        cmd.args(["--on-error", policy]);
    }
    Ok(cmd.output()?)
}

#[test]
fn skip_gets_through_bad_lines_and_counts_them() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (input, bad) = input_with_bad_lines(dir.path())?;
    let out = dir.path().join("out");
    let stats_path = dir.path().join("stats.json");
    let output = run(&input, &out, Some("skip"), &stats_path)?;
    assert_eq!(output.status.code(), Some(0), "{}", stderr_of(&output));
    assert!(
        stdout_of(&output).contains("Rejected rows (malformed input): 3"),
        "{}",
        stdout_of(&output)
    );
    assert_eq!(
        int_column(&read_output(&out)?, "id")?,
        (0..12_000).collect::<Vec<_>>()
    );
    let stats: Value = serde_json::from_str(&std::fs::read_to_string(&stats_path)?)?;
    assert_eq!(stats["rejected_rows"], bad.len() as u64);
    assert_eq!(stats["total_rows_processed"], 12_000);
    assert_eq!(stats["failed_rows"], 0);
    Ok(())
}

#[test]
fn dead_letter_writes_each_bad_line_to_the_folder() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (input, bad) = input_with_bad_lines(dir.path())?;
    let out = dir.path().join("out");
    let letters = dir.path().join("letters");
    let policy = format!("dead-letter={}", letters.display());
    let output = run(&input, &out, Some(&policy), &dir.path().join("stats.json"))?;
    assert_eq!(output.status.code(), Some(0), "{}", stderr_of(&output));
    assert!(
        stdout_of(&output).contains("Rejected rows (malformed input): 3"),
        "{}",
        stdout_of(&output)
    );
    assert_eq!(int_column(&read_output(&out)?, "id")?.len(), 12_000);
    let mut names: Vec<String> = std::fs::read_dir(&letters)?
        .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<Result<_, _>>()?;
    names.sort();
    let mut got = Vec::new();
    for name in &names {
        assert!(
            name.starts_with("rejects-") && name.ends_with(".ndjson"),
            "only rejects files: {names:?}"
        );
        for line in std::fs::read_to_string(letters.join(name))?.lines() {
            let v: Value = serde_json::from_str(line)?;
            assert!(
                v["file"].as_str().is_some_and(|f| f.ends_with("in.csv")),
                "{v}"
            );
            assert!(v["cause"].as_str().is_some_and(|c| !c.is_empty()), "{v}");
            got.push((
                v["line"].as_u64().ok_or("line")?,
                v["raw"].as_str().ok_or("raw")?.to_string(),
                v["position"].as_u64().ok_or("position")?,
            ));
        }
    }
    let expected: Vec<_> = bad
        .iter()
        .zip([11_000u64, 11_500, 11_999])
        .map(|((line, raw), position)| (*line, raw.clone(), position))
        .collect();
    assert_eq!(got, expected);
    Ok(())
}

#[test]
fn fail_names_the_file_and_the_line() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (input, bad) = input_with_bad_lines(dir.path())?;
    let out = dir.path().join("out");
    let output = run(&input, &out, None, &dir.path().join("stats.json"))?;
    let err = one_line_error(&output, 1);
    assert!(err.contains(&format!("in.csv: line {}", bad[0].0)), "{err}");
    Ok(())
}
