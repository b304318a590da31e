//! `sluice run`: files in, per-chunk SQL (or a plain copy), part files out. Everything that
//! can be checked before data is read is checked first (inputs, the SQL against the input
//! schema, settings, the output folder), so bad usage exits with 2 and leaves no output.

use std::path::Path;
use std::sync::Arc;

use arrow::datatypes::Schema;
use arrow::record_batch::RecordBatch;
use sluice::source::SkipRows;
use sluice::{
    BoxError, ErrorPolicy, FileFormat, FilesSource, Manifest, OutputFormat, OutputOptions,
    RunStatus, RunSummary, SluiceError, Source, StreamingDataPipeline, StreamingStats,
};
use sluice_sql::ChunkSql;

use crate::cli::{Pass1CopyArg, RunArgs, WindowsArg};
use crate::error::CliError;
use crate::global::{self, GlobalRun, PassStats};
use crate::metrics::MetricsServer;
use crate::parsed_copy::{self, ParsedCopy};
use crate::progress::{self, Progress};
use crate::resume::{self, Plan, RunRecord};
use crate::signals;
use crate::size::parse_size;

/// The function run on every chunk.
pub type ChunkFunction = Arc<dyn Fn(RecordBatch) -> Result<RecordBatch, BoxError> + Send + Sync>;

/// How the command talks to the person running it.
#[derive(Debug, Clone, Copy)]
pub struct Ui {
    pub quiet: bool,
    pub verbose: bool,
}

impl Ui {
    /// A note on stderr, shown with `--verbose` only.
    pub fn note(&self, text: impl AsRef<str>) {
        if self.verbose && !self.quiet {
            eprintln!("sluice: {}", text.as_ref());
        }
    }

    /// A line on stderr unless `--quiet`.
    pub fn say(&self, text: impl AsRef<str>) {
        if !self.quiet {
            eprintln!("sluice: {}", text.as_ref());
        }
    }
}

pub fn run(args: RunArgs, ui: Ui) -> Result<(), CliError> {
    if args.resume && args.unordered {
        return Err(CliError::Usage(
            "--resume needs ordered output: the parts of an --unordered run are not a prefix of the input".into(),
        ));
    }
    let max_memory = parse_max_memory(args.max_memory.as_deref())?;
    let policy = parse_policy(&args.on_error)?;
    let format = args
        .format
        .map(|f| FileFormat::from_name(f.name()))
        .transpose()
        .map_err(|e| CliError::setup("bad --format", e))?;

    if args.windows == WindowsArg::Global {
        global::refuse_unrepeatable(&args.input)?;
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

    let sql_text = read_sql(args.sql.as_deref(), args.sql_text.as_deref())?;
    // --windows global: planned for two passes (see global.rs); no ChunkSql of its own.
    let global = match args.windows {
        WindowsArg::Global => Some(GlobalRun::new(
            &args,
            sql_text.as_deref(),
            input_schema.clone(),
            &paths,
        )?),
        WindowsArg::Chunk => None,
    };
    let chunk_sql = sql_text
        .as_deref()
        .filter(|_| global.is_none())
        .map(|sql| ChunkSql::new(sql, input_schema.clone()))
        .transpose()
        .map_err(|source| CliError::Sql { source })?;
    let output_schema = match &global {
        Some(run) => run.sql.output_schema(),
        None => chunk_sql
            .as_ref()
            .map_or(input_schema.clone(), |s| s.output_schema()),
    };

    let mut builder = StreamingDataPipeline::builder()
        .ordered(!args.unordered)
        .adaptive_batching(!args.fixed_chunks)
        .error_policy(policy.clone());
    if let Some(rows) = args.chunk_size {
        builder = builder.chunk_size(rows);
    }
    if let Some(bytes) = max_memory {
        builder = builder.max_memory_bytes(bytes);
    }
    if let Some(workers) = args.workers {
        builder = builder.num_workers(workers);
    }
    let pipeline = Arc::new(
        builder
            .build()
            .map_err(|e| CliError::setup("bad settings", e))?,
    );

    let mut record = RunRecord::new(&paths, sql_text.as_deref(), !args.unordered);
    record.global = global.as_ref().map(GlobalRun::pending_record);
    let mut resuming = false;
    let letters_dir = match &policy {
        ErrorPolicy::DeadLetter(dir) => Some(dir.clone()),
        _ => None,
    };
    let mut keep_letters = Vec::new();
    let (output_format, keep, skip_rows) =
        match resume::plan(&args.output, args.resume, args.overwrite, &record)? {
            Plan::Complete(manifest) => {
                if !ui.quiet {
                    println!(
                        "{}: the run is already complete ({} parts, {} rows); nothing to do",
                        args.output.display(),
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
                check_resumable(&args, &manifest, &input_schema, &output_schema)?;
                keep_letters =
                    resume::split_dead_letters(&manifest, skip_rows, letters_dir.as_deref())?;
                resuming = true;
                (manifest.format, manifest.parts, skip_rows)
            }
            Plan::Fresh => (
                args.output_format.map_or(OutputFormat::Parquet, Into::into),
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
            let outcome = global_pass1(run, &args, max_memory, format.as_ref(), resuming, ui)?;
            record.global = Some(outcome.record);
            passes.push(outcome.pass);
            parsed_copy = outcome.copy;
            Some(outcome.function)
        }
        None => None,
    };

    // Bound before the folder is touched, so a bad address leaves nothing behind.
    let metrics = args
        .metrics_addr
        .map(|addr| MetricsServer::start(addr, pipeline.clone()))
        .transpose()?;
    if let Some(addr) = args.metrics_addr {
        ui.note(format!("serving metrics at http://{addr}/metrics"));
    }

    resume::clear(&args.output, &keep)?;
    if !keep.is_empty() {
        ui.say(format!(
            "resuming: keeping {} complete parts, skipping input rows 0..{skip_rows}",
            keep.len()
        ));
    }
    let mut output = OutputOptions::new(&args.output)
        .format(output_format)
        .resume(keep, skip_rows)
        .keep_dead_letters(keep_letters);
    if let Some(rows) = args.rows_per_part {
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
    let total_bytes = source.total_bytes();
    let source: Box<dyn Source> = if skip_rows > 0 {
        Box::new(SkipRows::new(source, skip_rows))
    } else {
        Box::new(source)
    };
    let function: ChunkFunction = match (global_function, chunk_sql) {
        (Some(function), _) => function,
        (None, Some(sql)) => {
            let sql = Arc::new(sql);
            Arc::new(move |batch: RecordBatch| sql.apply(&batch).map_err(BoxError::from))
        }
        (None, None) => Arc::new(|batch: RecordBatch| Ok::<_, BoxError>(batch)),
    };

    let outcome = execute_labelled(
        &pipeline,
        source,
        function,
        output,
        total_bytes,
        progress::Mode::detect(ui.quiet),
        || record.write_to(&args.output),
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
                global::mark_failed(&args.output, &error)?;
                Err(error)
            }
        },
        (_, outcome) => outcome,
    };
    if global.is_some() {
        passes.push(global::pass2_stats(&stats));
        if !ui.quiet {
            print!("{}", global::report(&passes));
        }
    }
    if let Some(path) = &args.stats_json {
        write_stats_json(path, &stats, &passes)?;
    }
    // A failed run keeps the parts it committed before the failure (its manifest says
    // `failed`, with the error): `--resume` goes on from there.
    let summary = outcome?;
    finish(&args.output, &summary, &stats, ui)
}

/// Reads the SQL from `--sql FILE` or `--sql-text`.
pub fn read_sql(sql: Option<&Path>, sql_text: Option<&str>) -> Result<Option<String>, CliError> {
    match (sql, sql_text) {
        (Some(path), _) => {
            std::fs::read_to_string(path)
                .map(Some)
                .map_err(|source| CliError::SqlFile {
                    path: path.to_path_buf(),
                    source,
                })
        }
        (None, Some(text)) => Ok(Some(text.to_string())),
        (None, None) => Ok(None),
    }
}

/// `--max-memory SIZE` in bytes.
pub fn parse_max_memory(text: Option<&str>) -> Result<Option<u64>, CliError> {
    text.map(|text| {
        parse_size(text).map_err(|reason| CliError::BadValue {
            flag: "max-memory",
            value: text.to_string(),
            reason,
        })
    })
    .transpose()
}

/// `--on-error POLICY`.
pub fn parse_policy(text: &str) -> Result<ErrorPolicy, CliError> {
    text.parse().map_err(|e| CliError::BadValue {
        flag: "on-error",
        value: text.to_string(),
        reason: setting_reason(e),
    })
}

/// The chunk function: the planned SQL, or a plain copy.
pub fn sql_function(chunk_sql: Option<ChunkSql>) -> ChunkFunction {
    match chunk_sql {
        Some(sql) => {
            let sql = Arc::new(sql);
            Arc::new(move |batch: RecordBatch| sql.apply(&batch).map_err(BoxError::from))
        }
        None => Arc::new(|batch: RecordBatch| Ok::<_, BoxError>(batch)),
    }
}

/// The reason of an `InvalidSetting`, or the whole message of anything else.
fn setting_reason(error: SluiceError) -> String {
    match error {
        SluiceError::InvalidSetting { reason, .. } => reason,
        other => other.to_string(),
    }
}

/// Refuses a resume whose output would not match the parts already written.
fn check_resumable(
    args: &RunArgs,
    manifest: &Manifest,
    input: &Schema,
    output: &Schema,
) -> Result<(), CliError> {
    let refuse = |reason: String| CliError::Resume {
        dir: args.output.clone(),
        reason,
    };
    if let Some(format) = args.output_format.map(OutputFormat::from) {
        if format != manifest.format {
            return Err(refuse(format!(
                "its parts are {}, not {}; drop --output-format",
                manifest.format.extension(),
                format.extension()
            )));
        }
    }
    if manifest.parts.is_empty() || manifest.schema.is_empty() {
        return Ok(());
    }
    let describe = |schema: &Schema| -> Vec<(String, String)> {
        schema
            .fields()
            .iter()
            .map(|f| (f.name().clone(), f.data_type().to_string()))
            .collect()
    };
    let written: Vec<(String, String)> = manifest
        .schema
        .iter()
        .map(|c| (c.name.clone(), c.data_type.clone()))
        .collect();
    // A pass-through part holds the input's columns.
    if written != describe(output) && written != describe(input) {
        return Err(refuse(format!(
            "its parts have columns {:?}, this run writes {:?}",
            written.iter().map(|c| &c.0).collect::<Vec<_>>(),
            output.fields().iter().map(|f| f.name()).collect::<Vec<_>>()
        )));
    }
    Ok(())
}

/// Runs `function` over `source` into `output` with progress, signals and metrics wired up;
/// `started` runs once the output folder exists. A stopped run is `Ok` (see its manifest).
pub fn execute(
    pipeline: &Arc<StreamingDataPipeline>,
    source: Box<dyn Source>,
    function: ChunkFunction,
    output: OutputOptions,
    total_bytes: Option<u64>,
    progress: progress::Mode,
    started: impl FnOnce() -> Result<(), CliError>,
) -> Result<RunSummary, CliError> {
    execute_labelled(
        pipeline,
        source,
        function,
        output,
        total_bytes,
        progress,
        started,
        "",
    )
}

/// [`execute`] with the progress led by `label`.
#[allow(clippy::too_many_arguments)]
pub fn execute_labelled(
    pipeline: &Arc<StreamingDataPipeline>,
    source: Box<dyn Source>,
    function: ChunkFunction,
    output: OutputOptions,
    total_bytes: Option<u64>,
    progress: progress::Mode,
    started: impl FnOnce() -> Result<(), CliError>,
    label: &'static str,
) -> Result<RunSummary, CliError> {
    let stream = pipeline
        .start_boxed(source, function, Some(output))
        .map_err(|e| CliError::setup("cannot start the run", e))?;
    signals::watch(pipeline);
    started()?;
    let mut bar = Progress::start_labelled(progress, pipeline.clone(), total_bytes, label);
    let mut stream = stream;
    let mut failure = None;
    for chunk in stream.by_ref() {
        match chunk {
            Ok(_) => {}
            // A signal stopped the run: its manifest says so; `finish` reports it.
            Err(SluiceError::Stopped) => {}
            Err(e) => failure = Some(e),
        }
    }
    bar.finish();
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

/// The run's statistics; with `--windows global` also `passes`: each pass's rows, time and
/// bytes (pass 2's are the top-level figures).
pub fn write_stats_json(
    path: &Path,
    stats: &StreamingStats,
    passes: &[PassStats],
) -> Result<(), CliError> {
    let mut value = serde_json::to_value(stats)
        .map_err(|e| CliError::io("write", path, std::io::Error::other(e)))?;
    if let (false, Some(object)) = (passes.is_empty(), value.as_object_mut()) {
        let passes = serde_json::to_value(passes)
            .map_err(|e| CliError::io("write", path, std::io::Error::other(e)))?;
        object.insert("passes".into(), passes);
    }
    let text = serde_json::to_string_pretty(&value)
        .map_err(|e| CliError::io("write", path, std::io::Error::other(e)))?;
    std::fs::write(path, text + "\n").map_err(|e| CliError::io("write", path, e))
}

/// What pass 1 (or the run record of an earlier run) leaves for pass 2.
struct Pass1Outcome {
    /// Pass 2's per-chunk function.
    function: ChunkFunction,
    /// What the run record keeps of pass 1.
    record: global::GlobalRecord,
    pass: PassStats,
    /// The rows pass 1 parsed, for pass 2 to read instead of the input.
    copy: Option<ParsedCopy>,
}

/// Pass 1 of `--windows global`, or the values a stopped run saved when resuming it.
fn global_pass1(
    run: &GlobalRun,
    args: &RunArgs,
    max_memory: Option<u64>,
    format: Option<&FileFormat>,
    resuming: bool,
    ui: Ui,
) -> Result<Pass1Outcome, CliError> {
    parsed_copy::remove_stale(&args.output);
    let earlier = if resuming {
        RunRecord::read_from(&args.output)?.and_then(|r| r.global)
    } else {
        None
    };
    let (values, pass, copy) = match run.saved_values(earlier.as_ref(), &args.output)? {
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
            let copy_to = (args.pass1_copy == Pass1CopyArg::Auto).then_some(args.output.as_path());
            run.pass1(args, max_memory, format, copy_to, ui)?
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
