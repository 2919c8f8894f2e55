//! A host application answering a workflow that waits for a person: it starts
//! `examples/workflows/approval.mjs` on the embedded SQLite store, lists what the run waits for
//! (what a UI would show), and sends the reviewer's answers from Rust with [`Engine::signal`]:
//! first a revision, then the approval. The second send is repeated with the same idempotency
//! key, as a retrying HTTP handler would, and stores nothing new.
//!
//! ```sh
//! cargo run -p smol-durable-examples --example approval -- /tmp/approval.db
//! ```

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use serde_json::json;
use smol_durable::boa::BoaEngine;
use smol_durable::sqlite::SqliteStore;
use smol_durable::{DebugProvider, Engine, RunRequest, SignalOptions, WaitFilter, WorkflowSource};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let db = std::env::args()
        .nth(1)
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("smol-durable-approval.db"));
    let engine = Engine::builder()
        .store(Arc::new(SqliteStore::open(&db).await?))
        .script_engine(Arc::new(BoaEngine::new()))
        .provider(Arc::new(DebugProvider))
        .build()?;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/workflows/approval.mjs");
    let source =
        WorkflowSource::from_file(script).with_context(|| format!("cannot read {script}"))?;
    let handle = engine
        .start(RunRequest::new(
            source,
            json!({ "task": "tidy the README" }),
        ))
        .await?;
    let run_id = handle.run_id().to_owned();
    let filter = WaitFilter {
        run_id: Some(run_id.clone()),
        ..WaitFilter::default()
    };
    let answers = [
        (
            "round-1",
            json!({ "decision": "revise", "comment": "three steps at most" }),
        ),
        ("round-2", json!({ "decision": "approve" })),
    ];
    for (round, (key, answer)) in answers.into_iter().enumerate() {
        // What a UI would list: the run, what it waits for, and why.
        let heading = format!("Round {}:", round + 1);
        let wait = loop {
            let waits = engine.waits(&filter).await?;
            match waits.into_iter().next() {
                Some(wait)
                    if wait
                        .description
                        .as_deref()
                        .is_some_and(|text| text.starts_with(&heading)) =>
                {
                    break wait
                }
                _ => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        };
        println!(
            "run {} waits for {:?}: {}",
            wait.run_id,
            wait.names,
            wait.description.unwrap_or_default()
        );
        let options = SignalOptions::default().idempotency_key(key);
        let receipt = engine
            .signal(&run_id, "review", answer.clone(), options.clone())
            .await?;
        println!("sent {answer}: {}", serde_json::to_string(&receipt)?);
        // A retry of the same send (a lost HTTP response, say) stores nothing new.
        let again = engine.signal(&run_id, "review", answer, options).await?;
        anyhow::ensure!(again.duplicate && again.signal_id == receipt.signal_id);
    }
    let output = handle.join().await?;
    println!("result: {}", serde_json::to_string_pretty(&output.result)?);
    anyhow::ensure!(output.result["decision"] == json!("approve"));
    Ok(())
}
