//! Owning a step: the claim loop (the preloaded row, admission of an agent call that must run,
//! waiting for another holder), closing a step that failed, and finding a result an older
//! version stored under another name. Every step kind claims through here.

use std::time::Duration;

use serde_json::Value;

use super::{cancelled, Claim, Claimed, RunScope};
use crate::agent_options::StepIdentity;
use crate::decide::{check_budget, defers_claim, reason};
use crate::engine::context::HeldStep;
use crate::engine::steps::{acquire_step, Acquired, KnownRow, StepClaim};
use crate::script::{HostError, HostErrorKind};
use crate::store::{FailStep, LedgerEntry, State, StepCas, StepKind, StepRecord};
use crate::{Error, StepSignature};

impl RunScope {
    /// What the preload says about a checkpoint. The row is taken out: a checkpoint asked for
    /// again (a sleep claimed anew after losing its fence) is read from the store.
    pub(super) fn take_known(&self, checkpoint: &str) -> KnownRow {
        match self.known_steps.lock() {
            Ok(mut steps) => match steps.get_mut(checkpoint) {
                Some(slot) => slot
                    .take()
                    .map_or(KnownRow::Unknown, |row| KnownRow::Row(Box::new(row))),
                None => KnownRow::Absent,
            },
            Err(_) => KnownRow::Unknown,
        }
    }

    /// Resolves `KnownRow::Unknown` with a read.
    pub(super) async fn read_if_unknown(
        &self,
        checkpoint: &str,
        known: KnownRow,
    ) -> Result<KnownRow, HostError> {
        if known != KnownRow::Unknown {
            return Ok(known);
        }
        let row = self
            .ctx
            .engine
            .store
            .get_step(&self.run_id, checkpoint)
            .await
            .map_err(|error| self.fatal(error.into()))?;
        Ok(row.map_or(KnownRow::Absent, |row| KnownRow::Row(Box::new(row))))
    }

    /// Waits for a step held by someone else: until the store says it finished, the next poll,
    /// or its lease runs out.
    pub(super) async fn wait_for_holder(&self, row: &StepRecord) -> Result<(), HostError> {
        let poll = self.ctx.engine.limits.wait_poll;
        let now = self.ctx.now();
        // A sleep held elsewhere is due at its wakeAt whoever holds it (and the run may be
        // parked meanwhile, as for its own sleeps).
        let wake_at = (row.kind == StepKind::Sleep)
            .then(|| crate::decide::wake_at(row).ok())
            .flatten();
        let _sleeping = wake_at.map(|wake_at| self.ctx.sleeping(wake_at));
        let until_expiry = row
            .lease_expires_at
            .unwrap_or(now)
            .min(wake_at.unwrap_or(i64::MAX))
            .saturating_sub(now)
            .max(1);
        let wait = Duration::from_millis(
            u64::try_from(until_expiry)
                .unwrap_or(u64::MAX)
                .min(poll.as_millis() as u64),
        );
        tokio::select! {
            () = crate::clock::sleep_for(self.ctx.engine.clock.as_ref(), wait) => Ok(()),
            () = self.ctx.engine.store.step_finished(&row.step_id) => Ok(()),
            () = self.ctx.cancel.cancelled() => Err(cancelled()),
        }
    }

    /// Runs the claim loop until the step replays or is ours. An agent call that would have to
    /// run (its row is not completed), `agent_prompt_bytes` being its prompt's size, is first
    /// admitted ([`admit_agent`](Self::admit_agent)): it may be rejected before anything is
    /// written.
    pub(super) async fn claim(
        &self,
        kind: StepKind,
        checkpoint: &str,
        signature: &StepSignature,
        input: Value,
        lease_extra_ms: u64,
        agent_prompt_bytes: Option<usize>,
    ) -> Result<Claimed, HostError> {
        let claimed = self
            .claim_or_defer(
                kind,
                checkpoint,
                signature,
                input,
                lease_extra_ms,
                agent_prompt_bytes,
                false,
            )
            .await?;
        match claimed {
            Claim::Settled(claimed) => Ok(claimed),
            Claim::Deferred(_) => Err(self.fatal(Error::internal(
                "a claim that may not be deferred was deferred",
                None,
            ))),
        }
    }

    /// [`claim`](Self::claim), but with `defer` a new step that
    /// [`defers_claim`](crate::decide::defers_claim) lets wait is not written: it comes back as
    /// [`Claim::Deferred`], to be stored with its completion.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn claim_or_defer(
        &self,
        kind: StepKind,
        checkpoint: &str,
        signature: &StepSignature,
        input: Value,
        lease_extra_ms: u64,
        agent_prompt_bytes: Option<usize>,
        defer: bool,
    ) -> Result<Claim, HostError> {
        let mut known = self.take_known(checkpoint);
        if let Some(replay) = &self.ctx.settings.replay {
            let stop = || {
                replay.stop(&kind, checkpoint, &signature.json);
                self.ctx.request_cancel();
                cancelled()
            };
            match &known {
                KnownRow::Row(row) if row.input_signature_json == signature.json => {
                    match row.state {
                        State::Completed => self.ctx.add_spent(replay.replayed(&row.step_id)),
                        // The call failed in the run, and the script went on from that
                        // rejection: it gets the same one.
                        State::Failed
                            if matches!(
                                kind,
                                StepKind::Agent | StepKind::Workflow | StepKind::Signal
                            ) =>
                        {
                            self.ctx.add_spent(replay.replayed(&row.step_id));
                            return Err(self.recorded_failure(&kind, row));
                        }
                        _ => return Err(stop()),
                    }
                }
                // smol-wf ran child workflows inline, so its runs recorded no workflow step:
                // the child (whose calls replay from the root's steps) is let run.
                KnownRow::Absent | KnownRow::Unknown
                    if kind == StepKind::Workflow
                        && self.ctx.settings.step_identity == StepIdentity::SmolWf => {}
                KnownRow::Absent => {
                    // A call the run refused before it became a step (its budget was spent)
                    // is refused again, as it was; any other call would have to run.
                    if let Some(prompt_bytes) = agent_prompt_bytes {
                        self.admit_agent(prompt_bytes)?;
                    }
                    return Err(stop());
                }
                _ => return Err(stop()),
            }
        }
        loop {
            if self.ctx.cancel.is_cancelled() {
                return Err(cancelled());
            }
            known = self.read_if_unknown(checkpoint, known).await?;
            let completed = matches!(&known, KnownRow::Row(row) if row.state == State::Completed);
            if let (Some(prompt_bytes), false) = (agent_prompt_bytes, completed) {
                self.admit_agent(prompt_bytes)?;
            }
            let now = self.ctx.now();
            let claim = StepClaim {
                run_id: &self.run_id,
                root_run_id: &self.ctx.root_run_id,
                kind: kind.clone(),
                checkpoint_name: checkpoint,
                signature,
                input: input.clone(),
                worker_id: self.ctx.owner_id(),
                lease_expires_at: self.ctx.step_lease_expires_at(now, lease_extra_ms),
            };
            let deferred_claim = self.ctx.engine.limits.deferred_claim;
            if defer && known == KnownRow::Absent && defers_claim(&kind, None, deferred_claim) {
                return Ok(Claim::Deferred(Box::new(claim.new_step(now))));
            }
            let hint = std::mem::replace(&mut known, KnownRow::Unknown);
            match acquire_step(self.ctx.engine.store.as_ref(), &claim, hint, now).await {
                Ok(Acquired::Replay { result, step_id }) => {
                    return Ok(Claim::Settled(Claimed::Replay { result, step_id }))
                }
                Ok(Acquired::Claimed(row)) => {
                    self.ctx.hold(
                        &row.step_id,
                        HeldStep {
                            fence: row.fence,
                            extra_ms: lease_extra_ms,
                            agent: kind == StepKind::Agent,
                            claimed: true,
                        },
                    );
                    return Ok(Claim::Settled(Claimed::Ours(Box::new(row))));
                }
                Ok(Acquired::Wait(row)) => self.wait_for_holder(&row).await?,
                Err(error) => return Err(self.fatal(error)),
            }
        }
    }

    /// Marks a step we hold failed or cancelled (fenced), writing billed usage with it.
    pub(super) async fn close_step(
        &self,
        row: &StepRecord,
        state: State,
        message: &str,
        ledger: Vec<LedgerEntry>,
    ) {
        let tokens: u64 = ledger.iter().map(|entry| entry.output_tokens).sum();
        let closed = self
            .ctx
            .engine
            .store
            .fail_step(FailStep {
                step_id: row.step_id.clone(),
                fence: row.fence,
                state,
                reason: reason(message),
                ledger,
                now: self.ctx.now(),
            })
            .await;
        self.ctx.unhold(&row.step_id);
        match closed {
            Ok(StepCas::Applied(_)) => self.ctx.add_spent(tokens),
            Ok(StepCas::Conflict(_)) => {}
            Err(error) => {
                tracing::warn!(step_id = %row.step_id, %error, "could not record a step failure");
            }
        }
    }

    /// The result of a call the rules that named this run's steps stored under another
    /// checkpoint: only when nothing is stored under its current one and that step completed.
    pub(super) fn completed_under_legacy_name(
        &self,
        checkpoint: &str,
        legacy: Option<&str>,
    ) -> Option<Value> {
        let legacy = legacy?;
        let mut steps = self.known_steps.lock().ok()?;
        if steps.contains_key(checkpoint) {
            return None;
        }
        let row = take_completed(steps.get_mut(legacy))?;
        drop(steps);
        self.replayed_from_preload(row)
    }

    /// The rejection a step recorded as failed stands for, as the script saw it then.
    fn recorded_failure(&self, kind: &StepKind, row: &StepRecord) -> HostError {
        let error = Error::from_failure_reason(row.failure_reason.as_ref().unwrap_or(&Value::Null));
        let host_kind = match kind {
            StepKind::Workflow => HostErrorKind::Workflow,
            StepKind::Signal => HostErrorKind::Invalid,
            _ => HostErrorKind::Provider,
        };
        self.ctx.reject(host_kind, error.to_string(), error)
    }

    /// A completed row taken from a preload under another name than the call's: in an
    /// offline replay, it counts as replayed (and its cost as spent); its result.
    pub(super) fn replayed_from_preload(&self, row: StepRecord) -> Option<Value> {
        if let Some(replay) = &self.ctx.settings.replay {
            self.ctx.add_spent(replay.replayed(&row.step_id));
        }
        row.result
    }

    /// Whether an agent call that must run (it does not replay) may: the budget has room and
    /// the prompt is within [`Limits::max_prompt_bytes`](crate::Limits::max_prompt_bytes).
    fn admit_agent(&self, prompt_bytes: usize) -> Result<(), HostError> {
        let budget = self.ctx.budget();
        if let Err(error) = check_budget(budget.total, budget.spent) {
            return Err(self
                .ctx
                .reject(HostErrorKind::BudgetExhausted, error.to_string(), error));
        }
        let max_prompt = self.ctx.engine.limits.max_prompt_bytes;
        if prompt_bytes > max_prompt {
            return Err(self.ctx.reject_limit(format!(
                "the agent prompt is {prompt_bytes} bytes, more than the {max_prompt}-byte limit \
                 (Limits::max_prompt_bytes)"
            )));
        }
        Ok(())
    }
}

/// A preloaded row that completed, taken out of the preload.
pub(super) fn take_completed(slot: Option<&mut Option<StepRecord>>) -> Option<StepRecord> {
    let slot = slot?;
    if slot.as_ref()?.state != State::Completed {
        return None;
    }
    slot.take()
}
