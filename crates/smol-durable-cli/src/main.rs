//! `smol-durable`: run, resume and inspect durable JavaScript agent workflows.
//!
//! ```sh
//! smol-durable run examples/workflows/hello.mjs --args-name Ada
//! smol-durable history
//! smol-durable run examples/workflows/hello.mjs --resume-run run_…
//! smol-durable --db postgres://… submit examples/workflows/hello.mjs --args-name Ada
//! smol-durable --db postgres://… worker --concurrency 8
//! smol-durable waits
//! smol-durable signal run_… approval --data '{"approved": true}'
//! ```

mod cli;
mod database;
mod fork;
mod history;
mod inspect;
mod output;
mod progress;
mod replay;
mod run;
mod stop_signals;
mod table;
mod ui;
mod waits;
mod worker;
mod workflow_args;

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{bail, Context};
use clap::Parser;
use smol_durable_anthropic::AnthropicProvider;
use smol_durable_boa::{BoaEngine, IsolatedEngine, IsolationLimits};
use smol_durable_core::decide::RetryPolicy;
use smol_durable_core::{CommandProvider, DebugProvider, Engine, SessionLogDir};
use smol_durable_core::{DurableStore, ScriptEngine};
use smol_durable_openai::OpenAiProvider;
use tracing::level_filters::LevelFilter;

use crate::cli::{Cli, Command, ProviderArgs, ScriptEngineKind};
use crate::database::{Access, Database};
use crate::output::errln;
use crate::workflow_args::WorkflowArgs;

/// How a command ended, for the exit code.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Done.
    Success,
    /// A run failed or was cancelled; its message is already printed.
    Failed,
    /// Stopped by this signal (the run was cancelled cooperatively and stays resumable):
    /// exit code 128 + the signal's number.
    Interrupted(i32),
    /// The run waits for a signal and this process ended (`--detach-on-wait`):
    /// [`EXIT_WAITING`].
    Waiting,
}

/// The exit code of `run --detach-on-wait` when the run stopped at a wait: neither success
/// (0), failure (1) nor an interruption (128 + signal).
pub const EXIT_WAITING: u8 = 3;

/// The hidden first argument that makes this binary the child process of the isolated script
/// engine (see `smol_durable_boa::IsolatedEngine`).
const SCRIPT_HOST_ARG: &str = "__script-host";

fn main() -> ExitCode {
    if std::env::args_os()
        .nth(1)
        .is_some_and(|arg| arg == SCRIPT_HOST_ARG)
    {
        return smol_durable_boa::serve_script_host();
    }
    let argv: Result<Vec<String>, _> = std::env::args_os().map(|arg| arg.into_string()).collect();
    let argv = match argv {
        Ok(argv) => argv,
        Err(arg) => {
            return fail(&anyhow::anyhow!(
                "argument {arg:?} is not valid UTF-8; rename the file or pass its data in a --args-from-file"
            ))
        }
    };
    let (argv, workflow_args) = match workflow_args::split(argv) {
        Ok(split) => split,
        Err(error) => return fail(&error),
    };
    // Only `run`, `submit` and `fork` take workflow arguments: only their unknown options are
    // explained as such.
    let takes_workflow_args = argv
        .iter()
        .any(|arg| arg == "run" || arg == "submit" || arg == "fork");
    let cli = match Cli::try_parse_from(argv) {
        Ok(cli) => cli,
        Err(error) => return usage_error(&error, takes_workflow_args),
    };
    if !workflow_args.is_empty()
        && !matches!(
            cli.command,
            Command::Run(_) | Command::Submit(_) | Command::Fork(_)
        )
    {
        return fail(&anyhow::anyhow!(
            "--args-<name> and --args-from-file belong to `run`, `submit` and `fork`"
        ));
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => return fail(&anyhow::Error::new(error).context("cannot start the runtime")),
    };
    let outcome = runtime.block_on(execute(cli, workflow_args));
    // After a second signal, calls may still be in flight: their agents go with this process.
    smol_durable_core::process::kill_process_groups();
    // Every durable write was awaited inside `execute`; after a second signal nothing may
    // hold the exit back.
    runtime.shutdown_background();
    match outcome {
        Ok(Outcome::Success) => ExitCode::SUCCESS,
        Ok(Outcome::Failed) => ExitCode::FAILURE,
        Ok(Outcome::Interrupted(signal)) => {
            ExitCode::from(u8::try_from(128 + signal).unwrap_or(u8::MAX))
        }
        Ok(Outcome::Waiting) => ExitCode::from(EXIT_WAITING),
        Err(error) => fail(&error),
    }
}

fn fail(error: &anyhow::Error) -> ExitCode {
    errln!("error: {error:#}");
    ExitCode::FAILURE
}

/// A command line clap refused, said the way smol-wf says it: an unknown option of `run` names
/// the forms workflow arguments take; a bad value gives just the option's own message.
fn usage_error(error: &clap::Error, takes_workflow_args: bool) -> ExitCode {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    if !error.use_stderr() {
        // --help and --version.
        output::stdout_text(error.render());
        return ExitCode::SUCCESS;
    }
    let message = match error.kind() {
        ErrorKind::UnknownArgument => match error.get(ContextKind::InvalidArg) {
            Some(ContextValue::String(token)) if takes_workflow_args => {
                format!("Unknown option: {token}. {}", workflow_args::ARGS_FORMS)
            }
            _ => rendered(error),
        },
        ErrorKind::ValueValidation => match std::error::Error::source(error) {
            Some(source) => source.to_string(),
            None => rendered(error),
        },
        _ => rendered(error),
    };
    errln!("error: {message}");
    ExitCode::FAILURE
}

fn rendered(error: &clap::Error) -> String {
    let text = error.render().to_string();
    text.trim_end().trim_start_matches("error: ").to_owned()
}

async fn execute(cli: Cli, workflow_args: WorkflowArgs) -> anyhow::Result<Outcome> {
    let (providers, sessions, access) = match &cli.command {
        Command::Run(options) => (
            Some(&options.providers),
            options.save_raw_sessions.as_deref(),
            Access::Write,
        ),
        Command::Submit(options) => (Some(&options.providers), None, Access::Write),
        Command::Fork(options) => (
            Some(&options.providers),
            options.save_raw_sessions.as_deref(),
            Access::Existing("fork"),
        ),
        Command::Replay(options) => (Some(&options.providers), None, Access::Read("replay")),
        Command::Ui(options) if options.read_only => (None, None, Access::Read("ui")),
        Command::Ui(_) => (None, None, Access::Existing("ui")),
        Command::Worker(options) => (
            Some(&options.providers),
            options.save_raw_sessions.as_deref(),
            Access::Write,
        ),
        Command::History(options) if options.action.is_some() => (None, None, Access::Write),
        Command::History(_) => (None, None, Access::Read("history")),
        Command::Status { .. } => (None, None, Access::Read("status")),
        Command::Events { .. } => (None, None, Access::Read("events")),
        Command::Cancel { .. } => (None, None, Access::Write),
        Command::Signal(options) if options.resume => {
            (Some(&options.providers), None, Access::Existing("signal"))
        }
        Command::Signal(_) => (None, None, Access::Existing("signal")),
        Command::Waits(_) => (None, None, Access::Read("waits")),
    };
    if let Some(providers) = providers {
        let default = match cli.command {
            Command::Worker(_) => LevelFilter::INFO,
            _ => LevelFilter::WARN,
        };
        // Diagnostics (store retries, lease trouble) go to stderr; results stay on stdout. A
        // closed stderr (`2>&1 | head`) loses them quietly: by default the subscriber would
        // report the failed write with `eprintln!`, which panics on that same closed stderr.
        tracing_subscriber::fmt()
            .with_max_level(providers.level(default))
            .with_writer(std::io::stderr)
            .log_internal_errors(false)
            .with_target(false)
            .init();
    }
    let lease_ttl = match &cli.command {
        Command::Worker(options) => Some(std::time::Duration::from_secs_f64(options.lease_ttl)),
        _ => None,
    };
    let database = Database::choose(cli.db.as_deref())?;
    if let Command::Fork(options) = &cli.command {
        // A queued fork, like a submitted run, only records the provider's name.
        if options.submit {
            check_provider_name(&options.providers)?;
        } else {
            check_providers(&options.providers)?;
        }
    } else if let Command::Submit(options) = &cli.command {
        // A submitter only records the provider's name: workers bring their own configuration.
        check_provider_name(&options.providers)?;
    } else if let Some(providers) = providers {
        check_providers(providers)?;
    }
    let store = database.open(access).await?;
    let scripts = script_engine(&cli)?;
    let engine = engine(store, scripts, providers, sessions, lease_ttl)?;
    let invocation = Invocation {
        database: &database,
        script_flags: script_flags(&cli),
    };
    if matches!(
        cli.command,
        Command::Run(_) | Command::Worker(_) | Command::Fork(_)
    ) {
        remove_stale_worktrees().await;
    }
    match cli.command {
        Command::Run(options) => run::run(&engine, &options, workflow_args, &invocation).await,
        Command::Submit(options) => run::submit(&engine, &options, workflow_args).await,
        Command::Fork(options) => fork::fork(&engine, &options, workflow_args, &invocation).await,
        Command::Replay(options) => replay::replay(&engine, &options).await,
        Command::Ui(options) => ui::ui(&engine, &options, &invocation).await,
        Command::Worker(options) => worker::worker(&engine, &options).await,
        Command::History(options) => history::history(&engine, options).await,
        Command::Status { id } => inspect::status(&engine, &id, &database).await,
        Command::Cancel { run_id } => inspect::cancel(&engine, &run_id).await,
        Command::Events { run_id, follow } => inspect::events(&engine, &run_id, follow).await,
        Command::Signal(options) => waits::signal(&engine, &options, &invocation).await,
        Command::Waits(options) => waits::waits(&engine, &options).await,
    }
}

/// How this process was started: what a printed resume command must repeat.
#[derive(Debug)]
pub struct Invocation<'a> {
    /// The database.
    pub database: &'a Database,
    /// The script-engine options that differ from their defaults, as flags.
    pub script_flags: Vec<String>,
}

/// The `--script-*` options given other values than their defaults: a command that continues
/// a run needs them (a run that failed on a raised CPU limit fails again under the default).
fn script_flags(cli: &Cli) -> Vec<String> {
    let mut flags = Vec::new();
    if cli.script_engine != ScriptEngineKind::Isolated {
        flags.extend(["--script-engine".to_owned(), "in-process".to_owned()]);
    }
    if cli.script_cpu_seconds != cli::DEFAULT_SCRIPT_CPU_SECONDS {
        flags.extend([
            "--script-cpu-seconds".to_owned(),
            cli.script_cpu_seconds.to_string(),
        ]);
    }
    if cli.script_memory_mb != cli::DEFAULT_SCRIPT_MEMORY_MB {
        flags.extend([
            "--script-memory-mb".to_owned(),
            cli.script_memory_mb.to_string(),
        ]);
    }
    flags
}

/// Removes the agent worktrees (`isolation: "worktree"`) that killed processes left in the
/// repository of the current directory, before this process makes new ones.
async fn remove_stale_worktrees() {
    let Ok(cwd) = std::env::current_dir() else {
        return;
    };
    match smol_durable_core::worktree::remove_stale_worktrees(&cwd).await {
        Ok(removed) if !removed.branches.is_empty() => tracing::info!(
            worktrees = removed.worktrees.len(),
            branches = removed.branches.len(),
            "removed agent worktrees left behind by killed processes"
        ),
        Ok(_) => {}
        Err(error) => tracing::warn!(%error, "cannot remove stale agent worktrees"),
    }
}

/// The providers the CLI has built in.
const PROVIDERS: [&str; 8] = [
    DebugProvider::NAME,
    CommandProvider::NAME,
    OpenAiProvider::NAME,
    AnthropicProvider::NAME,
    smol_durable_agents::NAMES[0],
    smol_durable_agents::NAMES[1],
    smol_durable_agents::NAMES[2],
    smol_durable_agents::NAMES[3],
];

/// A provider name a run may record: a built-in one (smol-wf's message otherwise).
fn check_provider_name(options: &ProviderArgs) -> anyhow::Result<()> {
    let name = options.provider();
    if !PROVIDERS.contains(&name) {
        bail!("Unknown agent provider: {name}");
    }
    Ok(())
}

/// The default provider, and what it needs to run in this process.
fn check_providers(options: &ProviderArgs) -> anyhow::Result<()> {
    check_provider_name(options)?;
    if options.provider() == CommandProvider::NAME && options.agent_command.is_none() {
        bail!("--agent-provider command needs --agent-command 'program args…'");
    }
    Ok(())
}

/// The JavaScript engine the options choose.
fn script_engine(cli: &Cli) -> anyhow::Result<Arc<dyn ScriptEngine>> {
    Ok(match cli.script_engine {
        ScriptEngineKind::InProcess => Arc::new(BoaEngine::new()),
        ScriptEngineKind::Isolated => {
            if cli.script_cpu_seconds == 0 || cli.script_memory_mb == 0 {
                bail!("--script-cpu-seconds and --script-memory-mb must be at least 1");
            }
            let program = std::env::current_exe().context(
                "cannot find this program to run scripts isolated (use --script-engine in-process)",
            )?;
            let limits = IsolationLimits::default()
                .cpu_seconds(cli.script_cpu_seconds)
                .memory_bytes(cli.script_memory_mb.saturating_mul(1024 * 1024));
            Arc::new(
                IsolatedEngine::new(program)
                    .args([SCRIPT_HOST_ARG])
                    .limits(limits),
            )
        }
    })
}

/// The engine on the store, with the built-in providers the options configure.
fn engine(
    store: Arc<dyn DurableStore>,
    scripts: Arc<dyn ScriptEngine>,
    providers: Option<&ProviderArgs>,
    sessions: Option<&std::path::Path>,
    lease_ttl: Option<std::time::Duration>,
) -> anyhow::Result<Engine> {
    let mut builder = Engine::builder()
        .store(store)
        .script_engine(scripts)
        .provider(Arc::new(DebugProvider));
    if let Some(ttl) = lease_ttl {
        builder = builder.lease_ttl(ttl);
    }
    if let Some(dir) = sessions {
        builder = builder.session_log_sink(Arc::new(SessionLogDir::new(dir)));
    }
    if let Some(options) = providers {
        if let Some(command_line) = &options.agent_command {
            let words = shlex::split(command_line)
                .filter(|words| !words.is_empty())
                .with_context(|| {
                    format!(
                        "--agent-command {command_line:?} is not a command line (check its quotes)"
                    )
                })?;
            let (program, args) = words.split_first().context("empty --agent-command")?;
            builder = builder.provider(Arc::new(CommandProvider::new(
                program.clone(),
                args.to_vec(),
            )));
        }
        let openai_configured = ["OPENAI_BASE_URL", "OPENAI_API_KEY"]
            .iter()
            .any(|name| std::env::var_os(name).is_some_and(|v| !v.is_empty()));
        if openai_configured || options.provider() == OpenAiProvider::NAME {
            builder = builder.provider(Arc::new(OpenAiProvider::from_env()));
        }
        let anthropic_configured = ["ANTHROPIC_BASE_URL", "ANTHROPIC_API_KEY"]
            .iter()
            .any(|name| std::env::var_os(name).is_some_and(|v| !v.is_empty()));
        if anthropic_configured || options.provider() == AnthropicProvider::NAME {
            builder = builder.provider(Arc::new(AnthropicProvider::from_env()));
        }
        // The coding-agent CLIs cost nothing until a call runs one.
        for provider in smol_durable_agents::all() {
            builder = builder.provider(provider);
        }
        // A submitter records a provider it need not have (workers bring theirs).
        if builder.has_provider(options.provider()) {
            builder = builder.default_provider(options.provider());
        }
        for (alias, selector) in &options.model_map {
            builder = builder.model_alias(alias, selector);
        }
        if let Some(max_tries) = options.agent_max_attempts {
            builder = builder.default_agent_retry(RetryPolicy {
                max_tries,
                backoff_ms: options.agent_backoff_ms.unwrap_or(1_000),
            });
        }
    }
    Ok(builder.build()?)
}
