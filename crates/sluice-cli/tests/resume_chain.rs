//! A chain of runs into one output folder: a run that fails keeps what it committed, a
//! resume that fails keeps what the earlier runs committed, and a resume with dead letters
//! finishes the chain so that output plus dead letters hold every input row exactly once.

mod common;

use common::*;

const ROWS: i64 = 5_000;
/// Fails on the chunk holding rows 3500..3999 (a value that cannot be cast).
const SQL: &str = "SELECT id, CAST(CASE WHEN id >= 3500 AND id < 4000 THEN 'bad' ELSE CAST(id AS VARCHAR) END AS BIGINT) AS v FROM chunk";

fn run(input: &std::path::Path, out: &std::path::Path, extra: &[&str]) -> std::process::Output {
    sluice()
        .args([
            "run",
            "--quiet",
            "--fixed-chunks",
            "--chunk-size",
            "500",
            "--rows-per-part",
            "1000",
            "--workers",
            "2",
        ])
        .args(extra)
        .args(["--input", path_str(input), "--output", path_str(out)])
        .args(["--sql-text", SQL])
        .output()
        .expect("the binary runs")
}

fn ranges(m: &serde_json::Value) -> Vec<(u64, u64)> {
    m["parts"]
        .as_array()
        .map(|parts| {
            parts
                .iter()
                .map(|p| {
                    (
                        p["input_row_start"].as_u64().unwrap_or(u64::MAX),
                        p["input_row_end"].as_u64().unwrap_or(u64::MAX),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn a_failed_resume_keeps_the_earlier_parts_and_dead_letters_finish_the_chain() -> TestResult {
    let dir = tempfile::tempdir()?;
    let input = dir.path().join("ids.csv");
    write_ids(&input, ROWS)?;
    let out = dir.path().join("out");

    // The first run fails at rows 3500..4000: the three parts before it stay, listed.
    let output = run(&input, &out, &[]);
    let err = one_line_error(&output, 1);
    assert!(err.contains("input rows 3500..4000"), "{err}");
    let m = manifest(&out)?;
    assert_eq!(m["status"], "failed");
    assert_eq!(ranges(&m), vec![(0, 1000), (1000, 2000), (2000, 3000)]);
    assert_only_listed_parts(&out, &m)?;

    // A resume fails on the same rows, and keeps every part committed before it.
    let output = run(&input, &out, &["--resume"]);
    let err = one_line_error(&output, 1);
    assert!(
        err.contains("input rows 3500..4000"),
        "a resumed run names rows of the whole input: {err}"
    );
    let m = manifest(&out)?;
    assert_eq!(m["status"], "failed");
    assert_eq!(ranges(&m), vec![(0, 1000), (1000, 2000), (2000, 3000)]);
    assert_only_listed_parts(&out, &m)?;
    assert_eq!(
        int_column(&read_output(&out)?, "id")?,
        (0..3000).collect::<Vec<_>>()
    );

    // A run killed after writing dead letters its manifest never listed leaves them past
    // the resume point; cut into other chunks, the resume must not keep them beside its own.
    let letters = dir.path().join("letters");
    std::fs::create_dir_all(&letters)?;
    let stale = letters.join("rows-000000003400-000000003900.arrow");
    std::fs::copy(out.join("part-00000.parquet"), &stale)?;

    // Resumed with dead letters, the chain completes: output + dead letters = every row once.
    let policy = format!("dead-letter={}", letters.display());
    let output = run(&input, &out, &["--resume", "--on-error", &policy]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr_of(&output));
    let m = manifest(&out)?;
    assert_eq!(m["status"], "complete");
    let mut ids = int_column(&read_output(&out)?, "id")?;
    let mut dead = Vec::new();
    for entry in std::fs::read_dir(&letters)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "arrow") {
            dead.extend(int_column(&read_file(&path)?, "id")?);
        }
    }
    assert!(
        !stale.exists(),
        "a dead letter past the resume point was kept"
    );
    assert_eq!(dead, (3500..4000).collect::<Vec<_>>());
    // The manifest lists the dead letter with the input rows it holds.
    let listed = m["dead_letters"].as_array().ok_or("dead_letters")?;
    assert_eq!(listed.len(), 1, "{m}");
    assert_eq!(listed[0]["kind"], "chunk");
    assert_eq!(listed[0]["input_rows"]["start"], 3500);
    assert_eq!(listed[0]["input_rows"]["end"], 4000);
    ids.extend(dead);
    ids.sort_unstable();
    assert_eq!(ids, (0..ROWS).collect::<Vec<_>>());
    Ok(())
}
