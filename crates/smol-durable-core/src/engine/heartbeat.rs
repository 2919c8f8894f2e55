//! What runs beside an attempt's script: the lease heartbeat and the watch for cancellations
//! requested by other processes.

use std::sync::Arc;
use std::time::Duration;

use super::context::AttemptCtx;
use crate::decide::heartbeat_interval_ms;
use crate::store::{RenewLeases, StepLease};
use crate::Error;

/// Renews the task, attempt and held step leases every ttl/3 and watches for cancellation.
pub(crate) async fn heartbeat(ctx: Arc<AttemptCtx>) {
    let interval = Duration::from_millis(heartbeat_interval_ms(ctx.lease_ttl_ms()));
    let ttl = i64::try_from(ctx.lease_ttl_ms()).unwrap_or(i64::MAX);
    let mut last_renewed = ctx.now();
    loop {
        crate::clock::sleep_for(ctx.engine.clock.as_ref(), interval).await;
        let now = ctx.now();
        let steps: Vec<StepLease> = ctx
            .held_steps()
            .into_iter()
            .filter(|(_, held)| held.claimed)
            .map(|(step_id, held)| StepLease {
                step_id,
                fence: held.fence,
                lease_expires_at: ctx.step_lease_expires_at(now, held.extra_ms),
            })
            .collect();
        let sent: Vec<(String, u32)> = steps.iter().map(|s| (s.step_id.clone(), s.fence)).collect();
        let renewed = ctx
            .engine
            .store
            .renew_leases(RenewLeases {
                owner_id: ctx.owner_id().to_owned(),
                task_id: ctx.task_id.clone(),
                attempt_id: ctx.attempt.attempt_id.clone(),
                run_id: ctx.root_run_id.clone(),
                lease_expires_at: now.saturating_add(ttl),
                steps,
                now,
            })
            .await;
        match renewed {
            Ok(outcome) => {
                if !outcome.task_held {
                    ctx.fail_fatally(Error::LeaseLost(format!(
                        "task {} is no longer held by {}",
                        ctx.task_id,
                        ctx.owner_id()
                    )));
                    return;
                }
                for step_id in outcome.lost_steps {
                    // Someone else owns it now; our completion will be fenced off. Only the
                    // hold renewed here is dropped: the step may have been claimed again since.
                    // A step that finished while the renewal was on its way is no news.
                    let fence = sent.iter().find(|(id, _)| *id == step_id).map(|(_, f)| *f);
                    if ctx.unhold_fenced(&step_id, fence) {
                        tracing::warn!(%step_id, "step lease lost");
                    }
                }
                if outcome.cancel_requested {
                    ctx.request_cancel();
                }
                last_renewed = now;
            }
            // A failed renewal is retried on the next beat while the lease still holds; once it
            // may have expired, another owner may be running this attempt's steps: stop.
            Err(error) => {
                tracing::warn!(%error, "lease renewal failed");
                if now.saturating_sub(last_renewed) >= ttl {
                    ctx.fail_fatally(Error::LeaseLost(format!(
                        "could not renew the lease of task {} for {ttl} ms: {error}",
                        ctx.task_id
                    )));
                    return;
                }
            }
        }
    }
}

/// Reads the root run every [`Limits::cancel_poll`](crate::Limits::cancel_poll) and cancels the
/// run when another process asked for it: sooner than the next heartbeat, so no new agent call
/// starts and a sleep stops within that time.
pub(crate) async fn watch_for_cancel(ctx: Arc<AttemptCtx>) {
    let poll = ctx.engine.limits.cancel_poll;
    loop {
        crate::clock::sleep_for(ctx.engine.clock.as_ref(), poll).await;
        match ctx.engine.store.get_run(&ctx.root_run_id).await {
            Ok(Some(run)) if run.cancel_requested_at.is_some() => {
                ctx.request_cancel();
                return;
            }
            Ok(_) => {}
            // The heartbeat reports a store in trouble; this only looks for cancellations.
            Err(error) => tracing::debug!(%error, "could not look for a cancellation"),
        }
    }
}
