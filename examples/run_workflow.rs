//! Runs a JavaScript workflow on the embedded SQLite store with the offline `debug` provider
//! ([`DebugProvider`]: `echo: <prompt>`, or a value generated from a `schema`).
//!
//! ```sh
//! cargo run -p smol-durable-examples --example run_workflow -- examples/workflows/hello.mjs
//! cargo run -p smol-durable-examples --example run_workflow -- examples/workflows/hello.mjs --resume RUN_ID
//! ```
//!
//! The database defaults to `smol-durable-example.db` in the system's temporary directory
//! (`SMOL_DURABLE_DB` overrides it). Run it twice with `--resume` and the id it printed: the
//! completed run returns its stored result without calling anything.

use std::sync::Arc;

use anyhow::{bail, Context};
use serde_json::json;
use smol_durable::boa::BoaEngine;
use smol_durable::sqlite::SqliteStore;
use smol_durable::{DebugProvider, Engine, ResumeOptions, RunRequest, WorkflowSource};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let script = args
        .next()
        .context("usage: run_workflow <script.mjs> [--resume RUN_ID]")?;
    let resume = match (args.next().as_deref(), args.next()) {
        (Some("--resume"), Some(run_id)) => Some(run_id),
        (None, _) => None,
        _ => bail!("usage: run_workflow <script.mjs> [--resume RUN_ID]"),
    };
    let db = std::env::var_os("SMOL_DURABLE_DB")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("smol-durable-example.db"));
    let engine = Engine::builder()
        .store(Arc::new(SqliteStore::open(&db).await?))
        .script_engine(Arc::new(BoaEngine::new()))
        .provider(Arc::new(DebugProvider))
        .build()?;
    eprintln!("database: {}", db.display());
    let output = match resume {
        Some(run_id) => {
            engine
                .resume(&run_id, ResumeOptions::new())
                .await?
                .join()
                .await?
        }
        None => {
            let source = WorkflowSource::from_file(&script)
                .with_context(|| format!("cannot read {script}"))?;
            let cwd = std::env::current_dir()?.display().to_string();
            let request = RunRequest::new(source, json!({ "name": "Ada" })).cwd(cwd);
            engine.start(request).await?.join().await?
        }
    };
    println!(
        "run {}: {}",
        output.run_id,
        serde_json::to_string_pretty(&output.result)?
    );
    eprintln!("tokens: {:?}", output.token_usage);
    Ok(())
}
