//! `waitFor(...)` / `waitForAny(...)`: a step that waits for a signal in its run's mailbox.
//! Its deadline is fixed when its row is inserted; the step stores how the wait ended
//! (received, with the signal's id, or timed out), and a replay answers exactly that.

use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use serde_json::{json, Value};
use tracing::Instrument;

use super::{cancelled, invalid, rejected, step_span, Claimed, RunScope};
use crate::decide::{stored_deadline, wait_deadline, WaitOutcome};
use crate::engine::mailbox::{ClaimedWait, Delivery, Registration};
use crate::engine::steps::complete_fenced;
use crate::events::EventType;
use crate::schema::OutputSchema;
use crate::script::{HostError, HostErrorKind, HostFuture};
use crate::signals::WaitSpec;
use crate::store::{StepKind, StepRecord};
use crate::{Error, StepSignature};

/// How a held wait ended this time round.
enum Ended {
    Outcome(WaitOutcome),
    /// The step's fence moved on (taken over while we waited): decide again.
    LeaseLost,
}

impl RunScope {
    /// `waitFor(name, options)` (`names` = `[name]`) or `waitForAny(names, options)`.
    pub(super) fn wait(
        self: Arc<Self>,
        names: Vec<Value>,
        options: Value,
        any: bool,
    ) -> HostFuture {
        let max = self.ctx.engine.limits.max_sleep_ms;
        let spec = match WaitSpec::parse(&names, &options, any, max) {
            Ok(spec) => spec,
            Err(error) => return rejected(invalid(error.message)),
        };
        let signature = StepSignature::wait(&self.scope, &spec.names);
        let checkpoint = self.next_checkpoint(&signature);
        // Its place in line is taken now, in the order the script makes its calls.
        let order = self.ctx.mailbox.ticket();
        let reservation = self.ctx.mailbox.reserve(order, &self.run_id, &spec.names);
        let span = step_span("wait", &self.run_id, &checkpoint);
        self.run_wait(spec, signature, checkpoint, order, reservation)
            .instrument(span)
            .boxed()
    }

    async fn run_wait(
        self: Arc<Self>,
        spec: WaitSpec,
        signature: StepSignature,
        checkpoint: String,
        order: u64,
        reservation: Registration,
    ) -> Result<Value, HostError> {
        // Checked by WaitSpec::parse already.
        let schema = match spec.schema.as_ref().map(OutputSchema::compile).transpose() {
            Ok(schema) => schema,
            Err(message) => return Err(invalid(message)),
        };
        let mut reservation = Some(reservation);
        loop {
            // Taken again in the same place after a lost lease.
            let registration = reservation
                .take()
                .unwrap_or_else(|| self.ctx.mailbox.reserve(order, &self.run_id, &spec.names));
            let input = json!({
                "names": spec.names,
                "deadline": wait_deadline(self.ctx.now(), spec.timeout_ms, spec.deadline),
                "schema": spec.schema,
                "description": spec.description,
            });
            let row = match self
                .claim(StepKind::Wait, &checkpoint, &signature, input, 0, None)
                .await?
            {
                Claimed::Replay { result, step_id } => {
                    self.emit(
                        EventType::StepReplayed,
                        Some(&step_id),
                        json!({ "kind": "wait", "checkpoint": checkpoint }),
                    );
                    let outcome = WaitOutcome::from_result(&result, &step_id, &checkpoint)
                        .map_err(|error| self.fatal(error))?;
                    return answer(&spec, &outcome);
                }
                Claimed::Ours(row) => *row,
            };
            let deadline = stored_deadline(&row).map_err(|error| self.fatal(error))?;
            let ended = self
                .await_signal(
                    &row,
                    &spec,
                    &checkpoint,
                    deadline,
                    schema.clone(),
                    registration,
                )
                .await;
            match ended {
                Ok(Ended::Outcome(outcome)) => {
                    self.ctx.unhold(&row.step_id);
                    self.emit(
                        EventType::WaitCompleted,
                        Some(&row.step_id),
                        completed_event(&checkpoint, &spec.names, &outcome),
                    );
                    return answer(&spec, &outcome);
                }
                Ok(Ended::LeaseLost) => self.ctx.unhold(&row.step_id),
                // Still held: the attempt's end marks the step cancelled (or abandoned, when
                // parked), and its deadline stays fixed for the resume.
                Err(error) => {
                    if error.kind == HostErrorKind::Cancelled && !self.ctx.handing_back() {
                        self.emit(
                            EventType::WaitCompleted,
                            Some(&row.step_id),
                            json!({ "checkpoint": checkpoint, "outcome": "cancelled" }),
                        );
                    }
                    return Err(error);
                }
            }
        }
    }

    /// Waits, holding the step, until a signal is handed to it, its deadline passes, or the
    /// run is cancelled.
    async fn await_signal(
        &self,
        row: &StepRecord,
        spec: &WaitSpec,
        checkpoint: &str,
        deadline: Option<i64>,
        schema: Option<OutputSchema>,
        mut registration: Registration,
    ) -> Result<Ended, HostError> {
        let engine = &self.ctx.engine;
        let _waiting = self.ctx.waiting(deadline);
        registration.claimed(ClaimedWait {
            step_id: row.step_id.clone(),
            fence: row.fence,
            deadline,
            schema,
        });
        let mut started = false;
        loop {
            // Listening before looking: a signal stored between the look and the wait below
            // still wakes it (PostgreSQL registers its interest on the first poll).
            let bell = engine.signal_bell.notified();
            tokio::pin!(bell);
            bell.as_mut().enable();
            let sent = engine.store.signal_sent(&self.run_id);
            tokio::pin!(sent);
            let sent_already = futures::poll!(sent.as_mut()).is_ready();
            if let Some(ended) = self.look(row, deadline, &mut registration).await? {
                return Ok(ended);
            }
            // Nothing for it yet: it waits (a signal already in the mailbox was taken by the
            // first look, without a wait to report).
            if !started {
                started = true;
                self.emit(
                    EventType::WaitStarted,
                    Some(&row.step_id),
                    json!({
                        "checkpoint": checkpoint,
                        "names": spec.names,
                        "description": spec.description,
                        "deadline": deadline.map(crate::clock::rfc3339_ms),
                        "deadlineMs": deadline,
                        "signalRunId": self.run_id,
                    }),
                );
            }
            // A run started to detach at waits stops here (the cancel token fires below).
            self.ctx.detach_at_wait(deadline);
            if sent_already {
                continue;
            }
            let poll = engine.limits.wait_poll;
            let nap = deadline.map_or(poll, |deadline| {
                let left = u64::try_from(deadline.saturating_sub(self.ctx.now())).unwrap_or(0);
                poll.min(Duration::from_millis(left.max(1)))
            });
            tokio::select! {
                delivery = &mut registration.answer => return Ok(match delivery {
                    Ok(Delivery::Received(outcome)) => Ended::Outcome(outcome),
                    Ok(Delivery::LeaseLost) | Err(_) => Ended::LeaseLost,
                }),
                () = crate::clock::sleep_for(engine.clock.as_ref(), nap) => {}
                () = &mut sent => {}
                () = &mut bell => {}
                () = self.ctx.cancel.cancelled() => return Err(cancelled()),
            }
        }
    }

    /// One look at the mailbox, during the attempt's turn: hands pending signals to the open
    /// waits, and times this one out if its deadline has passed and nothing sent in time came.
    async fn look(
        &self,
        row: &StepRecord,
        deadline: Option<i64>,
        registration: &mut Registration,
    ) -> Result<Option<Ended>, HostError> {
        let store = self.ctx.engine.store.as_ref();
        let mailbox = Arc::clone(&self.ctx.mailbox);
        let turn = mailbox.turn().await;
        let now = self.ctx.now();
        let refused = mailbox
            .pump(&turn, store, &self.run_id, now)
            .await
            .map_err(|error| self.fatal(error))?;
        for refusal in refused {
            tracing::warn!(
                signal_id = %refusal.signal.signal_id,
                errors = ?refusal.errors,
                "a signal's payload does not match its wait's schema; it is rejected"
            );
        }
        match registration.answer.try_recv() {
            Ok(Delivery::Received(outcome)) => return Ok(Some(Ended::Outcome(outcome))),
            Ok(Delivery::LeaseLost) => return Ok(Some(Ended::LeaseLost)),
            Err(_) => {}
        }
        let Some(deadline) = deadline.filter(|deadline| now >= *deadline) else {
            return Ok(None);
        };
        // No pump serves it after this, so no signal can be consumed for it meanwhile.
        mailbox.withdraw(&turn, registration);
        let timed_out = WaitOutcome::TimedOut { deadline };
        let completed = complete_fenced(
            store,
            &row.step_id,
            row.fence,
            timed_out.to_result(),
            Vec::new(),
            now,
        )
        .await;
        match completed {
            Ok(completed) => {
                let outcome =
                    WaitOutcome::from_result(&completed.value, &row.step_id, &row.checkpoint_name)
                        .map_err(|error| self.fatal(error))?;
                Ok(Some(Ended::Outcome(outcome)))
            }
            Err(Error::LeaseLost(_)) => Ok(Some(Ended::LeaseLost)),
            Err(error) => Err(self.fatal(error)),
        }
    }
}

/// What the script's call resolves to, or the timeout it rejects with.
fn answer(spec: &WaitSpec, outcome: &WaitOutcome) -> Result<Value, HostError> {
    match outcome {
        WaitOutcome::Received { name, value, .. } if spec.any => {
            Ok(json!({ "name": name, "value": value }))
        }
        WaitOutcome::Received { value, .. } => Ok(value.clone()),
        WaitOutcome::TimedOut { deadline } => match &spec.default {
            Some(default) if spec.any => Ok(json!({ "name": null, "value": default })),
            Some(default) => Ok(default.clone()),
            None => Err(HostError::new(
                HostErrorKind::WaitTimeout,
                timeout_message(spec, *deadline),
            )),
        },
    }
}

/// `waitFor("approval") timed out: no signal arrived by its deadline 2026-…Z`.
pub(crate) fn timeout_message(spec: &WaitSpec, deadline: i64) -> String {
    let call = if spec.any {
        format!("waitForAny({})", json!(spec.names))
    } else {
        format!("waitFor({})", json!(spec.names.first()))
    };
    format!(
        "{call} timed out: no signal arrived by its deadline {}",
        crate::clock::rfc3339_ms(deadline)
    )
}

fn completed_event(checkpoint: &str, names: &[String], outcome: &WaitOutcome) -> Value {
    match outcome {
        WaitOutcome::Received {
            name, signal_id, ..
        } => json!({
            "checkpoint": checkpoint,
            "names": names,
            "outcome": "received",
            "name": name,
            "signalId": signal_id,
        }),
        WaitOutcome::TimedOut { deadline } => json!({
            "checkpoint": checkpoint,
            "names": names,
            "outcome": "timedOut",
            "deadline": crate::clock::rfc3339_ms(*deadline),
        }),
    }
}
