//! A victim process: runs one workflow (or resumes one run) to completion, logging every
//! provider call before it is answered, so the driver can count calls a kill cut short.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use clap::Args;
use serde_json::Value;
use smol_durable_boa::BoaEngine;
use smol_durable_core::{
    AgentProvider, AgentRequest, AgentResponse, DebugProvider, Engine, ProviderError,
    ResumeOptions, RunRequest, WorkflowSource,
};

/// Options of `smol-durable-torture victim`.
#[derive(Debug, Args)]
pub(crate) struct VictimOptions {
    /// The database: a SQLite file or a `postgres://` URL.
    #[arg(long)]
    db: String,
    /// The PostgreSQL schema the drive uses.
    #[arg(long)]
    pg_schema: Option<String>,
    /// The provider call log (appended to).
    #[arg(long)]
    log: PathBuf,
    /// Start this workflow (a file under `workflows/`).
    #[arg(long, conflicts_with = "resume")]
    start: Option<String>,
    /// The new run's args, as JSON.
    #[arg(long, default_value = "{}")]
    args: String,
    /// Resume this run.
    #[arg(long)]
    resume: Option<String>,
    /// Fraction of store operations that fail retryably (half of them after committing).
    #[arg(long, default_value_t = 0.0)]
    fault_rate: f64,
    /// Seed of the injected faults (mixed with the process id).
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

/// The `debug` provider, logging `step_id <TAB> attempt <TAB> pid <TAB> run_id <TAB> prompt`
/// before each answer and
/// taking a few milliseconds, so kills land in the middle of calls.
#[derive(Debug)]
struct LoggingProvider {
    log: PathBuf,
}

#[async_trait]
impl AgentProvider for LoggingProvider {
    fn name(&self) -> &str {
        DebugProvider::NAME
    }

    async fn run(&self, request: AgentRequest) -> Result<AgentResponse, ProviderError> {
        // The prompt as a JSON string: one line whatever it holds.
        let line = format!(
            "{}\t{}\t{}\t{}\t{}\n",
            request.step_id,
            request.fence,
            std::process::id(),
            request.run_id,
            Value::String(request.prompt.clone())
        );
        // One short O_APPEND write: whole or absent, and it survives the process being killed.
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .and_then(|mut file| file.write_all(line.as_bytes()))
            .map_err(|error| ProviderError::terminal(format!("cannot log the call: {error}")))?;
        tokio::time::sleep(Duration::from_millis(fastrand::u64(2..30))).await;
        DebugProvider.run(request).await
    }
}

pub(crate) async fn run(options: VictimOptions) -> anyhow::Result<()> {
    let store = crate::stores::open_with_faults(
        &options.db,
        options.pg_schema.as_deref(),
        options.fault_rate,
        options.seed,
    )
    .await?;
    let engine = Engine::builder()
        .store(store)
        .script_engine(Arc::new(BoaEngine::new()))
        .provider(Arc::new(LoggingProvider { log: options.log }))
        .lease_ttl(Duration::from_secs(5))
        .build()?;
    let handle = match (&options.start, &options.resume) {
        (Some(workflow), None) => {
            let args: Value = serde_json::from_str(&options.args).context("--args is not JSON")?;
            let source = WorkflowSource::from_file(crate::workflows_dir().join(workflow))?;
            engine.start(RunRequest::new(source, args)).await?
        }
        (None, Some(run_id)) => engine.resume(run_id, ResumeOptions::new()).await?,
        _ => anyhow::bail!("give --start WORKFLOW or --resume RUN_ID"),
    };
    // The driver learns the run id from this first line before it starts killing.
    let mut stdout = std::io::stdout();
    writeln!(stdout, "{}", handle.run_id())?;
    stdout.flush()?;
    handle.join().await?;
    Ok(())
}
