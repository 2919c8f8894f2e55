//! A signalling process: sends the ticks a `waits.mjs` run waits for, one by one, each with an
//! idempotency key of its own, so a signaller killed halfway and started again sends each tick
//! exactly once.

use std::time::Duration;

use clap::Args;
use serde_json::json;
use smol_durable_core::{Engine, SignalOptions};

/// The signal the torture's `waits.mjs` waits for.
pub(crate) const TICK: &str = "tick";

/// How many ticks one `waits.mjs` run takes.
pub(crate) const TICKS: u64 = 3;

/// The idempotency key of tick `n`.
pub(crate) fn tick_key(n: u64) -> String {
    format!("tick-{n}")
}

/// Options of `smol-durable-torture signaller`.
#[derive(Debug, Args)]
pub(crate) struct SignallerOptions {
    /// The database: a SQLite file or a `postgres://` URL.
    #[arg(long)]
    db: String,
    /// The PostgreSQL schema the drive uses.
    #[arg(long)]
    pg_schema: Option<String>,
    /// The run to signal.
    #[arg(long)]
    run: String,
    /// Fraction of store operations that fail retryably (half of them after committing).
    #[arg(long, default_value_t = 0.0)]
    fault_rate: f64,
    /// Seed of the injected faults (mixed with the process id).
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

pub(crate) async fn run(options: SignallerOptions) -> anyhow::Result<()> {
    let store = crate::stores::open_with_faults(
        &options.db,
        options.pg_schema.as_deref(),
        options.fault_rate,
        options.seed,
    )
    .await?;
    // A process that only sends: no provider, no script engine.
    let engine = Engine::builder().store(store).build_submitter()?;
    for n in 0..TICKS {
        tokio::time::sleep(Duration::from_millis(fastrand::u64(0..150))).await;
        let send = SignalOptions::default().idempotency_key(tick_key(n));
        engine.signal(&options.run, TICK, json!(n), send).await?;
    }
    Ok(())
}
