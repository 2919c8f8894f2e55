//! The F2 shapes on PostgreSQL: per-step time, transactions and WAL flushes.
//!
//! Each scenario gets a fresh database on the server; transactions are that database's
//! `xact_commit` (every statement outside a transaction is one, reads included) and WAL syncs
//! are the cluster's `pg_stat_wal.wal_sync`, both read after the scenario's pools are closed so
//! every backend has flushed its statistics. Use a throwaway cluster (`scripts/bench` starts
//! one) so nothing else writes WAL meanwhile.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::json;
use smol_durable_core::store::{RunFilter, State};
use smol_durable_core::{
    DurableStore, Engine, ResumeOptions, RunRequest, StoreAdmin, SubmitOptions, WorkerOptions,
};
use smol_durable_postgres::{PostgresOptions, PostgresStore};
use smol_durable_testkit::{ScriptedEngine, ScriptedProvider};
use sqlx::{AssertSqlSafe, Row as _};

/// One line of the table.
pub struct PgRow {
    pub scenario: String,
    /// Steps the counters cover.
    pub steps: u64,
    /// Steps the timing covers, and how long they took.
    pub timed_steps: u64,
    pub elapsed: Duration,
    pub transactions: i64,
    pub wal_syncs: i64,
}

/// What a scenario body reports: steps executed, steps timed and their time, and transactions
/// it made only to observe progress (taken out of the count).
pub(crate) struct Outcome {
    pub(crate) steps: u64,
    pub(crate) timed_steps: u64,
    pub(crate) elapsed: Duration,
    pub(crate) uncounted: i64,
}

impl Outcome {
    fn all_timed(steps: u64, elapsed: Duration) -> Self {
        Self {
            steps,
            timed_steps: steps,
            elapsed,
            uncounted: 0,
        }
    }
}

/// The server the tables run on, and a connection to its default database.
pub(crate) struct Server {
    url: String,
    admin: PostgresStore,
}

impl Server {
    /// Connects to the server at `url`.
    pub(crate) async fn connect(url: &str) -> anyhow::Result<Self> {
        Ok(Self {
            url: url.to_owned(),
            admin: store(url).await?,
        })
    }

    async fn counters(&self, database: &str) -> anyhow::Result<(i64, i64)> {
        // Statistics are read from a snapshot; clear it so the numbers are current.
        sqlx::query("SELECT pg_stat_clear_snapshot()")
            .execute(self.admin.pool())
            .await?;
        let row = sqlx::query(
            "SELECT (SELECT xact_commit FROM pg_stat_database WHERE datname = $1), \
             (SELECT wal_sync FROM pg_stat_wal)",
        )
        .bind(database)
        .fetch_one(self.admin.pool())
        .await?;
        Ok((
            row.try_get::<Option<i64>, _>(0)?.unwrap_or(0),
            row.try_get::<Option<i64>, _>(1)?.unwrap_or(0),
        ))
    }

    /// A new, empty database `name` (dropped first when it exists); its URL.
    pub(crate) async fn fresh_database(&self, name: &str) -> anyhow::Result<String> {
        sqlx::query(AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name}")))
            .execute(self.admin.pool())
            .await?;
        sqlx::query(AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(self.admin.pool())
            .await?;
        let (server, _) = self.url.rsplit_once('/').context("a URL with a database")?;
        Ok(format!("{server}/{name}"))
    }
}

/// A store on `url` with room for the benches' concurrency.
pub(crate) async fn store(url: &str) -> anyhow::Result<PostgresStore> {
    Ok(PostgresStore::connect_with(PostgresOptions::new(url).max_connections(16)).await?)
}

pub(crate) fn engine(store: &PostgresStore, scripts: &ScriptedEngine) -> anyhow::Result<Engine> {
    Ok(Engine::builder()
        .store(Arc::new(store.clone()) as Arc<dyn DurableStore>)
        .script_engine(Arc::new(scripts.clone()))
        .provider(Arc::new(ScriptedProvider::new("bench")))
        .build()?)
}

/// Prepares a scenario's database (not measured).
pub(crate) type Setup = dyn Fn(String) -> futures::future::BoxFuture<'static, anyhow::Result<()>>;

/// Runs one scenario on a fresh database and measures it.
async fn measure<F, Fut>(
    server: &Server,
    name: &str,
    setup: Option<&Setup>,
    body: F,
) -> anyhow::Result<PgRow>
where
    F: FnOnce(String) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Outcome>>,
{
    let database = format!("bench_{}", name.replace([' ', '-', '×'], "_"));
    let url = server.fresh_database(&database).await?;
    if let Some(setup) = setup {
        setup(url.clone()).await?;
    }
    // Migrations and setup are not part of the measurement; let their backends report.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (tx_before, wal_before) = server.counters(&database).await?;
    let outcome = body(url).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (tx_after, wal_after) = server.counters(&database).await?;
    Ok(PgRow {
        scenario: name.to_owned(),
        steps: outcome.steps,
        timed_steps: outcome.timed_steps,
        elapsed: outcome.elapsed,
        transactions: tx_after - tx_before - outcome.uncounted,
        wal_syncs: wal_after - wal_before,
    })
}

pub(crate) fn bench_scripts(fail_at_end: bool) -> ScriptedEngine {
    ScriptedEngine::new().workflow("bench.mjs", move |ctx| async move {
        let steps = ctx.args()["steps"].as_u64().unwrap_or(10);
        let mut last = serde_json::Value::Null;
        for i in 0..steps {
            last = ctx
                .agent(format!("step {i}"), serde_json::Value::Null)
                .await?;
        }
        if fail_at_end && ctx.args()["failAtEnd"].as_bool().unwrap_or(false) {
            return Err(smol_durable_core::ScriptError::thrown(
                "stopping so the run can be resumed",
            ));
        }
        Ok(last)
    })
}

/// A sequential run of `steps` agent steps in one process.
pub(crate) async fn sequential(url: String, steps: u64) -> anyhow::Result<Outcome> {
    let scripts = bench_scripts(false);
    let store = store(&url).await?;
    let engine = engine(&store, &scripts)?;
    // A short run first, so the timed one finds its connections open and statements prepared,
    // as a long-lived process does.
    let warm_up = 20;
    engine
        .run(scripts.source("bench.mjs"), json!({ "steps": warm_up }))
        .await?;
    let started = Instant::now();
    engine
        .run(scripts.source("bench.mjs"), json!({ "steps": steps }))
        .await?;
    let elapsed = started.elapsed();
    store.pool().close().await;
    Ok(Outcome {
        steps: steps + warm_up,
        timed_steps: steps,
        elapsed,
        uncounted: 0,
    })
}

/// Setup of the concurrent scenario: `runs` submitted runs of 10 steps.
async fn submit_runs(url: String, runs: u64) -> anyhow::Result<()> {
    let scripts = bench_scripts(false);
    let submitter = store(&url).await?;
    let submit_engine = engine(&submitter, &scripts)?;
    for _ in 0..runs {
        let request = RunRequest::new(scripts.source("bench.mjs"), json!({ "steps": 10 }));
        submit_engine.submit(request, SubmitOptions::new()).await?;
    }
    submitter.pool().close().await;
    Ok(())
}

/// Twice `runs` submitted runs executed by `workers` workers (each its own pool), `runs` at a
/// time: the first half warms the pools up, the second is timed (steady state). The
/// completion polls are reported so they can be taken out of the transaction count.
async fn concurrent(url: String, runs: u64, workers: u64) -> anyhow::Result<Outcome> {
    let scripts = bench_scripts(false);
    let submitter = store(&url).await?;
    let mut stores = Vec::new();
    let mut handles = Vec::new();
    let started = Instant::now();
    let per_worker = usize::try_from(runs.div_ceil(workers.max(1))).unwrap_or(1);
    for _ in 0..workers {
        let store = store(&url).await?;
        let worker = engine(&store, &scripts)?.worker(
            WorkerOptions::new()
                .concurrency(per_worker)
                .poll_interval(Duration::from_secs(1)),
        );
        stores.push(store);
        handles.push(worker);
    }
    let mut polls = 0;
    let done_filter = RunFilter {
        states: vec![State::Completed],
        roots_only: true,
        ..RunFilter::default()
    };
    let mut timed_from = None;
    loop {
        polls += 1;
        let done = submitter.list_runs(&done_filter).await?.len() as u64;
        if timed_from.is_none() && done >= runs {
            timed_from = Some((Instant::now(), done));
        }
        if done == 2 * runs {
            break;
        }
        if started.elapsed() > Duration::from_secs(600) {
            bail!("only {done} of {} runs completed", 2 * runs);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (timed_start, done_then) = timed_from.context("the first half never completed")?;
    let elapsed = timed_start.elapsed();
    for worker in handles {
        worker.shutdown();
        worker.join().await?;
    }
    for store in stores {
        store.pool().close().await;
    }
    submitter.pool().close().await;
    Ok(Outcome {
        steps: 2 * runs * 10,
        timed_steps: (2 * runs - done_then) * 10,
        elapsed,
        uncounted: polls,
    })
}

/// Resumes a failed run of `steps` completed steps: every step replays.
pub(crate) async fn replay(url: String, steps: u64) -> anyhow::Result<Outcome> {
    let store = store(&url).await?;
    // The same steps, without the failure at the end that stopped the setup run.
    let engine = engine(&store, &bench_scripts(false))?;
    let run = crate::setup_run(&engine).await?;
    let started = Instant::now();
    let output = engine
        .resume(&run.run_id, ResumeOptions::new())
        .await?
        .join()
        .await?;
    let elapsed = started.elapsed();
    if output.attempt != 2 {
        bail!("expected attempt 2, got {}", output.attempt);
    }
    store.pool().close().await;
    Ok(Outcome::all_timed(steps, elapsed))
}

/// Replays a failed run of `steps` completed steps offline (`Engine::replay`: two evaluations,
/// side by side, with no write).
async fn offline_replay(url: String, steps: u64) -> anyhow::Result<Outcome> {
    let store = store(&url).await?;
    let engine = engine(&store, &bench_scripts(true))?;
    let run = crate::setup_run(&engine).await?;
    let started = Instant::now();
    let report = engine
        .replay(&run.run_id, smol_durable_core::ReplayOptions::new())
        .await?;
    let elapsed = started.elapsed();
    if !report.is_identical() || report.replayed as u64 != steps {
        bail!("the replay should be identical: {:?}", report.verdict);
    }
    store.pool().close().await;
    Ok(Outcome::all_timed(steps, elapsed))
}

/// Forks a failed run of `steps` steps before its last tenth (see [`crate::fork_ninety`]).
async fn fork_ninety(url: String, steps: u64) -> anyhow::Result<Outcome> {
    let store = store(&url).await?;
    let shared: Arc<dyn DurableStore> = Arc::new(store.clone());
    let (copied, elapsed) = crate::fork_ninety(shared, &bench_scripts(false), steps).await?;
    store.pool().close().await;
    Ok(Outcome::all_timed(copied, elapsed))
}

/// A setup leaving one run of `steps` steps that failed at its end.
pub(crate) fn failed_run(steps: u64) -> Box<Setup> {
    Box::new(
        move |url: String| -> futures::future::BoxFuture<'static, anyhow::Result<()>> {
            Box::pin(async move {
                let scripts = bench_scripts(true);
                let store = store(&url).await?;
                let engine = engine(&store, &scripts)?;
                let failed = engine
                    .run(
                        scripts.source("bench.mjs"),
                        json!({ "steps": steps, "failAtEnd": true }),
                    )
                    .await;
                if failed.is_ok() {
                    bail!("the setup run should fail at its end");
                }
                store.pool().close().await;
                Ok(())
            })
        },
    )
}

/// Measures every PostgreSQL scenario on the server at `url`.
pub async fn table(url: &str, quick: bool) -> anyhow::Result<Vec<PgRow>> {
    let server = Server::connect(url).await?;
    let (sequential_steps, concurrent_runs, replay_steps) = if quick {
        (200, 20, 1_000)
    } else {
        (1_000, 100, 10_000)
    };
    let mut rows = Vec::new();
    rows.push(
        measure(&server, "sequential", None, |url| {
            sequential(url, sequential_steps)
        })
        .await?,
    );
    let submit = move |url: String| -> futures::future::BoxFuture<'static, anyhow::Result<()>> {
        Box::pin(submit_runs(url, 2 * concurrent_runs))
    };
    for workers in [1, 2, 4] {
        let name = format!("concurrent-{workers}w");
        rows.push(
            measure(&server, &name, Some(&submit), |url| {
                concurrent(url, concurrent_runs, workers)
            })
            .await?,
        );
    }
    let setup = failed_run(replay_steps);
    rows.push(
        measure(&server, "replay", Some(&setup), |url| {
            replay(url, replay_steps)
        })
        .await?,
    );
    rows.push(
        measure(&server, "offline-replay", Some(&setup), |url| {
            offline_replay(url, replay_steps)
        })
        .await?,
    );
    let ninety = crate::ninety_percent(replay_steps);
    rows.push(
        measure(&server, "replay-90", Some(&failed_run(ninety)), |url| {
            replay(url, ninety)
        })
        .await?,
    );
    rows.push(
        measure(&server, "fork-90", Some(&setup), |url| {
            fork_ninety(url, replay_steps)
        })
        .await?,
    );
    server.admin.pool().close().await;
    Ok(rows)
}
