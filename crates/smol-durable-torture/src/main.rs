//! Crash torture for smol-durable.
//!
//! `drive` runs a set of workflows (sequential calls, a parallel fan-out, child workflows,
//! durable sleeps, schema outputs, waits for signals that a `signaller` process sends) in
//! `victim` processes, SIGKILLs them (and the signaller) at random moments,
//! resumes each run in a new process until it completes, and checks after every kill and at the
//! end that nothing durable was lost or repeated:
//!
//! - the final output equals an uninterrupted run's output;
//! - no completed step row ever changed after completion;
//! - exactly one `agent_step` ledger row per completed agent step;
//! - provider calls per step ≤ 1 + the interruptions that hit the step while its call ran;
//! - nothing is left `running` (run, child run, task, attempt or step) once the run completed;
//! - each signal is stored once, consumed at most once, by the wait step whose result names it,
//!   and none is lost (all consumed once the run completed).
//!
//! ```text
//! smol-durable-torture drive --db /tmp/torture.db --runs 60 --kills-per-run 4
//! smol-durable-torture drive --db postgres://user@127.0.0.1:5432/db --fault-rate 0.1
//! ```
//!
//! It prints one summary row per drive and exits non-zero when any invariant was violated.

mod checks;
mod driver;
mod signaller;
mod stores;
mod victim;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "smol-durable-torture",
    about = "Kill workflow processes at random and check every durability invariant"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run workflows in victim processes, kill them at random moments, resume, check.
    Drive(driver::DriveOptions),
    /// One workflow process (started by `drive`): starts or resumes a run, to completion.
    Victim(victim::VictimOptions),
    /// One signalling process (started by `drive`): sends a `waits.mjs` run its ticks.
    Signaller(signaller::SignallerOptions),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = match cli.command {
        Command::Drive(options) => runtime.block_on(driver::drive(options)).map(|summary| {
            println!("{}", driver::Summary::header());
            println!("{}", summary.row());
            for violation in &summary.violations {
                println!("violation: {violation}");
            }
            summary.violations.is_empty()
        }),
        Command::Victim(options) => runtime.block_on(victim::run(options)).map(|()| true),
        Command::Signaller(options) => runtime.block_on(signaller::run(options)).map(|()| true),
    };
    match outcome {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// The workflows every drive runs, in turn (files under `workflows/`).
pub(crate) const WORKFLOWS: [&str; 6] = [
    "sequential.mjs",
    "fanout.mjs",
    "children.mjs",
    "sleeps.mjs",
    "schema.mjs",
    "waits.mjs",
];

/// The workflow that waits for the signaller's ticks.
pub(crate) const WAITS_WORKFLOW: &str = "waits.mjs";

/// Where the workflow files are.
pub(crate) fn workflows_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("workflows")
}
