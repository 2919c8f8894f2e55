//! `smol-durable`: run, resume and inspect durable JavaScript agent workflows.
//!
//! ```sh
//! smol-durable run examples/workflows/hello.mjs --args-name Ada
//! smol-durable history
//! smol-durable run examples/workflows/hello.mjs --resume-run run_…
//! smol-durable --db postgres://… submit examples/workflows/hello.mjs --args-name Ada
//! smol-durable --db postgres://… worker --concurrency 8
//! ```

mod cli;
mod history;
mod inspect;
mod output;
mod progress;
mod run;
mod worker;
mod workflow_args;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{bail, Context};
use clap::Parser;
use smol_durable::{CommandProvider, DebugProvider, Engine, SessionLogDir};
use smol_durable::{DurableStore, ScriptEngine};
use smol_durable_boa::{BoaEngine, IsolatedEngine, IsolationLimits};
use smol_durable_openai::OpenAiProvider;
use smol_durable_postgres::PostgresStore;
use smol_durable_sqlite::SqliteStore;

use crate::cli::{Cli, Command, ProviderArgs, ScriptEngineKind};
use crate::output::errln;

/// How a command ended, for the exit code.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Done.
    Success,
    /// Interrupted with Ctrl-C; the run stays resumable.
    Interrupted,
}

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
    let (argv, cli_args) = match workflow_args::split(argv) {
        Ok(split) => split,
        Err(error) => return fail(&error),
    };
    let cli = match Cli::try_parse_from(argv) {
        Ok(cli) => cli,
        Err(error) if !error.use_stderr() => {
            // --help and --version.
            output::stdout_text(error);
            return ExitCode::SUCCESS;
        }
        Err(error) => {
            let text = error.render().to_string();
            let text = text.trim_end().trim_start_matches("error: ");
            if error.kind() == clap::error::ErrorKind::UnknownArgument {
                errln!("error: {text}\nhint: {}", workflow_args::ARGS_FORMS);
            } else {
                errln!("error: {text}");
            }
            return ExitCode::FAILURE;
        }
    };
    if !cli_args.is_empty() && !matches!(cli.command, Command::Run(_) | Command::Submit(_)) {
        return fail(&anyhow::anyhow!(
            "--args-<name> options belong to `run` and `submit`; {}",
            workflow_args::ARGS_FORMS
        ));
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => return fail(&anyhow::Error::new(error).context("cannot start the runtime")),
    };
    let outcome = runtime.block_on(execute(cli, cli_args));
    // Every durable write was awaited inside `execute`; after a second Ctrl-C nothing may
    // hold the exit back.
    runtime.shutdown_background();
    match outcome {
        Ok(Outcome::Success) => ExitCode::SUCCESS,
        Ok(Outcome::Interrupted) => ExitCode::from(130),
        Err(error) => fail(&error),
    }
}

fn fail(error: &anyhow::Error) -> ExitCode {
    errln!("error: {error:#}");
    ExitCode::FAILURE
}

async fn execute(
    cli: Cli,
    cli_args: serde_json::Map<String, serde_json::Value>,
) -> anyhow::Result<Outcome> {
    let (providers, sessions) = match &cli.command {
        Command::Run(options) => (
            Some(&options.providers),
            options.save_raw_sessions.as_deref(),
        ),
        Command::Submit(options) => (Some(&options.providers), None),
        Command::Worker(options) => (
            Some(&options.providers),
            options.save_raw_sessions.as_deref(),
        ),
        _ => (None, None),
    };
    if let Some(providers) = providers {
        // Diagnostics (store retries, lease trouble) go to stderr; results stay on stdout.
        tracing_subscriber::fmt()
            .with_max_level(providers.log_level)
            .with_writer(std::io::stderr)
            .with_target(false)
            .init();
    }
    let lease_ttl = match &cli.command {
        Command::Worker(options) => Some(std::time::Duration::from_secs_f64(options.lease_ttl)),
        _ => None,
    };
    let store = store(cli.db.as_deref()).await?;
    let scripts = script_engine(&cli)?;
    let engine = engine(store, scripts, providers, sessions, lease_ttl)?;
    match cli.command {
        Command::Run(options) => run::run(&engine, options, cli_args).await,
        Command::Submit(options) => run::submit(&engine, options, cli_args).await,
        Command::Worker(options) => worker::worker(&engine, options).await,
        Command::History(options) => history::history(&engine, options).await,
        Command::Status { id } => inspect::status(&engine, &id).await,
        Command::Cancel { run_id } => inspect::cancel(&engine, &run_id).await,
        Command::Events { run_id, follow } => inspect::events(&engine, &run_id, follow).await,
    }
}

/// The chosen database: a `postgres://` URL, else a SQLite file (created with its directory).
async fn store(db: Option<&str>) -> anyhow::Result<Arc<dyn DurableStore>> {
    let path = match db {
        Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
            let store = PostgresStore::connect(url).await?;
            return Ok(Arc::new(store));
        }
        Some(path) => PathBuf::from(path),
        None => default_db()?,
    };
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        // Directories made here are private like the database itself.
        let mut directories = std::fs::DirBuilder::new();
        directories.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut directories, 0o700);
        directories
            .create(parent)
            .with_context(|| format!("cannot create the directory of --db {}", path.display()))?;
    }
    let store = SqliteStore::open(&path)
        .await
        .with_context(|| format!("cannot open database {}", path.display()))?;
    Ok(Arc::new(store))
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
        if openai_configured || options.agent_provider == OpenAiProvider::NAME {
            builder = builder.provider(Arc::new(OpenAiProvider::from_env()));
        }
        match options.agent_provider.as_str() {
            DebugProvider::NAME | OpenAiProvider::NAME => {}
            CommandProvider::NAME if options.agent_command.is_some() => {}
            CommandProvider::NAME => {
                bail!("--agent-provider command needs --agent-command 'program args…'")
            }
            other => bail!(
                "unknown agent provider {other:?}; built-in providers: {}, {}, {}",
                DebugProvider::NAME,
                CommandProvider::NAME,
                OpenAiProvider::NAME
            ),
        }
        builder = builder.default_provider(options.agent_provider.clone());
        for mapping in &options.model_map {
            let Some((alias, selector)) = mapping.split_once(':') else {
                bail!("--model-map {mapping:?} must be alias:selector");
            };
            if alias.is_empty() || selector.is_empty() {
                bail!("--model-map {mapping:?} must be alias:selector");
            }
            builder = builder.model_alias(alias, selector);
        }
    }
    Ok(builder.build()?)
}

/// `$XDG_STATE_HOME/smol-durable/smol-durable.db`, else `~/.local/state/smol-durable/…`.
fn default_db() -> anyhow::Result<PathBuf> {
    let state = match std::env::var_os("XDG_STATE_HOME").filter(|v| !v.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => match std::env::var_os("HOME").filter(|v| !v.is_empty()) {
            Some(home) => PathBuf::from(home).join(".local/state"),
            None => bail!("neither XDG_STATE_HOME nor HOME is set; pass --db"),
        },
    };
    Ok(state.join("smol-durable").join("smol-durable.db"))
}
