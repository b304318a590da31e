//! `sluice`: the command around the sluice engine. `run` processes files with per-chunk
//! SQL into part files, `demo` runs the seed's example end to end, `inspect` describes files.
//! Exit codes: 0 success, 1 the data or the function failed, 2 bad usage, 130 stopped.

mod cli;
mod demo;
mod error;
mod inspect;
mod metrics;
mod progress;
mod resume;
mod run;
mod signals;
mod size;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Command};
use crate::error::{CliError, EXIT_OK};
use crate::run::Ui;

fn main() -> ExitCode {
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
