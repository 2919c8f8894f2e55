//! `signal(runId, name, payload)`: a step that sends a signal to another run, once. The step's
//! identity is the send's idempotency key, so a replay, a resume or a reclaim after a crash
//! never sends it twice; the step stores the receipt.

use std::sync::Arc;

use futures::FutureExt;
use serde_json::{json, Value};
use tracing::Instrument;

use super::{invalid, rejected, step_span, Claimed, RunScope};
use crate::engine::handle::Engine;
use crate::engine::steps::complete_fenced;
use crate::events::EventType;
use crate::script::{HostError, HostErrorKind, HostFuture};
use crate::signals::{check_signal_name, SignalOptions};
use crate::store::{State, StepKind};
use crate::{Error, StepSignature};

impl RunScope {
    pub(super) fn signal(
        self: Arc<Self>,
        run_id: String,
        name: String,
        payload: Value,
    ) -> HostFuture {
        if run_id.is_empty() {
            return rejected(invalid("signal(runId, name, payload) needs a run id"));
        }
        if let Err(problem) = check_signal_name(&name) {
            return rejected(invalid(format!("signal(): {problem}")));
        }
        let signature = StepSignature::signal(&self.scope, &run_id, &name, &payload);
        let checkpoint = self.next_checkpoint(&signature);
        let span = step_span("signal", &self.run_id, &checkpoint);
        self.run_signal(run_id, name, payload, signature, checkpoint)
            .instrument(span)
            .boxed()
    }

    async fn run_signal(
        self: Arc<Self>,
        target: String,
        name: String,
        payload: Value,
        signature: StepSignature,
        checkpoint: String,
    ) -> Result<Value, HostError> {
        let input = json!({ "runId": target, "name": name });
        let row = match self
            .claim(StepKind::Signal, &checkpoint, &signature, input, 0, None)
            .await?
        {
            Claimed::Replay { result, step_id } => {
                self.emit(
                    EventType::StepReplayed,
                    Some(&step_id),
                    json!({ "kind": "signal", "checkpoint": checkpoint }),
                );
                return Ok(result);
            }
            Claimed::Ours(row) => *row,
        };
        // Unique to this step of this run: the same send whoever makes it, however often.
        let key = format!("step:{}:{}", self.run_id, checkpoint);
        let engine = Engine::from_shared(Arc::clone(&self.ctx.engine));
        let sent = engine
            .signal(
                &target,
                &name,
                payload,
                SignalOptions::default().idempotency_key(key),
            )
            .await;
        let receipt = match sent {
            Ok(receipt) => receipt,
            Err(error @ (Error::Store(_) | Error::Internal { .. })) => {
                self.ctx.unhold(&row.step_id);
                return Err(self.fatal(error));
            }
            Err(error) => {
                let message = error.to_string();
                self.close_step(&row, State::Failed, &message, Vec::new())
                    .await;
                return Err(self.ctx.reject(HostErrorKind::Invalid, message, error));
            }
        };
        let result = serde_json::to_value(&receipt).unwrap_or(Value::Null);
        let store = self.ctx.engine.store.as_ref();
        let completed = complete_fenced(
            store,
            &row.step_id,
            row.fence,
            result,
            Vec::new(),
            self.ctx.now(),
        )
        .await;
        self.ctx.unhold(&row.step_id);
        match completed {
            Ok(completed) => Ok(completed.value),
            Err(error) => Err(self.fatal(error)),
        }
    }
}
