//! Humans in the loop: how long a signal takes to continue a waiting run, and what a waiting
//! run costs in memory.
//!
//! - *signal → continue, waiting in place*: a local run waits (its process holds it); a second
//!   engine on its own store handle (another process, in effect: no in-process wake-up) sends
//!   the signal; timed from the send until the run has finished.
//! - *signal → continue, parked*: a worker parked the run (slot and JavaScript engine freed);
//!   the signal from the second engine makes it due; timed until a worker has continued it to
//!   its end.
//! - *memory per waiting run*: one worker of concurrency 10 parks N runs that wait; the
//!   process's resident memory before and after, per run.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use smol_durable_boa::BoaEngine;
use smol_durable_core::store::State;
use smol_durable_core::{
    DebugProvider, DurableStore, Engine, RunRequest, SignalOptions, SubmitOptions, WaitFilter,
    WorkerOptions, WorkflowSource,
};

const WAITING: &str = "export const meta = { name: \"waiting\", description: \"waits for go\" };\nimport { waitFor } from \"workflow:extra\";\nexport default await waitFor(\"go\");\n";

fn source() -> WorkflowSource {
    WorkflowSource::inline("/bench/waiting.mjs", WAITING)
}

fn engine(store: Arc<dyn DurableStore>) -> anyhow::Result<Engine> {
    Ok(Engine::builder()
        .store(store)
        .script_engine(Arc::new(BoaEngine::new()))
        .provider(Arc::new(DebugProvider))
        .build()?)
}

/// Latencies of one shape, sorted.
pub struct Latencies(Vec<Duration>);

impl Latencies {
    pub fn percentile(&self, p: f64) -> Duration {
        let index = ((self.0.len() as f64 - 1.0) * p).round() as usize;
        self.0.get(index).copied().unwrap_or_default()
    }
}

/// Two handles on one database: the one the run executes on, and the sender's.
pub type Handles = (Arc<dyn DurableStore>, Arc<dyn DurableStore>);

async fn until_waiting(engine: &Engine, run_id: &str) -> anyhow::Result<()> {
    let filter = WaitFilter {
        run_id: Some(run_id.to_owned()),
        ..WaitFilter::default()
    };
    let started = Instant::now();
    while engine.waits(&filter).await?.is_empty() {
        anyhow::ensure!(started.elapsed() < Duration::from_secs(30), "never waited");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Past the first look at the mailbox: the wait is registered and polling.
    tokio::time::sleep(Duration::from_millis(20)).await;
    Ok(())
}

/// Signal → the run finished, for runs waiting in their own process.
pub async fn in_place(handles: Handles, rounds: usize) -> anyhow::Result<Latencies> {
    let (store, other) = handles;
    let running = engine(store)?;
    let sender = Engine::builder().store(other).build_submitter()?;
    let mut samples = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let handle = running.start(RunRequest::new(source(), json!({}))).await?;
        let run_id = handle.run_id().to_owned();
        until_waiting(&running, &run_id).await?;
        let sent = Instant::now();
        sender
            .signal(&run_id, "go", json!(1), SignalOptions::default())
            .await?;
        handle.join().await?;
        samples.push(sent.elapsed());
    }
    samples.sort();
    Ok(Latencies(samples))
}

/// Signal → a worker continued the parked run to its end.
pub async fn parked(handles: Handles, rounds: usize) -> anyhow::Result<Latencies> {
    let (store, other) = handles;
    let running = engine(Arc::clone(&store))?;
    let sender = Engine::builder().store(other).build_submitter()?;
    let worker = running.worker(WorkerOptions::new().concurrency(2));
    let mut samples = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let submitted = running
            .submit(RunRequest::new(source(), json!({})), SubmitOptions::new())
            .await?;
        let started = Instant::now();
        loop {
            let task = store.get_task(&submitted.task_id).await?;
            if task.is_some_and(|task| {
                task.state == State::Pending && task.not_before == Some(i64::MAX)
            }) {
                break;
            }
            anyhow::ensure!(started.elapsed() < Duration::from_secs(30), "never parked");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let sent = Instant::now();
        sender
            .signal(&submitted.run_id, "go", json!(1), SignalOptions::default())
            .await?;
        loop {
            let run = store.get_run(&submitted.run_id).await?;
            if run.is_some_and(|run| run.state == State::Completed) {
                break;
            }
            anyhow::ensure!(sent.elapsed() < Duration::from_secs(30), "never continued");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        samples.push(sent.elapsed());
    }
    worker.shutdown();
    worker.join().await?;
    samples.sort();
    Ok(Latencies(samples))
}

/// Resident memory per waiting run: `runs` runs parked by one worker of concurrency 10.
/// Returns (bytes per run, resident bytes before, resident bytes after).
pub async fn memory_per_waiting_run(
    store: Arc<dyn DurableStore>,
    runs: usize,
) -> anyhow::Result<(u64, u64, u64)> {
    let running = engine(Arc::clone(&store))?;
    let before = crate::js::resident_bytes();
    let mut tasks = Vec::with_capacity(runs);
    for _ in 0..runs {
        tasks.push(
            running
                .submit(RunRequest::new(source(), json!({})), SubmitOptions::new())
                .await?
                .task_id,
        );
    }
    let worker = running.worker(
        WorkerOptions::new()
            .concurrency(10)
            .poll_interval(Duration::from_millis(50)),
    );
    let started = Instant::now();
    let filter = WaitFilter::default();
    loop {
        let waiting = running.waits(&filter).await?.len();
        let mut parked = 0;
        if waiting >= runs {
            for task_id in &tasks {
                if store
                    .get_task(task_id)
                    .await?
                    .is_some_and(|task| task.not_before == Some(i64::MAX))
                {
                    parked += 1;
                }
            }
        }
        if parked == runs {
            break;
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(600),
            "only {parked} of {runs} runs parked"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let after = crate::js::resident_bytes();
    worker.shutdown();
    worker.join().await?;
    Ok((after.saturating_sub(before) / runs as u64, before, after))
}

/// SQLite handles on one file.
pub async fn sqlite_handles(path: &Path) -> anyhow::Result<Handles> {
    let one = smol_durable_sqlite::SqliteStore::open(path).await?;
    let two = smol_durable_sqlite::SqliteStore::open(path).await?;
    Ok((Arc::new(one), Arc::new(two)))
}

/// PostgreSQL handles on one fresh schema.
pub async fn postgres_handles(url: &str) -> anyhow::Result<Handles> {
    use smol_durable_postgres::{PostgresOptions, PostgresStore};
    let schema = smol_durable_core::new_id("bench_waits");
    let options = || PostgresOptions::new(url).schema(schema.as_str());
    let one = PostgresStore::connect_with(options()).await?;
    let two = PostgresStore::connect_with(options()).await?;
    Ok((Arc::new(one), Arc::new(two)))
}

/// Runs the shapes and prints the table (PostgreSQL columns when `url` is given).
pub async fn table(quick: bool, postgres: Option<&str>) -> anyhow::Result<()> {
    let (rounds, waiting_runs) = if quick { (10, 200) } else { (30, 1_000) };
    let dir = tempfile::tempdir()?;
    let sqlite_in_place = in_place(sqlite_handles(&dir.path().join("a.db")).await?, rounds).await?;
    let sqlite_parked = parked(sqlite_handles(&dir.path().join("b.db")).await?, rounds).await?;
    let (pg_in_place, pg_parked) = match postgres {
        Some(url) => (
            Some(in_place(postgres_handles(url).await?, rounds).await?),
            Some(parked(postgres_handles(url).await?, rounds).await?),
        ),
        None => (None, None),
    };
    let memory = memory_per_waiting_run(
        sqlite_handles(&dir.path().join("c.db")).await?.0,
        waiting_runs,
    )
    .await?;
    let ms = |latency: Option<&Latencies>, p: f64| {
        latency.map_or_else(
            || "n/a".to_owned(),
            |latency| format!("{:.1}", latency.percentile(p).as_secs_f64() * 1e3),
        )
    };
    println!();
    println!(
        "{:<44} {:>12} {:>12} {:>12} {:>12}",
        "waits: signal → continue (ms)", "sqlite p50", "sqlite p95", "postgres p50", "postgres p95"
    );
    for (name, sqlite, pg) in [
        (
            format!("run waiting in place, {rounds} signals"),
            &sqlite_in_place,
            pg_in_place.as_ref(),
        ),
        (
            format!("run parked by a worker, {rounds} signals"),
            &sqlite_parked,
            pg_parked.as_ref(),
        ),
    ] {
        println!(
            "{:<44} {:>12} {:>12} {:>12} {:>12}",
            name,
            ms(Some(sqlite), 0.5),
            ms(Some(sqlite), 0.95),
            ms(pg, 0.5),
            ms(pg, 0.95),
        );
    }
    let (per_run, before, after) = memory;
    println!(
        "{:<44} {:>9.1} KB   (resident {:.0} MB before, {:.0} MB with all waiting; sqlite)",
        format!("memory per waiting run, {waiting_runs} parked, concurrency 10"),
        per_run as f64 / 1024.0,
        before as f64 / 1048576.0,
        after as f64 / 1048576.0,
    );
    Ok(())
}
