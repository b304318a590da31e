//! The command line: `sluice run`, `sluice demo`, `sluice inspect`, as clap derives. Only
//! parsing lives here; turning the arguments into settings (and rejecting bad ones with
//! exit code 2) is each command's job.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "sluice",
    version,
    about = "Chunked, memory-bounded, parallel processing of tabular files larger than memory",
    propagate_version = true
)]
pub struct Cli {
    /// Print nothing but errors: no progress, no statistics.
    #[arg(long, short, global = true)]
    pub quiet: bool,

    /// On error, print the chain of causes; print what the run does.
    #[arg(long, short, global = true)]
    pub verbose: bool,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a per-chunk SQL query (or nothing: a copy) over files, writing part files.
    Run(Box<RunArgs>),
    /// Generate the seed's sample dataset, run its preprocessing as SQL, print the statistics.
    Demo(DemoArgs),
    /// Show the schema, rows and size of data files (and Parquet row groups).
    Inspect(InspectArgs),
    /// Read a broker stream (Redis Streams, NATS JetStream) into part files, each message exactly once,
    /// until Ctrl-C / SIGTERM (which drain and exit 0) or --stop-when-idle.
    Stream(Box<StreamArgs>),
}

/// The engine's settings, shared by `run` and `stream`.
#[derive(Debug, Args)]
pub struct EngineArgs {
    /// Rows per chunk: the first chunk's size, or every chunk's with --fixed-chunks [default: 1000].
    #[arg(long, value_name = "ROWS")]
    pub chunk_size: Option<usize>,

    /// Memory budget for everything the engine holds, e.g. 512MB, 2GiB (KB/MB/GB are
    /// powers of 1024, like max_memory_mb) [default: 1000MB].
    #[arg(long, value_name = "SIZE")]
    pub max_memory: Option<String>,

    /// Worker threads [default: the machine's cores].
    #[arg(long, value_name = "N")]
    pub workers: Option<usize>,
}

/// The query run on every chunk, shared by `run` and `stream`.
#[derive(Debug, Args)]
pub struct SqlArgs {
    /// File holding the SQL run on every chunk (the table is `chunk`).
    #[arg(long, value_name = "FILE", conflicts_with = "sql_text")]
    pub sql: Option<PathBuf>,

    /// The SQL run on every chunk, given inline.
    #[arg(long, value_name = "SQL")]
    pub sql_text: Option<String>,
}

/// Where the part files go and what is reported, shared by `run` and `stream`.
#[derive(Debug, Args)]
pub struct OutputArgs {
    /// Output folder for part files and `_manifest.json` (a `stream` into a folder it
    /// wrote before continues the stream).
    #[arg(long, short, value_name = "DIR")]
    pub output: PathBuf,

    /// Format of the part files [default: parquet, or the earlier run's when continuing].
    #[arg(long, value_enum)]
    pub output_format: Option<OutputFormatArg>,

    /// Close (commit) a part file once it holds this many rows [default: 1000000].
    #[arg(long, value_name = "N")]
    pub rows_per_part: Option<u64>,

    /// Write the run's statistics as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub stats_json: Option<PathBuf>,

    /// Serve live statistics in Prometheus text format at http://ADDR/metrics during the run.
    #[arg(long, value_name = "ADDR")]
    pub metrics_addr: Option<SocketAddr>,
}

#[derive(Debug, Args)]
pub struct StreamArgs {
    /// The stream: redis://HOST:PORT/STREAM?group=G&consumer=C (entries' `data` field
    /// holds a JSON object) or nats://HOST:PORT/SUBJECT?stream=S&durable=D (each payload
    /// is a JSON object).
    #[arg(long, value_name = "URL")]
    pub from: String,

    #[command(flatten)]
    pub out: OutputArgs,

    #[command(flatten)]
    pub query: SqlArgs,

    #[command(flatten)]
    pub engine: EngineArgs,

    /// When the SQL fails on a chunk or a message is malformed: fail, skip,
    /// dead-letter=DIR [default: dead-letter=OUTPUT/_dead_letters].
    #[arg(long, value_name = "POLICY")]
    pub on_error: Option<String>,

    /// Commit a part once its first row waited this long, or at --rows-per-part,
    /// whichever comes first.
    #[arg(long, value_name = "DURATION", default_value = "1s")]
    pub commit_interval: String,

    /// Cut a short chunk once its oldest message waited this long.
    #[arg(long, value_name = "DURATION", default_value = "100ms")]
    pub max_latency: String,

    /// Exit 0 once no message came for this long and the broker holds nothing more for
    /// the consumer [default: run until stopped].
    #[arg(long, value_name = "DURATION")]
    pub stop_when_idle: Option<String>,

    /// The stream's columns, declared (recommended in production): a JSON list of
    /// {"name", "type", "nullable"}; messages that do not fit go to the dead letters with
    /// the reason [default: inferred from the messages, growing as fields and wider types
    /// appear; kept in OUTPUT/_stream_schema.json].
    #[arg(long, value_name = "FILE")]
    pub schema: Option<std::path::PathBuf>,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Input files, globs or folders (all of one format and schema).
    #[arg(long, short, required = true, num_args = 1.., value_name = "PATH")]
    pub input: Vec<String>,

    #[command(flatten)]
    pub out: OutputArgs,

    #[command(flatten)]
    pub query: SqlArgs,

    #[command(flatten)]
    pub engine: EngineArgs,

    /// What `AGG(x) OVER ()` covers: `chunk` (each chunk's rows, the specification's
    /// behaviour) or `global` (the whole input's rows, in two passes over the files).
    #[arg(long, value_enum, default_value = "chunk")]
    pub windows: WindowsArg,

    /// With `--windows global` on CSV or NDJSON: `auto` keeps the rows pass 1 parsed in a
    /// scratch Arrow file in the output folder (`.sluice-pass1-rows.arrow`, removed at the
    /// end; disk for about the parsed size of the input), so pass 2 does not parse the
    /// input again; `off` parses it twice and writes no scratch file.
    #[arg(long, value_enum, default_value = "auto", value_name = "WHEN")]
    pub pass1_copy: Pass1CopyArg,

    /// Input format [default: from each file's extension].
    #[arg(long, value_enum)]
    pub format: Option<InputFormat>,

    /// Keep every chunk at --chunk-size rows (no adaptive batching): per-chunk results
    /// such as z-scores are then the same on every run.
    #[arg(long)]
    pub fixed_chunks: bool,

    /// Write chunks as they complete instead of in input order (cannot be resumed).
    #[arg(long)]
    pub unordered: bool,

    /// What to do when the SQL fails on a chunk, or an input record is malformed: fail,
    /// skip, pass-through, dead-letter=DIR (malformed records go to DIR/rejects-*.ndjson).
    #[arg(long, value_name = "POLICY", default_value = "fail")]
    pub on_error: String,

    /// Continue an earlier run into the same output folder: keep its completed parts and
    /// skip the input rows they cover.
    #[arg(long)]
    pub resume: bool,

    /// Replace what an earlier run left in the output folder.
    #[arg(long, conflicts_with = "resume")]
    pub overwrite: bool,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Rows of sample data to generate.
    #[arg(long, default_value_t = 1_000_000)]
    pub rows: u64,

    /// Format of the generated input.
    #[arg(long, value_enum, default_value = "parquet")]
    pub input_format: DemoFormat,

    /// Worker threads [default: the machine's cores].
    #[arg(long, value_name = "N")]
    pub workers: Option<usize>,

    /// Seed of the random data.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// Data files or folders.
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<String>,

    /// Format [default: from each file's extension].
    #[arg(long, value_enum)]
    pub format: Option<InputFormat>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum InputFormat {
    Csv,
    Tsv,
    Parquet,
    Ndjson,
    Ipc,
}

impl InputFormat {
    pub fn name(self) -> &'static str {
        match self {
            InputFormat::Csv => "csv",
            InputFormat::Tsv => "tsv",
            InputFormat::Parquet => "parquet",
            InputFormat::Ndjson => "ndjson",
            InputFormat::Ipc => "ipc",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum WindowsArg {
    Chunk,
    Global,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Pass1CopyArg {
    Auto,
    Off,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormatArg {
    Parquet,
    Csv,
    Ipc,
}

impl From<OutputFormatArg> for sluice::OutputFormat {
    fn from(f: OutputFormatArg) -> Self {
        match f {
            OutputFormatArg::Parquet => sluice::OutputFormat::Parquet,
            OutputFormatArg::Csv => sluice::OutputFormat::Csv,
            OutputFormatArg::Ipc => sluice::OutputFormat::Ipc,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DemoFormat {
    Parquet,
    Csv,
}
