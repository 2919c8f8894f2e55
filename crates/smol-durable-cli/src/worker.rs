//! `worker`: execute submitted runs until stopped.

use std::time::Duration;

use anyhow::bail;
use smol_durable_core::{Engine, WorkerOptions};

use crate::cli::WorkerArgs;
use crate::output::errln;
use crate::stop_signals::Signals;
use crate::Outcome;

/// `worker`: execute submitted runs until SIGINT, SIGTERM or SIGHUP, then stop gracefully (a second
/// signal exits at once; runs in flight are then taken over when their leases expire).
pub async fn worker(engine: &Engine, options: &WorkerArgs) -> anyhow::Result<Outcome> {
    if options.concurrency == 0 {
        bail!("--concurrency must be at least 1, got 0");
    }
    let mut signals = Signals::new()?;
    let worker = engine.worker(
        WorkerOptions::new()
            .concurrency(options.concurrency)
            .shutdown_grace(Duration::from_secs(options.shutdown_grace)),
    );
    errln!(
        "worker {} executing up to {} runs at once; SIGINT, SIGTERM or SIGHUP stops it",
        worker.owner_id(),
        options.concurrency
    );
    let worker_ended = async {
        while !worker.is_finished() {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    };
    tokio::select! {
        _ = signals.next() => {}
        // Only a failure ends a worker nobody stopped: report it instead of idling.
        () = worker_ended => {
            worker.join().await?;
            bail!("the worker stopped unexpectedly");
        }
    }
    errln!(
        "stopping: no new runs; runs in flight get {} s, then go back to the queue \
         (signal again to exit at once)",
        options.shutdown_grace
    );
    worker.shutdown();
    let join = worker.join();
    tokio::select! {
        report = join => {
            let report = report?;
            errln!(
                "worker stopped: {} claimed, {} completed, {} failed, {} cancelled, {} parked, {} handed back",
                report.claimed,
                report.completed,
                report.failed,
                report.cancelled,
                report.parked,
                report.released
            );
            Ok(Outcome::Success)
        }
        signal = signals.next() => Ok(Outcome::Interrupted(signal)),
    }
}
