//! A host application with its own `AgentProvider` on the embedded SQLite store: run a
//! workflow, watch it fail halfway, resume it, and see that the completed call is replayed
//! instead of paid for again.
//!
//! Run with `cargo run -p smol-durable-examples --example custom_provider [DB]`; the database
//! defaults to `custom_provider.db` in the system's temporary directory.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use anyhow::Context;
use serde_json::json;
use smol_durable::boa::BoaEngine;
use smol_durable::sqlite::SqliteStore;
use smol_durable::{
    async_trait, AgentProvider, AgentRequest, AgentResponse, Engine, ProviderError, ResumeOptions,
    Usage, WorkflowSource,
};

/// The workflow: research a topic, then summarise the notes, each in its own phase.
const RESEARCH: &str = r#"export const meta = {
  name: "research",
  description: "Researches a topic and summarises the notes",
  phases: [{ title: "research" }, { title: "write" }],
};
const topic = args.topic ?? "durability";
phase("research");
const notes = await agent(`research ${topic}`);
phase("write");
const summary = await agent(`summarise ${notes}`);
export default { notes, summary };
"#;

/// Stands in for a model API. The second prompt fails the first time it is asked, like a
/// provider outage would.
#[derive(Debug, Default)]
struct FlakyModel {
    calls: AtomicUsize,
}

#[async_trait]
impl AgentProvider for FlakyModel {
    fn name(&self) -> &str {
        "flaky-model"
    }

    async fn run(&self, request: AgentRequest) -> Result<AgentResponse, ProviderError> {
        let call = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        if request.prompt.starts_with("summarise") && call == 2 {
            return Err(ProviderError::terminal("the model service is down"));
        }
        let words = request.prompt.split_whitespace().count() as u64;
        Ok(
            AgentResponse::new(json!(format!("answer to: {}", request.prompt)))
                .with_usage(Usage::tokens(words, 10)),
        )
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let model = Arc::new(FlakyModel::default());
    let path = std::env::args()
        .nth(1)
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("custom_provider.db"));
    let store = Arc::new(SqliteStore::open(&path).await?);
    println!("database: {}", path.display());
    let engine = Engine::builder()
        .store(store)
        .script_engine(Arc::new(BoaEngine::new()))
        .provider(model.clone())
        .build()?;

    let first = engine
        .run(
            WorkflowSource::inline("research.mjs", RESEARCH),
            json!({ "topic": "leases" }),
        )
        .await;
    let error = first.err().context("the first attempt should fail")?;
    println!("first attempt failed: {error}");
    // The newest run is the one that just failed.
    let run = engine
        .list_runs(&Default::default())
        .await?
        .into_iter()
        .next()
        .context("the run is stored")?;

    let output = engine
        .resume(&run.run_id, ResumeOptions::new())
        .await?
        .join()
        .await?;
    println!(
        "resumed attempt {} result: {}",
        output.attempt, output.result
    );
    println!(
        "provider calls: {} (the research call was replayed, not repeated)",
        model.calls.load(Ordering::SeqCst)
    );
    println!("output tokens billed: {}", output.token_usage.output_tokens);
    Ok(())
}
