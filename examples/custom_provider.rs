//! A host application with its own `AgentProvider` on the embedded SQLite store: run a
//! workflow, watch it fail halfway, resume it, and see that the completed call is replayed
//! instead of paid for again.
//!
//! Run with `cargo run -p smol-durable-examples --example custom_provider [DB]`; the database
//! defaults to `custom_provider.db` in the system's temporary directory.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use anyhow::Context;
use async_trait::async_trait;
use serde_json::{json, Value};
use smol_durable::{
    AgentProvider, AgentRequest, AgentResponse, Engine, ProviderError, ResumeOptions, Usage,
};
use smol_durable_sqlite::SqliteStore;
use smol_durable_testkit::ScriptedEngine;

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
    // A workflow written against the same host calls a JavaScript workflow makes.
    let scripts = ScriptedEngine::new().workflow("research.mjs", |ctx| async move {
        let topic = ctx.args()["topic"]
            .as_str()
            .unwrap_or("durability")
            .to_owned();
        ctx.phase("research");
        let notes = ctx.agent(format!("research {topic}"), Value::Null).await?;
        ctx.phase("write");
        let summary = ctx
            .agent(
                format!("summarise {}", notes.as_str().unwrap_or_default()),
                Value::Null,
            )
            .await?;
        Ok(json!({ "notes": notes, "summary": summary }))
    });
    let model = Arc::new(FlakyModel::default());
    let path = std::env::args()
        .nth(1)
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("custom_provider.db"));
    let store = Arc::new(SqliteStore::open(&path).await?);
    println!("database: {}", path.display());
    let engine = Engine::builder()
        .store(store)
        .script_engine(Arc::new(scripts.clone()))
        .provider(model.clone())
        .build()?;

    let first = engine
        .run(scripts.source("research.mjs"), json!({ "topic": "leases" }))
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
