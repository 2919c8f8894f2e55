//! Our side of `scripts/bench-peers`: one shape on one fresh PostgreSQL database, reported as
//! one JSON line so the script can set it beside Absurd and DBOS Transact.
//!
//! ```sh
//! smol-durable-benches --peer-shape sequential|concurrent|replay --url URL --size N \
//!     [--connections C] [--phase all|setup|run]
//! ```
//!
//! Prints `{"steps": timed steps, "seconds": their time, "total_steps": steps the database
//! counters cover, "uncounted": transactions made only to watch progress}`. The shapes reuse
//! the PostgreSQL table's bodies ([`crate::postgres`]), except `concurrent`, which here is one
//! worker whose pool has exactly `C` connections, timed from the first submit to the last
//! completion (the peers are held to the same rule).
//!
//! `--phase setup` only prepares the database (schema, and for `replay` the failed run) and
//! `--phase run` only measures, so the script can read the server's counters between the two
//! processes and leave the setup out of them; `all` (the default) does both in one process.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use serde_json::json;
use smol_durable_core::store::{RunFilter, State};
use smol_durable_core::{RunRequest, StoreAdmin, SubmitOptions, WorkerOptions};
use smol_durable_postgres::{PostgresOptions, PostgresStore};

use crate::postgres::{self, Outcome};

/// Steps of each run of the concurrent shape, as in the PostgreSQL table.
const CONCURRENT_STEPS: u64 = 10;

/// How often the concurrent shape looks for its last completion. The end time is read from the
/// runs' own completion stamps, so this only bounds how long the process waits, not the timing.
const DONE_POLL: Duration = Duration::from_millis(20);

/// Which part of a shape this process does.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    All,
    Setup,
    Run,
}

/// Parses the flags, runs the shape and prints its JSON line.
pub fn main(args: &[String]) -> anyhow::Result<()> {
    let value = |flag: &str| -> Option<&String> {
        let at = args.iter().position(|a| a == flag)?;
        args.get(at + 1)
    };
    let required = |flag: &str| -> anyhow::Result<&String> {
        value(flag).with_context(|| format!("missing value for {flag}"))
    };
    let shape = required("--peer-shape")?.clone();
    let url = required("--url")?.clone();
    let size: u64 = required("--size")?
        .parse()
        .context("--size takes a number of steps (or runs, for concurrent)")?;
    let connections: u32 = match value("--connections") {
        Some(text) => text
            .parse()
            .context("--connections takes a number of connections")?,
        None => 8,
    };
    if connections == 0 {
        bail!("--connections must be at least 1");
    }
    let phase = match value("--phase").map(String::as_str) {
        None | Some("all") => Phase::All,
        Some("setup") => Phase::Setup,
        Some("run") => Phase::Run,
        Some(other) => bail!("unknown --phase {other} (all, setup or run)"),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let outcome = runtime.block_on(shape_main(&shape, url, size, connections, phase))?;
    if let Some(outcome) = outcome {
        println!(
            "{}",
            json!({
                "steps": outcome.timed_steps,
                "seconds": outcome.elapsed.as_secs_f64(),
                "total_steps": outcome.steps,
                "uncounted": outcome.uncounted,
            })
        );
    }
    Ok(())
}

/// Sets up and/or measures `shape`; `None` when only the setup ran.
async fn shape_main(
    shape: &str,
    url: String,
    size: u64,
    connections: u32,
    phase: Phase,
) -> anyhow::Result<Option<Outcome>> {
    if phase != Phase::Run {
        match shape {
            // The measured process then finds the schema in place, as a deployed one does.
            "sequential" | "concurrent" => postgres::store(&url).await?.pool().close().await,
            "replay" => postgres::failed_run(size)(url.clone()).await?,
            other => bail!("unknown --peer-shape {other} (sequential, concurrent or replay)"),
        }
    }
    if phase == Phase::Setup {
        return Ok(None);
    }
    let outcome = match shape {
        "sequential" => postgres::sequential(url, size).await?,
        "concurrent" => concurrent(&url, size, connections).await?,
        "replay" => postgres::replay(url, size).await?,
        other => bail!("unknown --peer-shape {other} (sequential, concurrent or replay)"),
    };
    Ok(Some(outcome))
}

/// Milliseconds since the Unix epoch, the unit of the runs' `updated_at`.
fn now_ms() -> anyhow::Result<i64> {
    Ok(i64::try_from(
        SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis(),
    )?)
}

/// `runs` runs of ten steps submitted to, and executed by, one worker running them all at once
/// over one pool of `connections` connections (the store's listening connection among them;
/// DBOS's comes on top), opened before the clock starts as Absurd's clients' are. Timed from just
/// before the first submit to the last run's completion stamp.
async fn concurrent(url: &str, runs: u64, connections: u32) -> anyhow::Result<Outcome> {
    let scripts = postgres::bench_scripts(false);
    let store =
        PostgresStore::connect_with(PostgresOptions::new(url).max_connections(connections)).await?;
    let engine = postgres::engine(&store, &scripts)?;
    // Progress is watched on a connection of its own so it takes none from the pool measured.
    let observer =
        PostgresStore::connect_with(PostgresOptions::new(url).max_connections(1)).await?;
    // Absurd's clients open their connections before the clock starts (each `Absurd(url)`
    // connects at once); our pool opens them on demand, so it opens them here, before the
    // worker's listener takes one of them.
    let open = (0..connections).map(|_| store.pool().acquire());
    drop(futures::future::try_join_all(open).await?);
    let worker = engine.worker(
        WorkerOptions::new()
            .concurrency(usize::try_from(runs).unwrap_or(usize::MAX))
            // Submissions wake it through the store's notifications; the poll is a fallback.
            .poll_interval(Duration::from_millis(50)),
    );
    let started_ms = now_ms()?;
    let started = Instant::now();
    for _ in 0..runs {
        let request = RunRequest::new(
            scripts.source("bench.mjs"),
            json!({ "steps": CONCURRENT_STEPS }),
        );
        engine.submit(request, SubmitOptions::new()).await?;
    }
    let done_filter = RunFilter {
        states: vec![State::Completed],
        roots_only: true,
        ..RunFilter::default()
    };
    let mut polls = 0;
    let last_done_ms = loop {
        polls += 1;
        let done = observer.list_runs(&done_filter).await?;
        if done.len() as u64 >= runs {
            break done
                .iter()
                .map(|run| run.updated_at)
                .max()
                .unwrap_or(started_ms);
        }
        if started.elapsed() > Duration::from_secs(600) {
            bail!("only {} of {runs} runs completed", done.len());
        }
        tokio::time::sleep(DONE_POLL).await;
    };
    worker.shutdown();
    worker.join().await?;
    store.pool().close().await;
    observer.pool().close().await;
    let elapsed_ms = u64::try_from(last_done_ms - started_ms).unwrap_or(0);
    Ok(Outcome {
        steps: runs * CONCURRENT_STEPS,
        timed_steps: runs * CONCURRENT_STEPS,
        elapsed: Duration::from_millis(elapsed_ms),
        uncounted: polls,
    })
}
