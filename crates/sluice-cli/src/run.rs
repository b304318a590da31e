//! `sluice run`: files in, per-chunk SQL (or a plain copy), part files out. Everything that
//! can be checked before data is read is checked first (inputs, the SQL against the input
//! schema, settings, the output folder), so bad usage exits with 2 and leaves no output.

use std::path::Path;
use std::sync::Arc;

use sluice::source::SkipRows;
use sluice::{
    ErrorPolicy, FileFormat, FilesSource, OutputFormat, OutputOptions, RunStatus, RunSummary,
    SluiceError, Source, StreamingDataPipeline, StreamingStats,
};
use sluice_job::output_state::{self, Plan, RunRecord};
use sluice_job::parsed_copy::{self, ParsedCopy};
use sluice_job::two_pass::{self, GlobalRecord, GlobalRun, PassStats};
use sluice_job::{ChunkFunction, Observer, Transform};
use sluice_sql::Windows;

use crate::cli::{Pass1CopyArg, RunArgs, WindowsArg};
use crate::error::CliError;
use crate::metrics::MetricsServer;
use crate::settings::{parse_policy, write_stats_json};
use crate::signals;
use crate::ui::Ui;

pub fn run(args: RunArgs, ui: Ui) -> Result<(), CliError> {
    if args.resume && args.unordered {
        return Err(CliError::Usage(
            "--resume needs ordered output: the parts of an --unordered run are not a prefix of the input".into(),
        ));
    }
    let mut settings = args.engine.settings()?;
    let policy = parse_policy(&args.on_error)?;
    let format = args
        .format
        .map(|f| FileFormat::from_name(f.name()))
        .transpose()
        .map_err(|e| CliError::setup("bad --format", e))?;

    if args.windows == WindowsArg::Global {
        two_pass::refuse_unrepeatable(&args.input)?;
    }
    let source = FilesSource::open(&args.input, format.clone())
        .map_err(|e| CliError::setup("cannot open the input", e))?;
    let paths = source.paths().to_vec();
    let input_schema = source.schema();
    ui.note(format!(
        "input: {} ({} files, {} columns)",
        source.name(),
        paths.len(),
        input_schema.fields().len()
    ));

    let sql_text = args.query.read()?;
    let windows = match args.windows {
        WindowsArg::Global => Windows::Global,
        WindowsArg::Chunk => Windows::Chunk,
    };
    // Whole-input windows are planned for two passes (sluice_job::two_pass); the function
    // of pass 2 exists only once pass 1 has its values.
    let global = match windows {
        Windows::Global => Some(GlobalRun::new(
            sql_text.as_deref(),
            input_schema.clone(),
            &paths,
        )?),
        Windows::Chunk => None,
    };
    let transform = match &sql_text {
        Some(text) => Transform::Sql {
            text: text.clone(),
            windows,
        },
        None => Transform::Copy,
    };
    let (chunk_function, output_schema) = match &global {
        Some(run) => (None, run.sql.output_schema()),
        None => {
            let (function, schema) = transform.plan_chunk(input_schema.clone())?;
            (Some(function), schema)
        }
    };

    settings.ordered = Some(!args.unordered);
    settings.adaptive_batching = Some(!args.fixed_chunks);
    settings.error_policy = Some(policy.clone());
    let pipeline = settings
        .build()
        .map_err(|e| CliError::setup("bad settings", e))?;

    let mut record = RunRecord::new(&paths, sql_text.as_deref(), !args.unordered);
    record.global = global.as_ref().map(GlobalRun::pending_record);
    let mut resuming = false;
    let letters_dir = match &policy {
        ErrorPolicy::DeadLetter(dir) => Some(dir.clone()),
        _ => None,
    };
    let mut keep_letters = Vec::new();
    // One writer per folder, from before it is read until the final manifest: held to the
    // end of this function.
    let _lock = output_state::lock(&args.out.output)?;
    let (output_format, keep, skip_rows) =
        match output_state::plan(&args.out.output, args.resume, args.overwrite, &record)? {
            Plan::Complete(manifest) => {
                if !ui.quiet {
                    println!(
                        "{}: the run is already complete ({} parts, {} rows); nothing to do",
                        args.out.output.display(),
                        manifest.parts.len(),
                        manifest.total_rows
                    );
                }
                return Ok(());
            }
            Plan::Continue {
                manifest,
                skip_rows,
            } => {
                output_state::check_continues(
                    &args.out.output,
                    &manifest,
                    args.out.output_format.map(Into::into),
                    &input_schema,
                    Some(&output_schema),
                )?;
                keep_letters =
                    output_state::split_dead_letters(&manifest, skip_rows, letters_dir.as_deref())?;
                resuming = true;
                (manifest.format, manifest.parts, skip_rows)
            }
            Plan::Fresh => (
                args.out
                    .output_format
                    .map_or(OutputFormat::Parquet, Into::into),
                Vec::new(),
                0,
            ),
        };

    // Pass 1 (or its saved values), before the output folder's files are touched (a CSV
    // pass 1 adds its copy of the rows to the folder; it is removed on failure).
    let mut passes: Vec<PassStats> = Vec::new();
    let mut parsed_copy = None;
    let global_function = match &global {
        Some(run) => {
            let outcome = global_pass1(run, &args, &pipeline, format.as_ref(), resuming, ui)?;
            record.global = Some(outcome.record);
            passes.push(outcome.pass);
            parsed_copy = outcome.copy;
            Some(outcome.function)
        }
        None => None,
    };

    // Bound before the folder is touched, so a bad address leaves nothing behind.
    let metrics = args
        .out
        .metrics_addr
        .map(|addr| MetricsServer::start(addr, pipeline.clone()))
        .transpose()?;
    if let Some(addr) = args.out.metrics_addr {
        ui.note(format!("serving metrics at http://{addr}/metrics"));
    }

    output_state::clear(&args.out.output, &keep)?;
    if !keep.is_empty() {
        ui.say(format!(
            "resuming: keeping {} complete parts, skipping input rows 0..{skip_rows}",
            keep.len()
        ));
    }
    let mut output = OutputOptions::new(&args.out.output)
        .format(output_format)
        .resume(keep, skip_rows)
        .keep_dead_letters(keep_letters);
    if let Some(rows) = args.out.rows_per_part {
        output = output.rows_per_part(rows);
    }
    // Pass 2 reads the rows pass 1 kept, when it kept them (never when resuming).
    let source = match &parsed_copy {
        Some(copy) => {
            FilesSource::open(&[copy.path().display().to_string()], Some(FileFormat::Ipc))
                .map_err(|e| CliError::setup("cannot open the rows pass 1 kept", e))?
        }
        None => source,
    };
    let source: Box<dyn Source> = if skip_rows > 0 {
        Box::new(SkipRows::new(source, skip_rows))
    } else {
        Box::new(source)
    };
    let function = match (global_function, chunk_function) {
        (Some(function), _) | (None, Some(function)) => function,
        (None, None) => unreachable!("a one-pass job always has its function planned"),
    };

    let outcome = execute(
        &pipeline,
        source,
        function,
        output,
        ui,
        || record.write_to(&args.out.output).map_err(CliError::from),
        if global.is_some() { "pass 2/2" } else { "" },
    );
    drop(metrics);
    drop(parsed_copy);
    let stats = pipeline.stats();
    // An input that changed during pass 2 fails the run like bad data does.
    let outcome = match (&global, outcome) {
        (Some(run), Ok(summary)) => match run.check_unchanged() {
            Ok(()) => Ok(summary),
            Err(error) => {
                let error = CliError::from(error);
                output_state::mark_failed(&args.out.output, &error.one_line())?;
                Err(error)
            }
        },
        (_, outcome) => outcome,
    };
    if global.is_some() {
        passes.push(PassStats::pass2(&stats));
        if !ui.quiet {
            print!("{}", two_pass::report(&passes));
        }
    }
    if let Some(path) = &args.out.stats_json {
        write_stats_json(path, &stats, &passes)?;
    }
    // A failed run keeps the parts it committed before the failure (its manifest says
    // `failed`, with the error): `--resume` goes on from there.
    let summary = outcome?;
    finish(&args.out.output, &summary, &stats, ui)
}

/// Runs `function` over `source` into `output` with progress, signals and metrics wired up
/// (the progress led by `label`); `started` runs once the output folder exists. A stopped
/// run is `Ok` (see its manifest).
pub fn execute(
    pipeline: &Arc<StreamingDataPipeline>,
    source: Box<dyn Source>,
    function: ChunkFunction,
    output: OutputOptions,
    ui: Ui,
    started: impl FnOnce() -> Result<(), CliError>,
    label: &'static str,
) -> Result<RunSummary, CliError> {
    let total_bytes = source.total_bytes();
    let mut stream = pipeline
        .start_boxed(source, function, Some(output))
        .map_err(|e| CliError::setup("cannot start the run", e))?;
    started()?;
    let mut watch = Observer::pass_started(&ui, pipeline, total_bytes, label);
    let mut failure = None;
    for chunk in stream.by_ref() {
        match chunk {
            Ok(_) => {}
            // A signal stopped the run: its manifest says so; `finish` reports it.
            Err(SluiceError::Stopped) => {}
            Err(e) => failure = Some(e),
        }
    }
    watch.finish();
    match failure {
        Some(e) => Err(CliError::run("the run failed", e)),
        None => Ok(stream.summary()),
    }
}

/// Reports a run that ended without error: complete, or stopped by a signal.
fn finish(
    dir: &Path,
    summary: &RunSummary,
    stats: &StreamingStats,
    ui: Ui,
) -> Result<(), CliError> {
    let stopped = signals::interrupted()
        || summary
            .manifest
            .as_ref()
            .is_some_and(|m| m.status == RunStatus::Stopped);
    if !ui.quiet {
        print!("{}", stats.report());
    }
    let (parts, rows) = summary.manifest.as_ref().map_or((0, 0), |m| {
        (m.parts.len(), m.parts.iter().map(|p| p.rows).sum::<u64>())
    });
    if stopped {
        ui.say(format!(
            "stopped: {parts} complete parts ({rows} rows) in {}; run again with --resume to continue",
            dir.display()
        ));
        return Err(CliError::Interrupted);
    }
    ui.say(format!(
        "wrote {rows} rows in {parts} parts to {}",
        dir.display()
    ));
    Ok(())
}

/// What pass 1 (or the run record of an earlier run) leaves for pass 2.
struct Pass1Outcome {
    /// Pass 2's per-chunk function.
    function: ChunkFunction,
    /// What the run record keeps of pass 1.
    record: GlobalRecord,
    pass: PassStats,
    /// The rows pass 1 parsed, for pass 2 to read instead of the input.
    copy: Option<ParsedCopy>,
}

/// Pass 1 of `--windows global`, or the values a stopped run saved when resuming it.
fn global_pass1(
    run: &GlobalRun,
    args: &RunArgs,
    pipeline: &StreamingDataPipeline,
    format: Option<&FileFormat>,
    resuming: bool,
    ui: Ui,
) -> Result<Pass1Outcome, CliError> {
    let dir = args.out.output.as_path();
    parsed_copy::remove_stale(dir);
    let earlier = if resuming {
        RunRecord::read_from(dir)?.and_then(|r| r.global)
    } else {
        None
    };
    let (values, pass, copy) = match run.saved_values(earlier.as_ref(), dir)? {
        Some(values) => {
            ui.say("resuming pass 2/2 with the whole-input values saved by pass 1");
            let pass = PassStats {
                pass: 1,
                reused: true,
                ..PassStats::default()
            };
            (values, pass, None)
        }
        None => {
            let copy_to = (args.pass1_copy == Pass1CopyArg::Auto).then_some(dir);
            let pass1 = run.pass1(pipeline.config(), format, copy_to, &ui)?;
            (pass1.values, pass1.stats, pass1.copy)
        }
    };
    run.check_unchanged()?;
    ui.say(if copy.is_some() {
        "pass 2/2: the query per chunk, with the whole-input values, on the rows pass 1 kept"
    } else {
        "pass 2/2: the query per chunk, with the whole-input values"
    });
    Ok(Pass1Outcome {
        function: run.pass2_function(&values)?,
        record: run.record(&values)?,
        pass,
        copy,
    })
}
