//! Engine overhead benchmarks. Run with
//! `cargo run --release -p smol-durable-benches` (add `-- --quick` for a short run).
//!
//! Each scenario runs workflows whose provider answers at once, so the numbers are the
//! engine's own cost per durable step (claim, complete, ledger, events) on a given store.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use smol_durable::{DurableStore, Engine, MemoryStore, ResumeOptions};
use smol_durable_testkit::{ScriptedEngine, ScriptedProvider};

struct Row {
    scenario: &'static str,
    store: &'static str,
    steps: usize,
    elapsed: Duration,
}

fn scripts() -> ScriptedEngine {
    ScriptedEngine::new().workflow("bench.mjs", |ctx| async move {
        let steps = ctx.args()["steps"].as_u64().unwrap_or(10);
        let mut last = Value::Null;
        for i in 0..steps {
            last = ctx.agent(format!("step {i}"), Value::Null).await?;
        }
        Ok(last)
    })
}

fn engine(store: Arc<dyn DurableStore>, scripts: &ScriptedEngine) -> anyhow::Result<Engine> {
    Ok(Engine::builder()
        .store(store)
        .script_engine(Arc::new(scripts.clone()))
        .provider(Arc::new(ScriptedProvider::new("bench")))
        .build()?)
}

async fn sequential(
    store: Arc<dyn DurableStore>,
    steps: u64,
) -> anyhow::Result<(Duration, String, Engine)> {
    let scripts = scripts();
    let engine = engine(store, &scripts)?;
    let started = Instant::now();
    let output = engine
        .run(scripts.source("bench.mjs"), json!({ "steps": steps }))
        .await?;
    Ok((started.elapsed(), output.run_id, engine))
}

async fn concurrent(
    store: Arc<dyn DurableStore>,
    runs: usize,
    steps: u64,
) -> anyhow::Result<Duration> {
    let scripts = scripts();
    let engine = engine(store, &scripts)?;
    let started = Instant::now();
    let all = (0..runs).map(|_| engine.run(scripts.source("bench.mjs"), json!({ "steps": steps })));
    for output in futures::future::join_all(all).await {
        output?;
    }
    Ok(started.elapsed())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let quick = std::env::args().any(|arg| arg == "--quick");
    let steps: u64 = if quick { 200 } else { 2_000 };
    let mut rows = Vec::new();

    let memory: Arc<dyn DurableStore> = Arc::new(MemoryStore::new());
    let (elapsed, run_id, engine) = sequential(Arc::clone(&memory), steps).await?;
    rows.push(Row {
        scenario: "sequential run",
        store: "memory",
        steps: steps as usize,
        elapsed,
    });
    let started = Instant::now();
    engine
        .resume(&run_id, ResumeOptions::new())
        .await?
        .join()
        .await?;
    rows.push(Row {
        scenario: "resume of completed run",
        store: "memory",
        steps: 1,
        elapsed: started.elapsed(),
    });

    let runs = if quick { 20 } else { 100 };
    let elapsed = concurrent(Arc::new(MemoryStore::new()), runs, 10).await?;
    rows.push(Row {
        scenario: "concurrent runs x 10 steps",
        store: "memory",
        steps: runs * 10,
        elapsed,
    });

    println!(
        "{:<28} {:<8} {:>8} {:>12} {:>12}",
        "scenario", "store", "steps", "total ms", "µs/step"
    );
    for row in rows {
        let micros = row.elapsed.as_secs_f64() * 1e6 / row.steps as f64;
        println!(
            "{:<28} {:<8} {:>8} {:>12.1} {:>12.1}",
            row.scenario,
            row.store,
            row.steps,
            row.elapsed.as_secs_f64() * 1e3,
            micros
        );
    }
    Ok(())
}
