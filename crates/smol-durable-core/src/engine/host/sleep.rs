//! `sleep()` calls: a step whose `wakeAt` is fixed when it is first claimed.

use std::sync::Arc;

use futures::FutureExt;
use serde_json::{json, Value};
use tracing::Instrument;

use super::{cancelled, invalid, rejected, step_span, Claimed, RunScope};
use crate::decide::sleep_wake_at;
use crate::engine::steps::complete_fenced;
use crate::events::EventType;
use crate::script::{HostError, HostFuture};
use crate::store::StepKind;
use crate::{Error, StepSignature};

impl RunScope {
    /// `sleep(ms)`: a durable step; a resumed run waits only for what remains.
    pub(super) fn sleep(self: Arc<Self>, duration_ms: u64) -> HostFuture {
        let max = self.ctx.engine.limits.max_sleep_ms;
        if duration_ms > max {
            return rejected(invalid(format!(
                "sleep duration {duration_ms} ms exceeds the maximum of {max} ms"
            )));
        }
        let checkpoint = self.next_checkpoint(&StepSignature::sleep(&self.scope, duration_ms));
        let span = step_span("sleep", &self.run_id, &checkpoint);
        self.run_sleep(duration_ms, checkpoint)
            .instrument(span)
            .boxed()
    }

    async fn run_sleep(
        self: Arc<Self>,
        duration_ms: u64,
        checkpoint: String,
    ) -> Result<Value, HostError> {
        let signature = StepSignature::sleep(&self.scope, duration_ms);
        loop {
            let wake_at = sleep_wake_at(self.ctx.now(), duration_ms);
            let input = json!({ "durationMs": duration_ms, "wakeAt": wake_at });
            let row = match self
                .claim(StepKind::Sleep, &checkpoint, &signature, input, 0, None)
                .await?
            {
                Claimed::Replay { step_id, .. } => {
                    self.emit(
                        EventType::StepReplayed,
                        Some(&step_id),
                        json!({ "kind": "sleep", "checkpoint": checkpoint, "durationMs": duration_ms }),
                    );
                    return Ok(Value::Null);
                }
                Claimed::Ours(row) => *row,
            };
            let wake_at = crate::decide::wake_at(&row).map_err(|error| self.fatal(error))?;
            self.emit(
                EventType::SleepStarted,
                Some(&row.step_id),
                json!({
                    "checkpoint": checkpoint,
                    "durationMs": duration_ms,
                    "wakeAt": crate::clock::rfc3339_ms(wake_at),
                }),
            );
            let sleeping = self.ctx.sleeping(wake_at);
            let woke = tokio::select! {
                () = self.ctx.engine.clock.sleep_until(wake_at) => true,
                () = self.ctx.cancel.cancelled() => false,
            };
            drop(sleeping);
            if !woke {
                // The attempt's end marks the row cancelled; its wakeAt stays fixed, so a resume
                // waits only for the remainder.
                return Err(cancelled());
            }
            let now = self.ctx.now();
            let result = json!({ "ok": true, "durationMs": duration_ms, "wakeAt": wake_at, "completedAt": now });
            let store = self.ctx.engine.store.as_ref();
            let completed =
                complete_fenced(store, &row.step_id, row.fence, result, Vec::new(), now).await;
            self.ctx.unhold(&row.step_id);
            match completed {
                Ok(_) => return Ok(Value::Null),
                // Taken over while we slept (our owner was presumed gone): decide again.
                Err(Error::LeaseLost(_)) => {}
                Err(error) => return Err(self.fatal(error)),
            }
        }
    }
}
