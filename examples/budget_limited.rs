//! A run with an output-token budget: the call that would overspend is refused before the
//! provider is asked, the run fails with "budget exhausted", and resuming it with a larger
//! allowance finishes it without paying again for what was done.
//!
//! `cargo run -p smol-durable-examples --example budget_limited`

use std::sync::Arc;

use anyhow::bail;
use serde_json::json;
use smol_durable::boa::BoaEngine;
use smol_durable::{DebugProvider, Engine, MemoryStore, ResumeOptions, RunRequest, WorkflowSource};

const WORKFLOW: &str = r#"export const meta = { name: "three-calls", description: "Three answers" };
const answers = [];
for (const topic of ["leases", "fencing", "replay"]) {
  log(`${budget.remaining()} tokens left before ${topic}`);
  answers.push(await agent(`explain ${topic}`));
}
export default { answers, spent: budget.spent() };
"#;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("three_calls.mjs");
    std::fs::write(&path, WORKFLOW)?;
    let engine = Engine::builder()
        .store(Arc::new(MemoryStore::new()))
        .script_engine(Arc::new(BoaEngine::new()))
        .provider(Arc::new(DebugProvider))
        .build()?;

    // Each debug answer ("echo: explain …", 22 JSON bytes) costs 6 output tokens; 12 pays for two.
    let request = RunRequest::new(WorkflowSource::from_file(&path)?, json!({})).budget_total(12);
    let handle = engine.start(request).await?;
    let run_id = handle.run_id().to_owned();
    match handle.join().await {
        Ok(output) => bail!("expected the budget to run out, got {}", output.result),
        Err(error) => println!("first attempt: {error}"),
    }

    let output = engine
        .resume(&run_id, ResumeOptions::new().budget_total(100))
        .await?
        .join()
        .await?;
    println!("resumed with 100 tokens: {}", output.result);
    println!(
        "output tokens billed over both attempts: {} (three calls, none paid twice)",
        output.token_usage.output_tokens
    );
    Ok(())
}
