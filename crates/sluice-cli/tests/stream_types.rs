//! `sluice stream` with messages whose types change mid-way, from real `redis-server` and
//! `nats-server -js`: every message is either in the output with its exact values and
//! fields, or in the dead letters with the reason; a restart goes on with the columns the
//! folder kept; a declared schema is held to.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{json, Value};
use sluice_stream::testing::{redis_connection, redis_pending, redis_publish, NatsClient, Server};

use common::*;

/// The published messages: ints, then floats in the same field, then a late field, then
/// values that cannot be carried, then a late list column.
fn changing(i: u64) -> Value {
    let n = i as i64;
    match i {
        0..=199 => {
            json!({"id": n, "value": 2000 + n, "name": format!("n{i}"), "flag": i.is_multiple_of(2)})
        }
        200..=399 => json!({"id": n, "value": 2000.5 + n as f64, "name": format!("n{i}")}),
        400..=599 => json!({"id": n, "value": n, "late": format!("L{i}")}),
        600..=699 => match i % 4 {
            0 => json!({"id": n, "value": "7"}),
            1 => json!({"id": n, "name": true}),
            2 => json!({"id": n, "flag": "yes"}),
            _ => json!({"id": n, "value": {"a": 1}}),
        },
        // 2^53 + 1 cannot be held exactly by the (now Float64) column.
        700..=749 => json!({"id": n, "value": 9_007_199_254_740_993u64}),
        // An empty list first: a column whose items take the first type that comes.
        750 => json!({"id": n, "value": 1.25, "tags": []}),
        _ => json!({"id": n, "value": 1.25, "tags": ["a", format!("t{i}")]}),
    }
}
const N: u64 = 800;

/// The text published for message `i`: its JSON, except one with a key twice (set aside:
/// which value would be meant?).
fn published_text(i: u64) -> String {
    match i {
        690 => r#"{"id": 690, "value": 1, "value": 2}"#.to_string(),
        _ => changing(i).to_string(),
    }
}

fn refused(i: u64) -> bool {
    (600..750).contains(&i)
}

/// Every output row as a JSON object (nulls left out), by `id`, from every listed part
/// (the parts may have different columns).
fn output_rows(out: &Path) -> TestResult<BTreeMap<i64, Value>> {
    let mut rows = BTreeMap::new();
    for part in manifest_parts(out)? {
        let batches = read_file(&part)?;
        let mut writer = arrow::json::ArrayWriter::new(Vec::new());
        for b in &batches {
            writer.write(b)?;
        }
        writer.finish()?;
        let bytes = writer.into_inner();
        if bytes.is_empty() {
            continue;
        }
        let Value::Array(list) = serde_json::from_slice(&bytes)? else {
            return Err("not a JSON array".into());
        };
        for row in list {
            let id = row["id"].as_i64().ok_or("a row without an integer id")?;
            assert!(
                rows.insert(id, row).is_none(),
                "id {id} twice in the output"
            );
        }
    }
    Ok(rows)
}

/// The same value: integers as integers; otherwise numbers by their float's bits (an
/// integer in a widened column reads back as a float, exactly); everything else as is.
fn same(published: &Value, stored: &Value) -> bool {
    match (published, stored) {
        (Value::Number(a), Value::Number(b)) => match (a.as_i64(), b.as_i64()) {
            (Some(x), Some(y)) => x == y,
            _ => match (a.as_f64(), b.as_f64()) {
                (Some(x), Some(y)) => x.to_bits() == y.to_bits(),
                _ => false,
            },
        },
        (Value::Array(a), Value::Array(b)) => {
            a.len() == b.len() && a.iter().zip(b).all(|(x, y)| same(x, y))
        }
        (Value::Object(a), Value::Object(b)) => {
            a.len() == b.len() && a.iter().all(|(k, v)| b.get(k).is_some_and(|w| same(v, w)))
        }
        (a, b) => a == b,
    }
}

/// Checks the output folder against what was published (`published(i)` for id `i`).
fn assert_exact_or_set_aside(
    out: &Path,
    n: u64,
    published: impl Fn(u64) -> Value,
    refused: impl Fn(u64) -> bool,
) -> TestResult {
    let rows = output_rows(out)?;
    let letters = listed_reject_lines(out)?;
    let mut aside = BTreeMap::new();
    for line in &letters {
        let raw: Value = serde_json::from_str(line["raw"].as_str().ok_or("no raw")?)?;
        let id = raw["id"].as_i64().ok_or("a dead letter without an id")?;
        let cause = line["cause"].as_str().ok_or("no cause")?.to_string();
        assert!(!cause.is_empty(), "message {id} set aside without a reason");
        assert!(
            aside.insert(id, cause).is_none(),
            "id {id} twice in the dead letters"
        );
    }
    for i in 0..n {
        let id = i as i64;
        let sent = published(i);
        match (rows.get(&id), aside.get(&id)) {
            (Some(row), None) => {
                assert!(
                    !refused(i),
                    "message {i} {sent} should have been set aside: {row}"
                );
                assert!(
                    same(&sent, row),
                    "message {i}: published {sent}, stored {row}"
                );
            }
            (None, Some(cause)) => {
                assert!(refused(i), "message {i} {sent} was set aside: {cause}")
            }
            (Some(_), Some(_)) => panic!("message {i} both in the output and set aside"),
            (None, None) => panic!("message {i} {sent} is lost"),
        }
    }
    assert_eq!(
        rows.len() + aside.len(),
        n as usize,
        "nothing else came out"
    );
    Ok(())
}

fn stream_into(from: &str, out: &Path, extra: &[&str]) -> TestResult<std::process::Output> {
    Ok(sluice()
        .args(["stream", "--quiet", "--from", from, "--output"])
        .arg(out)
        .args(["--stop-when-idle", "1s", "--chunk-size", "64"])
        .args(extra)
        .output()?)
}

/// The reasons given for messages 600..750.
fn assert_reasons(out: &Path) -> TestResult {
    let letters = listed_reject_lines(out)?;
    let causes: Vec<&str> = letters.iter().filter_map(|l| l["cause"].as_str()).collect();
    for says in [
        "text \"7\" where a number was",
        "a boolean true where text was",
        "text \"yes\" where a boolean was",
        "an object {\"a\":1} where a number was",
        "cannot be held exactly as Float64",
        "field \"value\" is in the object twice",
    ] {
        assert!(
            causes.iter().any(|c| c.contains(says)),
            "no reason says {says:?}: {causes:?}"
        );
    }
    Ok(())
}

#[test]
fn redis_messages_whose_types_change_are_stored_exactly_or_set_aside() -> TestResult {
    let server = Server::redis();
    let mut con = redis_connection(server.port);
    let dir = tempfile::tempdir()?;
    let out = dir.path().join("out");
    let from = format!("redis://127.0.0.1:{}/typed?group=g", server.port);
    // The integers first (a run learns Int64 from them and keeps it), then the rest: the
    // next run's columns grow twice while it runs, each growth starting a new part.
    redis_publish(&mut con, "typed", (0..200).map(published_text));
    let output = stream_into(&from, &out, &[])?;
    assert_eq!(output.status.code(), Some(0), "{}", stderr_of(&output));
    redis_publish(&mut con, "typed", (200..N).map(published_text));
    let output = sluice()
        .args(["stream", "--from", &from, "--output"])
        .arg(&out)
        .args(["--stop-when-idle", "1s", "--chunk-size", "64"])
        .output()?;
    assert_eq!(output.status.code(), Some(0), "{}", stderr_of(&output));
    assert!(
        stderr_of(&output).contains("the columns grew"),
        "{}",
        stderr_of(&output)
    );
    assert_exact_or_set_aside(&out, N, changing, refused)?;
    assert_reasons(&out)?;
    // Each part says its columns: the first has `value` as Int64, the last as Float64
    // with `late` and `tags` added.
    let m = manifest(&out)?;
    let parts = m["parts"].as_array().ok_or("parts")?;
    let type_of = |part: &Value, name: &str| -> Option<String> {
        part["columns"]
            .as_array()?
            .iter()
            .find(|c| c["name"] == name)?["data_type"]
            .as_str()
            .map(str::to_string)
    };
    assert_eq!(type_of(&parts[0], "value").as_deref(), Some("Int64"));
    let last = parts.last().ok_or("no parts")?;
    assert_eq!(type_of(last, "value").as_deref(), Some("Float64"));
    assert_eq!(type_of(last, "late").as_deref(), Some("Utf8"));
    assert_eq!(type_of(last, "tags").as_deref(), Some("List(Utf8)"));
    assert_eq!(redis_pending(&mut con, "typed", "g"), 0, "all acknowledged");
    Ok(())
}

#[test]
fn nats_messages_whose_types_change_are_stored_exactly_or_set_aside() -> TestResult {
    let server = Server::nats();
    let client = NatsClient::connect(server.port)?;
    let published = client.publish("TYPED", "typed", (0..N).map(published_text));
    assert_eq!(published.len() as u64, N);
    let dir = tempfile::tempdir()?;
    let out = dir.path().join("out");
    let from = format!(
        "nats://127.0.0.1:{}/typed?stream=TYPED&durable=etl",
        server.port
    );
    let output = stream_into(&from, &out, &[])?;
    assert_eq!(output.status.code(), Some(0), "{}", stderr_of(&output));
    assert_exact_or_set_aside(&out, N, changing, refused)?;
    assert_reasons(&out)?;
    // Read once: every acknowledgement was confirmed before the clean exit.
    assert_eq!(
        client.pending("TYPED", "etl"),
        (0, 0),
        "(undelivered, unacknowledged)"
    );
    Ok(())
}

#[test]
fn a_restart_goes_on_with_the_columns_the_folder_kept() -> TestResult {
    let server = Server::redis();
    let mut con = redis_connection(server.port);
    let from = format!("redis://127.0.0.1:{}/kept?group=g", server.port);
    let dir = tempfile::tempdir()?;
    let out = dir.path().join("out");
    redis_publish(
        &mut con,
        "kept",
        (0..100).map(|i| json!({"id": i, "value": i}).to_string()),
    );
    let output = stream_into(&from, &out, &[])?;
    assert_eq!(output.status.code(), Some(0), "{}", stderr_of(&output));
    assert!(out.join(sluice_stream::schema::SCHEMA_FILE).exists());
    // The next run's first messages would infer `value` as text: the kept columns say
    // Int64, so they are set aside and the integers after them stay integers.
    redis_publish(
        &mut con,
        "kept",
        (100..200).map(|i| match i {
            100..=109 => json!({"id": i, "value": format!("v{i}")}).to_string(),
            _ => json!({"id": i, "value": i}).to_string(),
        }),
    );
    let output = stream_into(&from, &out, &[])?;
    assert_eq!(output.status.code(), Some(0), "{}", stderr_of(&output));
    let published = |i: u64| match i {
        100..=109 => json!({"id": i, "value": format!("v{i}")}),
        _ => json!({"id": i, "value": i}),
    };
    assert_exact_or_set_aside(&out, 200, published, |i| (100..110).contains(&i))?;
    let batches = read_output(&out)?;
    assert_eq!(
        int_column(&batches, "value")?.len(),
        190,
        "every part's value is Int64"
    );
    Ok(())
}

#[test]
fn a_declared_schema_is_held_to() -> TestResult {
    let server = Server::nats();
    let client = NatsClient::connect(server.port)?;
    let message = |i: u64| match i % 5 {
        0 => json!({"id": i, "value": i}),
        1 => json!({"id": i, "value": i as f64 + 0.25}),
        2 => json!({"id": i, "value": 1, "late": "x"}),
        3 => json!({"value": 1.5}),
        _ => json!({"id": i, "value": "1.5"}),
    };
    client.publish("DECL", "decl", (0..100).map(|i| message(i).to_string()));
    let dir = tempfile::tempdir()?;
    let schema = dir.path().join("schema.json");
    std::fs::write(
        &schema,
        r#"[{"name": "id", "type": "int64", "nullable": false}, {"name": "value", "type": "double"}]"#,
    )?;
    let out = dir.path().join("out");
    let from = format!(
        "nats://127.0.0.1:{}/decl?stream=DECL&durable=etl",
        server.port
    );
    let output = stream_into(&from, &out, &["--schema", path_str(&schema)])?;
    assert_eq!(output.status.code(), Some(0), "{}", stderr_of(&output));
    let rows = output_rows(&out)?;
    let ids: Vec<i64> = rows.keys().copied().collect();
    let expected: Vec<i64> = (0..100).filter(|i| i % 5 < 2).collect();
    assert_eq!(ids, expected, "only what fits the declared columns");
    for (id, row) in &rows {
        assert!(same(&message(*id as u64), row), "{id}: {row}");
    }
    let letters = listed_reject_lines(&out)?;
    assert_eq!(letters.len(), 60);
    let causes: Vec<&str> = letters.iter().filter_map(|l| l["cause"].as_str()).collect();
    for says in [
        "field \"late\" is not in the declared schema",
        "field \"id\" is missing (declared not null)",
        "text \"1.5\" where a number was",
    ] {
        assert_eq!(
            causes.iter().filter(|c| c.contains(says)).count(),
            20,
            "{says}: {causes:?}"
        );
    }
    Ok(())
}
