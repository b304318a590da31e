//! `sluice`: the command around the sluice engine. `run` processes files with per-chunk
//! SQL into part files, `stream` does it for a broker stream, `demo` runs the seed's example
//! end to end, `inspect` describes files.
//! Exit codes: 0 success, 1 the data or the function failed, 2 bad usage, 130 stopped.

mod cli;
mod demo;
mod error;
mod inspect;
mod metrics;
mod progress;
mod run;
mod settings;
mod signals;
mod size;
mod stream;
mod ui;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Command};
use crate::error::{CliError, EXIT_OK};
use crate::ui::Ui;

fn main() -> ExitCode {
    keep_freed_buffers();
    let cli = Cli::parse();
    let ui = Ui {
        quiet: cli.quiet,
        verbose: cli.verbose,
    };
    if let Err(e) = signals::install() {
        ui.note(format!("signals will not stop runs cleanly: {e}"));
    }
    let result = match cli.command {
        Command::Run(args) => run::run(*args, ui),
        Command::Demo(args) => demo::demo(args, ui),
        Command::Inspect(args) => inspect::inspect(args),
        Command::Stream(args) => stream::stream(*args, ui),
    };
    match result {
        Ok(()) => ExitCode::from(EXIT_OK),
        Err(error) => {
            report(&error, ui);
            ExitCode::from(error.exit_code())
        }
    }
}

/// One line on stderr; with `--verbose`, the chain of causes below it.
fn report(error: &CliError, ui: Ui) {
    if matches!(error, CliError::Interrupted) && !ui.verbose {
        // The run already said what it kept.
        return;
    }
    eprintln!("error: {}", error.one_line());
    if ui.verbose {
        let chain = error.chain();
        if chain.len() > 1 {
            eprintln!("caused by:");
            for (depth, cause) in chain.iter().enumerate().skip(1) {
                eprintln!("  {depth}: {cause}");
            }
        }
    }
}

/// glibc hands every freed buffer over 128 KiB back to the kernel, so each chunk's column
/// buffers came back as fresh zero-filled pages: page faults were a third of the CPU of a
/// Parquet run with SQL. Buffers up to 32 MiB now stay in the heap, and each arena keeps up
/// to 16 MiB free, for ~6 MB more peak RSS (measured on 10M rows of Parquet with the seed's
/// SQL: 1.2 s -> 1.0 s; 2.2 GB of CSV at a 256 MB budget: 288 -> 294 MB peak RSS).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn keep_freed_buffers() {
    // SAFETY: mallopt only sets allocator parameters; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 16 << 20);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn keep_freed_buffers() {}
