//! `sluice stream`: a broker stream into part files, each message exactly once. Reuses
//! `sluice run`'s settings, SQL, progress and metrics; the stream itself (ledger, commits,
//! acknowledgements) is `sluice_stream`'s. Ctrl-C or SIGTERM drain: reading stops, what was
//! read is committed and acknowledged, and the command exits 0.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use sluice::{ErrorPolicy, Source};
use sluice_job::Transform;
use sluice_sql::Windows;
use sluice_stream::{Address, OutputSettings, SourceOptions, StreamControl, StreamError};

use crate::cli::StreamArgs;
use crate::error::CliError;
use crate::metrics::MetricsServer;
use crate::progress::{self, Progress};
use crate::settings::{parse_policy, write_stats_json};
use crate::signals;
use crate::ui::Ui;

/// Parses `100ms`, `1s`, `1.5s`, `2m`, `1h`.
pub fn parse_duration(flag: &'static str, text: &str) -> Result<Duration, CliError> {
    let bad = |reason: &str| CliError::BadValue {
        flag,
        value: text.to_string(),
        reason: reason.to_string(),
    };
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(|| bad("give a unit: ms, s, m or h (e.g. 100ms, 5s)"))?;
    let (number, unit) = t.split_at(split);
    let n: f64 = number
        .parse()
        .map_err(|_| bad("expected a number followed by ms, s, m or h"))?;
    let seconds = match unit.trim() {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(bad("unknown unit; use ms, s, m or h")),
    };
    Duration::try_from_secs_f64(seconds).map_err(|_| bad("out of range"))
}

fn stream_error(context: &str) -> impl Fn(StreamError) -> CliError + '_ {
    move |source| CliError::Stream {
        context: context.to_string(),
        source,
    }
}

pub fn stream(args: StreamArgs, ui: Ui) -> Result<(), CliError> {
    let address = Address::parse(&args.from).map_err(stream_error("bad --from"))?;
    let mut engine = args.engine.settings()?;
    let dead_letters = args.out.output.join("_dead_letters");
    let policy = match &args.on_error {
        Some(text) => parse_policy(text)?,
        None => ErrorPolicy::DeadLetter(dead_letters),
    };
    // The engine names failed chunks and malformed messages by their place in the run: one
    // folder per run.
    let policy = match policy {
        ErrorPolicy::DeadLetter(dir) => ErrorPolicy::DeadLetter(dir.join(run_name())),
        other => other,
    };
    let max_latency = parse_duration("max-latency", &args.max_latency)?;
    let commit_interval = parse_duration("commit-interval", &args.commit_interval)?;
    let stop_when_idle = args
        .stop_when_idle
        .as_deref()
        .map(|t| parse_duration("stop-when-idle", t))
        .transpose()?;
    let sql_text = args.query.read()?;
    let declared = args
        .schema
        .as_deref()
        .map(sluice_stream::StreamSchema::declared_from_file)
        .transpose()
        .map_err(stream_error("bad --schema"))?;

    engine.ordered = Some(true);
    engine.error_policy = Some(policy);
    let pipeline = engine
        .build()
        .map_err(|e| CliError::setup("bad settings", e))?;

    let settings = OutputSettings {
        dir: args.out.output.clone(),
        format: args.out.output_format.map(Into::into),
        rows_per_part: args.out.rows_per_part.unwrap_or(1_000_000).max(1),
        commit_interval,
    };
    let metrics = args
        .out
        .metrics_addr
        .map(|addr| MetricsServer::start(addr, pipeline.clone()))
        .transpose()?;
    let prepared =
        sluice_stream::prepare(&settings).map_err(stream_error("cannot use the output folder"))?;
    if prepared.committed_rows > 0 {
        ui.say(format!(
            "continuing: {} parts ({} rows) already committed in {}",
            prepared.keep.len(),
            prepared.committed_rows,
            args.out.output.display()
        ));
    }
    let control = Arc::new(StreamControl::default());
    {
        let control = control.clone();
        signals::on_signal_drain(move || control.stop());
    }
    let options = SourceOptions {
        max_latency,
        stop_when_idle,
        schema: declared,
    };
    let opened = sluice_stream::open(
        &address,
        &prepared,
        &settings,
        options.clone(),
        control.clone(),
    )
    .map_err(stream_error("cannot read the stream"))?;
    let Some(source) = opened.source else {
        ui.say("no message arrived; nothing written");
        return Ok(());
    };
    ui.note(format!(
        "reading {} ({} columns)",
        source.name(),
        source.schema().fields().len()
    ));
    let transform = match sql_text {
        Some(text) => Transform::Sql {
            text,
            windows: Windows::Chunk,
        },
        None => Transform::Copy,
    };
    // Planned now, so a query that cannot run on the columns fails before anything is
    // read further; again whenever the inferred columns grow.
    transform.plan_chunk(source.schema())?;
    let plan = |schema| {
        transform
            .plan_chunk(schema)
            .map(|(function, _)| function)
            .map_err(|e| e.to_string().into())
    };

    let mut bar =
        Progress::start_labelled(progress::Mode::detect(ui.quiet), pipeline.clone(), None, "");
    let result = sluice_stream::run(
        &pipeline,
        source,
        opened.ledger,
        &plan,
        prepared,
        &settings,
        &options,
        &control,
    );
    bar.finish();
    drop(metrics);
    let stats = pipeline.stats();
    if let Some(path) = &args.out.stats_json {
        write_stats_json(path, &stats, &[])?;
    }
    let summary = result.map_err(stream_error("the stream failed"))?;
    if !ui.quiet {
        print!("{}", stats.report());
    }
    report(&args.out.output, &summary, ui);
    Ok(())
}

fn report(dir: &Path, summary: &sluice_stream::StreamSummary, ui: Ui) {
    let m = &summary.manifest;
    ui.say(format!(
        "{} messages in this run; {} parts ({} rows) in {}; {} malformed set aside; {} redeliveries dropped; {} acknowledged",
        summary.messages,
        m.parts.len(),
        m.parts.iter().map(|p| p.rows).sum::<u64>(),
        dir.display(),
        summary.malformed,
        summary.duplicates,
        summary.acked
    ));
    if summary.released > 0 {
        ui.say(format!(
            "{} messages an earlier instance held uncommitted were handed back to the broker at the start",
            summary.released
        ));
    }
    if summary.acks.unconfirmed > 0 || summary.acks.retried > 0 {
        // Shown even with --quiet: the broker may deliver these again.
        eprintln!(
            "sluice: warning: {} acknowledgements were sent again; {} were never confirmed by the broker (it may deliver those messages again: a committed one is dropped as a duplicate while the ledger remembers it)",
            summary.acks.retried, summary.acks.unconfirmed
        );
    }
    if summary.schema_changes > 0 {
        ui.say(format!(
            "the columns grew {} times (new fields or wider types): later parts have {} columns; each part's columns are in the manifest",
            summary.schema_changes,
            summary.schema.fields().len()
        ));
    }
}

/// A name unique to this run (its start time), for its failed-chunk files.
fn run_name() -> String {
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    format!("run-{millis}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_need_a_unit() {
        assert_eq!(
            parse_duration("max-latency", "100ms").ok(),
            Some(Duration::from_millis(100))
        );
        assert_eq!(
            parse_duration("x", "1.5s").ok(),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(
            parse_duration("x", "2m").ok(),
            Some(Duration::from_secs(120))
        );
        assert!(parse_duration("x", "5").is_err());
        assert!(parse_duration("x", "5 parsecs").is_err());
        assert!(parse_duration("x", "-1s").is_err());
    }
}
