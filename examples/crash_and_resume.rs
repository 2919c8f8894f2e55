//! A run killed with SIGKILL mid-way resumes from its completed steps: the provider is not
//! called again for them.
//!
//! `cargo run -p smol-durable-examples --example crash_and_resume [DIR]`
//!
//! The example starts itself as a child process that runs a workflow on a SQLite file, kills
//! that child (`kill -9`) while the workflow sleeps after its first agent call, then resumes the
//! run in this process. Every provider call, in either process, is appended to `calls.log`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::json;
use smol_durable::boa::BoaEngine;
use smol_durable::sqlite::SqliteStore;
use smol_durable::store::{RunFilter, State, StepKind};
use smol_durable::{
    async_trait, AgentProvider, AgentRequest, AgentResponse, Engine, ProviderError, ResumeOptions,
    Usage, WorkflowSource,
};

const WORKFLOW: &str = r#"import { sleep } from "workflow:extra";
export const meta = { name: "crash-and-resume", description: "Research, nap, summarise" };
const notes = await agent("research durable execution");
await sleep(1500);
export default { notes, summary: await agent(`summarise: ${notes}`) };
"#;

/// Answers instantly and appends every prompt to a log shared by both processes.
#[derive(Debug)]
struct LoggedModel {
    log: PathBuf,
}

#[async_trait]
impl AgentProvider for LoggedModel {
    fn name(&self) -> &str {
        "logged-model"
    }

    async fn run(&self, request: AgentRequest) -> Result<AgentResponse, ProviderError> {
        use std::io::Write;
        let mut log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(|e| ProviderError::terminal(format!("cannot write the call log: {e}")))?;
        writeln!(log, "pid {}: {}", std::process::id(), request.prompt)
            .map_err(|e| ProviderError::terminal(format!("cannot write the call log: {e}")))?;
        Ok(
            AgentResponse::new(json!(format!("answer to: {}", request.prompt)))
                .with_usage(Usage::tokens(5, 10)),
        )
    }
}

async fn engine(dir: &Path) -> anyhow::Result<Engine> {
    Ok(Engine::builder()
        .store(Arc::new(SqliteStore::open(dir.join("runs.db")).await?))
        .script_engine(Arc::new(BoaEngine::new()))
        .provider(Arc::new(LoggedModel {
            log: dir.join("calls.log"),
        }))
        .build()?)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    if let (Some(flag), Some(dir)) = (args.next(), args.next()) {
        if flag == "--child" {
            // The child: run until killed.
            let dir = PathBuf::from(dir);
            let source = WorkflowSource::from_file(dir.join("flow.mjs"))?;
            engine(&dir).await?.run(source, json!({})).await?;
            bail!("the child was meant to be killed before finishing");
        }
    }
    let dir = match std::env::args().nth(1) {
        Some(dir) => PathBuf::from(dir),
        None => std::env::temp_dir().join(format!("crash-and-resume-{}", std::process::id())),
    };
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("flow.mjs"), WORKFLOW)?;
    println!("working in {}", dir.display());

    let mut child = std::process::Command::new(std::env::current_exe()?)
        .arg("--child")
        .arg(&dir)
        .spawn()
        .context("start the child process")?;
    let engine = engine(&dir).await?;
    let run_id = wait_for_the_nap(&engine).await?;
    child.kill().context("kill -9 the child")?;
    child.wait()?;
    let status = engine.status(&run_id).await?;
    println!(
        "killed the child (pid {}) while run {run_id} was {} and sleeping",
        child.id(),
        status.run.state
    );

    let output = engine
        .resume(&run_id, ResumeOptions::new())
        .await?
        .join()
        .await?;
    println!("resumed: {}", output.result);
    let log = std::fs::read_to_string(dir.join("calls.log"))?;
    println!("provider calls across both processes:\n{log}");
    let research_calls = log
        .lines()
        .filter_map(|line| line.split_once(": ").map(|(_, prompt)| prompt))
        .filter(|prompt| *prompt == "research durable execution")
        .count();
    if research_calls != 1 {
        bail!("the research call ran {research_calls} times");
    }
    println!("the research call was made once, before the kill, and replayed after it");
    if std::env::args().nth(1).is_none() {
        std::fs::remove_dir_all(&dir)?;
    }
    Ok(())
}

/// The run's id once its sleep step is stored (the first agent call is then complete).
async fn wait_for_the_nap(engine: &Engine) -> anyhow::Result<String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Some(run) = engine.list_runs(&RunFilter::roots()).await?.first() {
            let steps = engine.store().load_steps(&run.run_id).await?;
            if steps
                .iter()
                .any(|s| s.kind == StepKind::Sleep && s.state == State::Running)
            {
                return Ok(run.run_id.clone());
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    bail!("the child never reached its sleep")
}
