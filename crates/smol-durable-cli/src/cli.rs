//! The command line as clap sees it (workflow arguments are taken out first, see
//! [`crate::workflow_args`]).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use tracing::level_filters::LevelFilter;

/// CPU seconds a run's isolated JavaScript may use unless `--script-cpu-seconds` says.
pub const DEFAULT_SCRIPT_CPU_SECONDS: u64 = 60;
/// MiB a run's isolated JavaScript may map unless `--script-memory-mb` says.
pub const DEFAULT_SCRIPT_MEMORY_MB: u64 = 2048;

/// Durable JavaScript agent workflows: every agent call, child workflow and sleep is a step
/// stored in SQLite or PostgreSQL, so a failed, stopped or killed run resumes without paying
/// twice.
#[derive(Debug, Parser)]
#[command(name = "smol-durable", version, about)]
pub struct Cli {
    /// The database: a SQLite file path or a `postgres://` URL.
    /// Default: $XDG_STATE_HOME/smol-durable/smol-durable.db.
    #[arg(long, global = true, env = "SMOL_DURABLE_DB")]
    pub db: Option<String>,

    /// Where workflow JavaScript runs: `isolated` (a child process per run, killed when it
    /// exceeds its CPU-time or memory limit) or `in-process` (about 7 ms faster to start,
    /// bounded only by the loop-iteration and recursion limits; for trusted scripts).
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "isolated",
        env = "SMOL_DURABLE_SCRIPT_ENGINE"
    )]
    pub script_engine: ScriptEngineKind,

    /// CPU seconds one run's JavaScript may use in the isolated mode (waiting for agents,
    /// sleeps and child workflows uses none).
    #[arg(long, global = true, default_value_t = DEFAULT_SCRIPT_CPU_SECONDS, value_name = "SECONDS")]
    pub script_cpu_seconds: u64,

    /// Memory one run's JavaScript process may map in the isolated mode, in MiB.
    #[arg(long, global = true, default_value_t = DEFAULT_SCRIPT_MEMORY_MB, value_name = "MIB")]
    pub script_memory_mb: u64,

    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// Where workflow JavaScript runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ScriptEngineKind {
    /// A child process per run, with resource limits.
    Isolated,
    /// A thread of this process.
    InProcess,
}

/// What to do.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a workflow script (or resume a run of it) and print its result.
    Run(RunArgs),
    /// Queue a run of a workflow script for `worker` processes; print its run id, task id
    /// and state.
    Submit(SubmitArgs),
    /// Claim and execute submitted runs until interrupted (SIGINT, SIGTERM or SIGHUP: stop
    /// claiming, let runs finish within the grace period, hand the rest back).
    Worker(WorkerArgs),
    /// List runs, or show one run with its attempts and steps.
    History(HistoryArgs),
    /// Show a run's state (by run id or task id).
    Status {
        /// The run, or the task.
        id: String,
    },
    /// Ask a run to stop; it stays resumable.
    Cancel {
        /// The run.
        run_id: String,
    },
    /// Send a signal to a run: the wait waiting for it continues (or the next one to wait
    /// for its name); prints the receipt as JSON.
    Signal(SignalArgs),
    /// List the waits that have not ended: which run waits for what, since and until when.
    Waits(WaitsArgs),
    /// Start a new run from copies of another run's completed steps (up to a step) and
    /// continue it live, like `run` (its output and progress): with the same script or
    /// another, other arguments or another allowance. The source run is not changed.
    Fork(ForkArgs),
    /// Evaluate a run's script (or another) against the run's recorded steps, offline: no
    /// agent call, no write. Exit 0 when the script replays the run exactly; 1 at the first
    /// divergence (the call it makes now beside the recorded one) or when two replays differ.
    Replay(ReplayArgs),
    /// Serve a local web inspector of the runs (server-rendered pages and a JSON API) until
    /// SIGINT; prints its URL.
    Ui(UiArgs),
    /// Print a run's stored events as JSON lines.
    Events {
        /// The run.
        run_id: String,
        /// Keep printing new events until the run finishes.
        #[arg(long)]
        follow: bool,
    },
}

/// Which agent providers a process has, and how agents are named.
#[derive(Debug, Args)]
pub struct ProviderArgs {
    /// The provider agents use unless they name one: `debug` (offline, the default),
    /// `claude-code`, `codex`, `opencode`, `pi` (the CLI on PATH, or
    /// SMOL_DURABLE_{CLAUDE,CODEX,OPENCODE,PI}_BIN), `anthropic` (ANTHROPIC_API_KEY,
    /// ANTHROPIC_MODEL, ANTHROPIC_BASE_URL), `openai` (OPENAI_API_KEY, OPENAI_MODEL,
    /// OPENAI_BASE_URL) or `command`.
    #[arg(long, value_name = "NAME")]
    pub agent_provider: Option<String>,
    /// The program the `command` provider runs per agent call, with its arguments
    /// (shell-quoted): it reads the request as JSON on stdin and answers on stdout.
    #[arg(long, value_name = "COMMAND")]
    pub agent_command: Option<String>,
    /// A model alias: `alias:selector`, where a selector is `model`, `provider/model`, either
    /// followed by `?thinking=…` or `?provider=…` (repeatable; the last one of an alias wins).
    #[arg(long = "model-map", value_name = "ALIAS:SELECTOR", value_parser = model_alias)]
    pub model_map: Vec<(String, String)>,
    /// Tries of an agent call whose `retry` option does not say (`retry.maxAttempts`'s
    /// default), for transient and rate-limited failures; default 1: no retry.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub agent_max_attempts: Option<u32>,
    /// Wait between those tries in milliseconds (`retry.backoffMs`'s default; default 1000;
    /// a rate-limited provider's `retry-after` wins when longer).
    #[arg(long, value_name = "MS", requires = "agent_max_attempts")]
    pub agent_backoff_ms: Option<u64>,
    /// Diagnostics on stderr: off, error, warn, info, debug or trace (also none, quiet,
    /// warning; any case). `[phase]` and `[log]` lines are printed at every level.
    /// Default: warn (`worker`: info, which reports each claimed run and its provider).
    #[arg(long, value_name = "LEVEL", value_parser = log_level)]
    pub log_level: Option<LevelFilter>,
    /// The same as `--log-level debug`.
    #[arg(long)]
    pub debug: bool,
}

impl ProviderArgs {
    /// The default provider's name.
    pub fn provider(&self) -> &str {
        self.agent_provider.as_deref().unwrap_or("debug")
    }

    /// The diagnostics level in force, `default` unless the options say.
    pub fn level(&self, default: LevelFilter) -> LevelFilter {
        if self.debug {
            LevelFilter::DEBUG
        } else {
            self.log_level.unwrap_or(default)
        }
    }
}

/// `alias:selector` (split at the first colon), with smol-wf's messages.
fn model_alias(text: &str) -> Result<(String, String), String> {
    let Some((alias, selector)) = text.split_once(':') else {
        return Err("--model-map must use <alias>:<selector>".to_owned());
    };
    if alias.is_empty() {
        return Err("--model-map alias must not be empty".to_owned());
    }
    if selector.is_empty() {
        return Err("--model-map selector must not be empty".to_owned());
    }
    Ok((alias.to_owned(), selector.to_owned()))
}

fn log_level(text: &str) -> Result<LevelFilter, String> {
    Ok(match text.to_ascii_lowercase().as_str() {
        "off" | "none" | "quiet" => LevelFilter::OFF,
        "error" => LevelFilter::ERROR,
        "warn" | "warning" => LevelFilter::WARN,
        "info" => LevelFilter::INFO,
        "debug" => LevelFilter::DEBUG,
        "trace" => LevelFilter::TRACE,
        _ => {
            return Err(
                "--log-level must be one of off, error, warn, info, debug, trace".to_owned(),
            )
        }
    })
}

/// A whole number of at least 0 (`zero_allowed`) or 1, with smol-wf's messages.
fn count(flag: &'static str, zero_allowed: bool) -> impl Fn(&str) -> Result<u64, String> + Clone {
    move |text: &str| match text.parse::<u64>() {
        Ok(0) if !zero_allowed => Err(format!("{flag} must be greater than zero")),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("{flag} must be a non-negative integer")),
    }
}

fn existing_directory(text: &str) -> Result<PathBuf, String> {
    let path = PathBuf::from(text);
    if path.is_dir() {
        Ok(path)
    } else {
        Err("--save-raw-sessions must point to an existing directory".to_owned())
    }
}

/// What a new run starts with (`run` and `submit`). Workflow arguments are
/// `--args-<name> VALUE` (a string; a bare flag is `true`; a repeated name an array) and
/// `--args-from-file FILE` (a JSON object, or YAML for `.yaml`/`.yml`), merged in order.
#[derive(Debug, Args)]
pub struct NewRunArgs {
    /// The workflow script (an ES module).
    pub script: PathBuf,
    /// Output-token budget for the whole run (0 allows no agent call).
    #[arg(
        long,
        value_name = "TOKENS",
        allow_hyphen_values = true,
        value_parser = count("--budget-allowance", true)
    )]
    pub budget_allowance: Option<u64>,
    /// At most this many agent calls at once.
    #[arg(
        long,
        value_name = "N",
        allow_hyphen_values = true,
        value_parser = count("--max-parallel-agents", false)
    )]
    pub max_parallel_agents: Option<u64>,
}

/// `run`'s options: those of `smol-wf run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The script and what it starts with.
    #[command(flatten)]
    pub new_run: NewRunArgs,
    /// Providers.
    #[command(flatten)]
    pub providers: ProviderArgs,
    /// Continue this run instead of starting a new one.
    #[arg(long, value_name = "RUN_ID")]
    pub resume_run: Option<String>,
    /// Save every agent call's full result as DIR/<run_id>/<step_id>.json (DIR must exist).
    #[arg(long, value_name = "DIR", value_parser = existing_directory)]
    pub save_raw_sessions: Option<PathBuf>,
    /// Print events as JSON lines instead of the final result.
    #[arg(long)]
    pub events: bool,
    /// End the process at the first wait that finds no signal, with exit code 3: the run is
    /// handed back, waiting, for `signal … --resume`, `run --resume-run` or any worker.
    #[arg(long)]
    pub detach_on_wait: bool,
}

/// `fork`'s options. Workflow arguments (`--args-<name>`, `--args-from-file`) are laid over
/// the source run's.
#[derive(Debug, Args)]
pub struct ForkArgs {
    /// The run to fork (a root run).
    pub run_id: String,
    /// Copy only the completed steps before this one: its number in `history RUN`, or its
    /// step name or id. Default: every completed step (steps whose calls still match replay).
    #[arg(long, value_name = "N|STEP", allow_hyphen_values = true)]
    pub before_step: Option<String>,
    /// Run this script instead of the source's.
    #[arg(long, value_name = "FILE")]
    pub script: Option<PathBuf>,
    /// Output-token budget of the fork (the copied steps' tokens do not count against it;
    /// default: the source's).
    #[arg(
        long,
        value_name = "TOKENS",
        allow_hyphen_values = true,
        value_parser = count("--budget-allowance", true)
    )]
    pub budget_allowance: Option<u64>,
    /// Providers: `--agent-provider` replaces the source run's default provider (it is part of
    /// an agent step's identity, so copied steps of the old one run again); `--model-map`
    /// aliases are laid over the source run's.
    #[command(flatten)]
    pub providers: ProviderArgs,
    /// Queue the fork for `worker` processes instead of running it here; print its ids.
    #[arg(long)]
    pub submit: bool,
    /// Print events as JSON lines instead of the final result.
    #[arg(long, conflicts_with = "submit")]
    pub events: bool,
    /// Save every agent call's full result as DIR/<run_id>/<step_id>.json (DIR must exist).
    #[arg(long, value_name = "DIR", value_parser = existing_directory, conflicts_with = "submit")]
    pub save_raw_sessions: Option<PathBuf>,
}

/// `ui`'s options.
#[derive(Debug, Args)]
pub struct UiArgs {
    /// Where to listen. Any address but loopback needs a token.
    #[arg(long, value_name = "ADDR:PORT", default_value = "127.0.0.1:8719")]
    pub listen: std::net::SocketAddr,
    /// The token every request must carry (`?token=` or `Authorization: Bearer`); generated
    /// and printed with the URL when the address is not loopback and none is given.
    #[arg(long, value_name = "TOKEN", env = "SMOL_DURABLE_UI_TOKEN", value_parser = ui_token)]
    pub token: Option<String>,
    /// Offer no actions (cancel, signal, delete, fork) and open the database read-only.
    #[arg(long)]
    pub read_only: bool,
    /// Open the inspector in the desktop's browser.
    #[arg(long)]
    pub open: bool,
}

/// `--token`: at least 16 characters, letters, digits and `-._~` only, so that it travels in a
/// URL as it is and cannot be guessed short.
fn ui_token(text: &str) -> Result<String, String> {
    let safe = text
        .bytes()
        .all(|byte| byte.is_ascii_alphanumeric() || b"-._~".contains(&byte));
    if text.len() >= 16 && safe {
        Ok(text.to_owned())
    } else {
        Err("a token is at least 16 characters: letters, digits and - . _ ~".to_owned())
    }
}

/// `replay`'s options.
#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// The run to replay (a root run).
    pub run_id: String,
    /// Replay this script instead of the run's (its file, else the copy stored with it).
    #[arg(long, value_name = "FILE")]
    pub script: Option<PathBuf>,
    /// Output format: table (a readable report, the default) or json.
    #[arg(short = 'o', long = "output", value_name = "FORMAT", value_parser = crate::history::format)]
    pub output: Option<Format>,
    /// The provider and `--model-map` aliases the run was started with, when it did not store
    /// them (runs of smol-wf): they are part of the names of its agent steps. Nothing is called.
    #[command(flatten)]
    pub providers: ProviderArgs,
}

/// `signal`'s options.
#[derive(Debug, Args)]
pub struct SignalArgs {
    /// The run to signal (a root run, or a child run that waits).
    pub run_id: String,
    /// The signal's name: what the run's `waitFor` waits for.
    pub name: String,
    /// The payload as JSON text; `-` reads it from stdin. Default: null.
    #[arg(
        long,
        value_name = "JSON",
        allow_hyphen_values = true,
        conflicts_with = "data_file"
    )]
    pub data: Option<String>,
    /// Read the payload (JSON) from this file.
    #[arg(long, value_name = "FILE")]
    pub data_file: Option<PathBuf>,
    /// Sending again with the same key stores nothing and prints the first receipt
    /// (`"duplicate": true`): safe to retry.
    #[arg(long, value_name = "KEY")]
    pub idempotency_key: Option<String>,
    /// Then continue the run in this process, as `run --resume-run` does (the receipt goes to
    /// stderr, the run's result to stdout); a worker already continuing it is left to it.
    #[arg(long)]
    pub resume: bool,
    /// With --resume: print events as JSON lines instead of the final result.
    #[arg(long, requires = "resume")]
    pub events: bool,
    /// With --resume: the providers the run's agents use.
    #[command(flatten)]
    pub providers: ProviderArgs,
}

/// `waits`' options.
#[derive(Debug, Args)]
pub struct WaitsArgs {
    /// Only the waits of this run (and of the child runs of its task).
    #[arg(long, value_name = "RUN_ID")]
    pub run: Option<String>,
    /// Output format: table (the default) or json.
    #[arg(short = 'o', long = "output", value_name = "FORMAT", value_parser = crate::history::format)]
    pub output: Option<Format>,
}

/// `submit`'s options.
#[derive(Debug, Args)]
pub struct SubmitArgs {
    /// The script and what it starts with.
    #[command(flatten)]
    pub new_run: NewRunArgs,
    /// Providers (the run records which one its agents use; workers need it too).
    #[command(flatten)]
    pub providers: ProviderArgs,
    /// Attempts workers may make before the run fails for good.
    #[arg(long, value_name = "N", default_value_t = 3)]
    pub max_attempts: u32,
    /// Submitting again with the same key prints the first run instead of queueing another.
    #[arg(long, value_name = "KEY")]
    pub idempotency_key: Option<String>,
}

/// `worker`'s options.
#[derive(Debug, Args)]
pub struct WorkerArgs {
    /// Providers this worker can run agents with.
    #[command(flatten)]
    pub providers: ProviderArgs,
    /// Runs executed at once.
    #[arg(long, value_name = "N", default_value_t = 4)]
    pub concurrency: usize,
    /// After SIGINT/SIGTERM, seconds runs in flight may take to finish before they are handed
    /// back to other workers.
    #[arg(long, value_name = "SECONDS", default_value_t = 30)]
    pub shutdown_grace: u64,
    /// Save every agent call's full result as DIR/<run_id>/<step_id>.json (DIR must exist).
    #[arg(long, value_name = "DIR", value_parser = existing_directory)]
    pub save_raw_sessions: Option<PathBuf>,
    /// Seconds a killed worker's runs stay leased before another worker takes them over
    /// (renewed every third of it while the worker lives).
    #[arg(long, value_name = "SECONDS", default_value_t = 60.0, value_parser = lease_seconds)]
    pub lease_ttl: f64,
}

fn lease_seconds(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(seconds) if (0.1..=86_400.0).contains(&seconds) => Ok(seconds),
        _ => Err(format!(
            "{text:?} is not a number of seconds between 0.1 and 86400"
        )),
    }
}

/// `history`'s options (smol-wf's, with `--state` repeatable).
#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// `history delete …`.
    #[command(subcommand)]
    pub action: Option<HistoryAction>,
    /// Show this run in detail, with its attempts and steps (at most one).
    #[arg(value_name = "RUN_ID")]
    pub run_ids: Vec<String>,
    /// Output format: table (the default) or json.
    #[arg(short = 'o', long = "output", value_name = "FORMAT", value_parser = crate::history::format)]
    pub output: Option<Format>,
    /// Only runs in this state: pending, running, completed, failed or cancelled (repeatable;
    /// the states add up).
    #[arg(long, value_name = "STATE", value_parser = crate::history::state)]
    pub state: Vec<smol_durable_core::store::State>,
    /// Only runs whose workflow name contains this text (ignoring case).
    #[arg(long, value_name = "TEXT")]
    pub name: Option<String>,
    /// Only runs created at or after this time (Unix epoch milliseconds).
    #[arg(long, value_name = "EPOCH_MS", allow_hyphen_values = true, value_parser = crate::history::since)]
    pub since: Option<i64>,
    /// Only runs created at or before this time (Unix epoch milliseconds).
    #[arg(long, value_name = "EPOCH_MS", allow_hyphen_values = true, value_parser = crate::history::until)]
    pub until: Option<i64>,
    /// At most this many runs (default 50).
    #[arg(long, value_name = "N", allow_hyphen_values = true, value_parser = crate::history::limit)]
    pub limit: Option<usize>,
}

/// What `history` can do besides listing.
#[derive(Debug, Subcommand)]
pub enum HistoryAction {
    /// Delete finished root runs with everything under them (children, steps, events, ledger);
    /// runs that have not finished are never deleted.
    Delete {
        /// Delete runs in this state (repeatable): completed, failed or cancelled.
        #[arg(long, value_name = "STATE", value_parser = crate::history::state)]
        state: Vec<smol_durable_core::store::State>,
        /// Delete every finished run.
        #[arg(long)]
        all: bool,
        /// Show what would be deleted, and delete nothing.
        #[arg(long, overrides_with = "dry_run")]
        dry_run: bool,
        /// Refused: `history delete` prints fixed text.
        #[arg(short = 'o', long = "output", value_name = "FORMAT", hide = true)]
        output: Option<String>,
    },
}

/// How `history` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Aligned columns for people.
    Table,
    /// JSON for tools.
    Json,
}
