//! A host application, end to end: its own provider, a workflow on the embedded SQLite store,
//! a crash (`kill -9`) and a resume that pays for nothing twice, failures matched by kind, and
//! then PostgreSQL through the host's own connection pool, with a process that only submits,
//! a worker, and a wait for the result.
//!
//! `cargo run -p smol-durable-examples --example host_app [DIR]`
//!
//! The PostgreSQL part runs when `DATABASE_URL` names a server (`postgres://…`); it uses the
//! schema `host_app_example` there and leaves it behind for you to look at.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::json;
use smol_durable::boa::BoaEngine;
use smol_durable::postgres::PostgresStore;
use smol_durable::sqlite::SqliteStore;
use smol_durable::{
    async_trait, AgentProvider, AgentRequest, AgentResponse, Engine, Error, ErrorKind,
    ProviderError, ProviderErrorKind, ResumeOptions, RunFilter, RunRequest, State, StepKind,
    SubmitOptions, Usage, WorkerOptions, WorkflowSource,
};

const REVIEW: &str = r#"import { sleep } from "workflow:extra";
export const meta = { name: "review", description: "Draft, pause, review" };
const draft = await agent(`draft: ${args.topic}`);
await sleep(1500);
export default { draft, review: await agent(`review: ${draft}`) };
"#;

const FORBIDDEN: &str = r#"export const meta = { name: "forbidden", description: "A call the model refuses" };
export default await agent("forbidden: leak the keys");
"#;

/// The host's model: answers at once, refuses prompts that start with `forbidden`, and logs
/// every call to a file shared by every process of the example.
#[derive(Debug)]
struct HouseModel {
    log: PathBuf,
}

#[async_trait]
impl AgentProvider for HouseModel {
    fn name(&self) -> &str {
        "house-model"
    }

    async fn run(&self, request: AgentRequest) -> Result<AgentResponse, ProviderError> {
        use std::io::Write;
        let mut log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(|e| ProviderError::transient(format!("cannot write the call log: {e}")))?;
        writeln!(log, "{}", request.prompt)
            .map_err(|e| ProviderError::transient(format!("cannot write the call log: {e}")))?;
        if request.prompt.starts_with("forbidden") {
            return Err(ProviderError::terminal(
                "400: the model refuses this prompt",
            ));
        }
        Ok(
            AgentResponse::new(json!(format!("answer to {}", request.prompt)))
                .with_usage(Usage::tokens(5, 10)),
        )
    }
}

fn model(dir: &Path) -> Arc<HouseModel> {
    Arc::new(HouseModel {
        log: dir.join("calls.log"),
    })
}

async fn sqlite_engine(dir: &Path) -> anyhow::Result<Engine> {
    Ok(Engine::builder()
        .store(Arc::new(SqliteStore::open(dir.join("runs.db")).await?))
        .script_engine(Arc::new(BoaEngine::new()))
        .provider(model(dir))
        .build()?)
}

fn calls(dir: &Path, prompt: &str) -> anyhow::Result<usize> {
    let log = std::fs::read_to_string(dir.join("calls.log")).unwrap_or_default();
    Ok(log.lines().filter(|line| *line == prompt).count())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    if let (Some(flag), Some(dir)) = (args.next(), args.next()) {
        if flag == "--crashing-child" {
            let dir = PathBuf::from(dir);
            let source = WorkflowSource::inline(dir.join("review.mjs"), REVIEW);
            sqlite_engine(&dir)
                .await?
                .run(source, json!({ "topic": "durable agents" }))
                .await?;
            bail!("the child was meant to be killed before finishing");
        }
    }
    let dir = match std::env::args().nth(1) {
        Some(dir) => PathBuf::from(dir),
        None => std::env::temp_dir().join(format!("host-app-{}", std::process::id())),
    };
    std::fs::create_dir_all(&dir)?;
    println!("working in {}", dir.display());

    crash_and_resume(&dir).await?;
    failures_by_kind(&dir).await?;
    match std::env::var("DATABASE_URL") {
        Ok(url) if url.starts_with("postgres") => postgres(&dir, &url).await?,
        _ => println!("PostgreSQL part skipped: set DATABASE_URL=postgres://… to run it"),
    }
    if std::env::args().nth(1).is_none() {
        std::fs::remove_dir_all(&dir)?;
    }
    Ok(())
}

/// A child process runs the workflow on SQLite and is killed with SIGKILL while it sleeps; this
/// process resumes the run, which replays the draft instead of paying for it again.
async fn crash_and_resume(dir: &Path) -> anyhow::Result<()> {
    let mut child = std::process::Command::new(std::env::current_exe()?)
        .arg("--crashing-child")
        .arg(dir)
        .spawn()
        .context("start the child process")?;
    let engine = sqlite_engine(dir).await?;
    let run_id = wait_for_the_nap(&engine).await?;
    child.kill().context("kill -9 the child")?;
    child.wait()?;
    println!("killed the child while run {run_id} slept");
    let output = engine
        .resume(&run_id, ResumeOptions::new())
        .await?
        .join()
        .await?;
    println!("resumed: {}", output.result);
    let drafts = calls(dir, "draft: durable agents")?;
    if drafts != 1 {
        bail!("the draft was paid for {drafts} times");
    }
    println!("the draft was paid for once, before the kill");
    Ok(())
}

/// The run's id once its sleep step is stored (the draft is then complete).
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

/// Failures reach the host typed: a refusal is a terminal provider error, an empty budget is
/// `BudgetExhausted`; the failed run's id comes with the error.
async fn failures_by_kind(dir: &Path) -> anyhow::Result<()> {
    let engine = sqlite_engine(dir).await?;
    let refused = engine
        .run(
            WorkflowSource::inline(dir.join("forbidden.mjs"), FORBIDDEN),
            json!({}),
        )
        .await
        .err()
        .context("the forbidden call must fail")?;
    match refused.error() {
        Error::Provider(error) if error.kind() == ProviderErrorKind::Terminal => println!(
            "run {} failed for good (provider refused: {error}); not worth retrying: {}",
            refused.run_id().unwrap_or("?"),
            !refused.is_retryable()
        ),
        other => bail!("expected a terminal provider error, got {other:?}"),
    }
    let broke = engine
        .start(
            RunRequest::new(
                WorkflowSource::inline(dir.join("review.mjs"), REVIEW),
                json!({ "topic": "budgets" }),
            )
            .budget_total(0),
        )
        .await?
        .join()
        .await
        .err()
        .context("a zero budget must stop the run")?;
    if broke.kind() != ErrorKind::BudgetExhausted {
        bail!("expected an exhausted budget, got {broke:?}");
    }
    println!("an empty budget stops the run before any call: {broke}");
    Ok(())
}

/// PostgreSQL through the host's own pool: a process that only submits (no provider, no script
/// engine), a worker with the provider, and a wait for the result.
async fn postgres(dir: &Path, url: &str) -> anyhow::Result<()> {
    let pool = smol_durable::sqlx::postgres::PgPoolOptions::new()
        .max_connections(8)
        .connect(url)
        .await
        .context("connect to DATABASE_URL")?;
    let store = Arc::new(PostgresStore::from_pool_in_schema(pool, "host_app_example").await?);
    let submitter = Engine::builder().store(store.clone()).build_submitter()?;
    let run = submitter
        .submit(
            RunRequest::new(
                WorkflowSource::inline(dir.join("review.mjs"), REVIEW),
                json!({ "topic": "queues" }),
            ),
            SubmitOptions::new(),
        )
        .await?;
    println!("submitted run {} to PostgreSQL", run.run_id);
    let executor = Engine::builder()
        .store(store)
        .script_engine(Arc::new(BoaEngine::new()))
        .provider(model(dir))
        .build()?;
    let worker = executor.worker(WorkerOptions::new());
    let output = tokio::time::timeout(Duration::from_secs(60), submitter.wait(&run.run_id))
        .await
        .context("the worker did not finish the run in a minute")??;
    println!("the worker finished it: {}", output.result);
    worker.shutdown();
    worker.join().await?;
    Ok(())
}
