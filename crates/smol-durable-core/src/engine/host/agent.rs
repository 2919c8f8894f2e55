//! `agent()` calls: options completed and hashed, the claim, the provider call with its tries,
//! schema checks and billing, and the fenced completion.

use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use serde::Deserialize;
use serde_json::{json, Value};
use tracing::Instrument;

use super::claim::take_completed;
use super::{cancelled, invalid, rejected, step_span, Claim, Claimed, RunScope};
use crate::agent_options::{
    effective_options, legacy_signature, step_key, Isolation, OptionDefaults,
};
use crate::decide::{step_lease_expires_at, RetryPolicy};
use crate::engine::context::object;
use crate::engine::context::HeldStep;
use crate::engine::steps::{complete_fenced, record_completed, Completed, Recorded};
use crate::events::{prompt_preview, EventType};
use crate::limits::{oversized, RESULT_LIMIT};
use crate::schema::{corrective_prompt, mismatch_message, OutputSchema};
use crate::script::{HostError, HostErrorKind, HostFuture};
use crate::store::{InsertStep, LedgerEntry, LedgerSource, NewStep, State, StepKind, StepRecord};
use crate::{
    AgentContext, AgentProvider, AgentRequest, AgentResponse, Error, ProviderError, StepSignature,
};

/// An agent call with every default applied: what the signature and the provider see.
#[derive(Debug, Clone)]
struct AgentCall {
    provider: Arc<dyn AgentProvider>,
    prompt: String,
    options: Value,
    phase: Option<String>,
    retry: RetryPolicy,
    /// Each provider call is stopped after this long (`timeoutMs`).
    timeout: Option<Duration>,
    isolation: Option<Isolation>,
    schema: Option<OutputSchema>,
    signature: StepSignature,
    checkpoint: String,
    /// Where the rules that named this run's steps put this call, when that differs: a
    /// completed step found there replays (see [`crate::agent_options::legacy_signature`]).
    legacy_checkpoint: Option<String>,
    /// Where smol-wf put this call of an inline child: a checkpoint of [`RunScope::inline_in`].
    inline_checkpoint: Option<String>,
}

/// How a provider call that produced no usable answer ended.
#[derive(Debug)]
enum CallEnd {
    Cancelled,
    Failed(ProviderError),
    /// The output did not match the call's schema, even after the corrective retry.
    Mismatch(String),
}

impl RunScope {
    /// `agent(prompt, options)`: a durable step that replays, or calls the provider once.
    pub(super) fn agent(
        self: Arc<Self>,
        prompt: String,
        options: Value,
        phase: Option<String>,
    ) -> HostFuture {
        match self.prepare_agent(prompt, options, phase) {
            Ok(call) => {
                let span = step_span("agent", &self.run_id, &call.checkpoint);
                let busy = self.ctx.agent_busy();
                async move {
                    let _busy = busy;
                    self.run_agent(call).await
                }
                .instrument(span)
                .boxed()
            }
            Err(error) => rejected(error),
        }
    }

    /// Completes the options (see [`crate::agent_options`]) and derives the step identity: the
    /// `key` when the call has one, else the signature of everything that determines the result.
    fn prepare_agent(
        &self,
        prompt: String,
        written: Value,
        current_phase: Option<String>,
    ) -> Result<AgentCall, HostError> {
        let settings = &self.ctx.settings;
        let defaults = OptionDefaults {
            phases: self
                .meta
                .as_ref()
                .map_or(&[], |meta| meta.phases.as_slice()),
            provider: &settings.provider,
            model_map: &settings.model_map,
        };
        let effective = effective_options(written.clone(), current_phase.as_deref(), &defaults)
            .map_err(|error| invalid(error.0))?;
        let schema = OutputSchema::from_options(&effective.options).map_err(invalid)?;
        let provider = self
            .ctx
            .engine
            .provider(&effective.provider)
            .ok_or_else(|| invalid(format!("Unknown agent provider: {}", effective.provider)))?;
        let cwd = settings.cwd.as_deref();
        let signature = match step_key(&effective.options) {
            Some(key) => StepSignature::keyed_agent(&self.scope, key),
            None => StepSignature::agent(
                &self.scope,
                &effective.provider,
                &prompt,
                &effective.options,
                effective.phase.as_deref(),
                cwd,
            ),
        };
        let checkpoint = self.next_checkpoint(&signature);
        let legacy_checkpoint = legacy_signature(
            settings.step_identity,
            &self.scope,
            &prompt,
            &written,
            current_phase.as_deref(),
            &effective,
            &defaults,
            cwd,
        )
        .filter(|legacy| legacy.hash != signature.hash)
        .map(|legacy| self.next_checkpoint(&legacy));
        // smol-wf knew no `key`: its signature is always the unkeyed one, in the root's scope.
        let inline_checkpoint = self.inline_in.as_ref().map(|root| {
            root.next_checkpoint(&StepSignature::agent(
                &root.scope,
                &effective.provider,
                &prompt,
                &effective.options,
                effective.phase.as_deref(),
                cwd,
            ))
        });
        Ok(AgentCall {
            provider,
            prompt,
            options: effective.options,
            phase: effective.phase,
            retry: self
                .ctx
                .engine
                .default_agent_retry
                .overridden_by(effective.retry),
            timeout: effective.timeout_ms.map(Duration::from_millis),
            isolation: effective.isolation,
            schema,
            signature,
            checkpoint,
            legacy_checkpoint,
            inline_checkpoint,
        })
    }

    async fn run_agent(self: Arc<Self>, call: AgentCall) -> Result<Value, HostError> {
        let input = json!({
            "prompt": call.prompt,
            "options": call.options,
            "provider": call.provider.name(),
            "context": { "phase": call.phase, "cwd": self.ctx.settings.cwd },
        });
        let legacy = self
            .completed_under_legacy_name(&call.checkpoint, call.legacy_checkpoint.as_deref())
            .or_else(|| self.completed_inline(&call.checkpoint, call.inline_checkpoint.as_deref()));
        if let Some(result) = legacy {
            return self.replay_agent(&call, result);
        }
        let lease_extra = step_lease_expires_at(0, 0, &call.retry) as u64;
        let (row, unclaimed) = match self
            .claim_or_defer(
                StepKind::Agent,
                &call.checkpoint,
                &call.signature,
                input,
                lease_extra,
                Some(call.prompt.len()),
                true,
            )
            .await?
        {
            Claim::Settled(Claimed::Replay { result, .. }) => {
                return self.replay_agent(&call, result)
            }
            Claim::Settled(Claimed::Ours(row)) => (*row, None),
            Claim::Deferred(new) => {
                // Held, so a cancellation with a session sink lets the call finish; its lease
                // is renewed once its claim is written.
                self.ctx.hold(
                    &new.step_id,
                    HeldStep {
                        fence: 1,
                        extra_ms: lease_extra,
                        agent: true,
                        claimed: false,
                    },
                );
                (new.clone().into_claimed_row(), Some(*new))
            }
        };
        let mut unclaimed = unclaimed;
        let outcome = self
            .call_provider(&call, &row, &mut unclaimed, lease_extra)
            .await;
        self.ctx.unhold(&row.step_id);
        outcome
    }

    /// Writes a deferred claim (`unclaimed`, when it has not been written): for a call running
    /// past [`Limits::deferred_claim`](crate::Limits::deferred_claim), or one ending otherwise
    /// than completed (its failure is recorded on the claimed row). Once written, the step is
    /// held (its lease renewed) like any claimed one. When another row stands under the step's
    /// name (or the write failed), the claim stays unwritten: the call ends with
    /// [`record_completed`], which resolves against that row.
    async fn write_claim(&self, unclaimed: &mut Option<NewStep>, lease_extra_ms: u64) {
        let Some(new) = unclaimed.take() else {
            return;
        };
        let claim = NewStep {
            lease_expires_at: self
                .ctx
                .step_lease_expires_at(self.ctx.now(), lease_extra_ms),
            ..new.clone()
        };
        match self.ctx.engine.store.insert_step(claim).await {
            Ok(InsertStep::Inserted(row)) => self.ctx.hold(
                &row.step_id,
                HeldStep {
                    fence: row.fence,
                    extra_ms: lease_extra_ms,
                    agent: true,
                    claimed: true,
                },
            ),
            Ok(InsertStep::Existing(row)) => {
                tracing::warn!(step_id = %row.step_id, "a deferred claim found the step claimed");
                *unclaimed = Some(new);
            }
            Err(error) => {
                tracing::warn!(step_id = %new.step_id, %error, "could not write a deferred claim");
                *unclaimed = Some(new);
            }
        }
    }

    /// Completes a deferred call whose record met another attempt's unfinished row: claims the
    /// step through the claim loop (waiting for a live holder, reclaiming an expired or failed
    /// row) and completes it under that claim with `stored`, its ledger rows moved to the
    /// claimed row; a holder that completed meanwhile is adopted.
    async fn complete_after_claim(
        &self,
        call: &AgentCall,
        deferred: &StepRecord,
        stored: Value,
        billed: Vec<LedgerEntry>,
        lease_extra_ms: u64,
    ) -> Result<Completed, Error> {
        let claimed = self
            .claim(
                StepKind::Agent,
                &call.checkpoint,
                &call.signature,
                deferred.input.clone(),
                lease_extra_ms,
                None,
            )
            .await
            .map_err(|error| Error::LeaseLost(error.message))?;
        let row = match claimed {
            Claimed::Replay { result, .. } => {
                return Ok(Completed {
                    value: result,
                    adopted: true,
                })
            }
            Claimed::Ours(row) => *row,
        };
        let ledger = billed
            .into_iter()
            .map(|entry| moved_to(entry, deferred, &row))
            .collect();
        let store = self.ctx.engine.store.as_ref();
        let now = self.ctx.now();
        let completed = complete_fenced(store, &row.step_id, row.fence, stored, ledger, now).await;
        self.ctx.unhold(&row.step_id);
        completed
    }

    /// Awaits a provider `call`, writing the deferred claim (`unclaimed`) if the call is still
    /// running [`Limits::deferred_claim`](crate::Limits::deferred_claim) after it started.
    async fn claimed_when_long<T>(
        &self,
        unclaimed: &mut Option<NewStep>,
        lease_extra_ms: u64,
        call: impl std::future::Future<Output = T>,
    ) -> T {
        if unclaimed.is_none() {
            return call.await;
        }
        let deferred_claim = self.ctx.engine.limits.deferred_claim;
        let late = crate::clock::sleep_for(self.ctx.engine.clock.as_ref(), deferred_claim);
        tokio::pin!(call);
        tokio::select! {
            biased;
            ended = &mut call => return ended,
            () = late => {}
        }
        self.write_claim(unclaimed, lease_extra_ms).await;
        call.await
    }

    /// The result smol-wf stored for this call of an inline child in the root run: only when
    /// this run has nothing under the call's current checkpoint and that step completed.
    fn completed_inline(&self, checkpoint: &str, inline: Option<&str>) -> Option<Value> {
        let root = self.inline_in.as_ref()?;
        if self.known_steps.lock().ok()?.contains_key(checkpoint) {
            return None;
        }
        let mut steps = root.known_steps.lock().ok()?;
        let row = take_completed(steps.get_mut(inline?))?;
        drop(steps);
        self.replayed_from_preload(row)
    }

    fn replay_agent(&self, call: &AgentCall, result: Value) -> Result<Value, HostError> {
        let response = AgentResponse::deserialize(&result).map_err(|error| {
            self.fatal(Error::Store(crate::StoreError::new(
                crate::StoreErrorKind::Corrupt,
                "replay",
                format!(
                    "stored result of {} is not an agent result: {error}",
                    call.checkpoint
                ),
            )))
        })?;
        self.emit(
            EventType::StepReplayed,
            None,
            json!({
                "kind": "agent",
                "checkpoint": call.checkpoint,
                "phase": call.phase,
                "promptPreview": prompt_preview(&call.prompt),
            }),
        );
        Ok(response.output)
    }

    /// Runs the call of a step that is ours: `row` as claimed, or (with `unclaimed`) as its
    /// deferred claim would write it.
    async fn call_provider(
        &self,
        call: &AgentCall,
        row: &StepRecord,
        unclaimed: &mut Option<NewStep>,
        lease_extra_ms: u64,
    ) -> Result<Value, HostError> {
        let fence = row.fence;
        let _slot = match &self.ctx.agent_slots {
            Some(slots) => tokio::select! {
                permit = Arc::clone(slots).acquire_owned() => permit.ok(),
                () = self.ctx.cancel.cancelled() => None,
            },
            None => None,
        };
        if self.ctx.cancel.is_cancelled() {
            if unclaimed.is_none() {
                self.close_step(row, State::Cancelled, "workflow cancelled", Vec::new())
                    .await;
            }
            return Err(cancelled());
        }
        let mut metadata =
            self.ctx
                .metadata(&self.run_id, self.depth, self.parent_step_id.as_deref());
        metadata.step_id = Some(row.step_id.clone());
        metadata.provider = Some(call.provider.name().to_owned());
        self.ctx.emit(
            EventType::AgentStarted,
            metadata.clone(),
            object(json!({ "phase": call.phase, "promptPreview": prompt_preview(&call.prompt) })),
        );
        let mut billed: Vec<LedgerEntry> = Vec::new();
        let request = AgentRequest {
            prompt: call.prompt.clone(),
            options: call.options.clone(),
            context: AgentContext {
                phase: call.phase.clone(),
                cwd: self.ctx.settings.cwd.clone(),
            },
            run_id: self.run_id.clone(),
            step_id: row.step_id.clone(),
            fence,
            events: self.agent_events(call, &metadata),
        };
        let calls = async {
            match (
                &call.schema,
                self.call_with_retry(call, &request, row, &mut billed, "")
                    .await,
            ) {
                (Some(schema), Ok(response)) => {
                    self.enforce_schema(call, &request, row, schema, response, &mut billed)
                        .await
                }
                (_, result) => result,
            }
        };
        let result = self
            .claimed_when_long(unclaimed, lease_extra_ms, calls)
            .await;
        // A failed or cancelled call is recorded on its claimed row (docs/reliability.md: a
        // stopped run's call in flight is marked cancelled), with the tries it paid for.
        if result.is_err() {
            self.write_claim(unclaimed, lease_extra_ms).await;
        }
        let response = match result {
            Ok(response) => response,
            Err(CallEnd::Cancelled) => {
                self.close_step(row, State::Cancelled, "workflow cancelled", billed)
                    .await;
                self.ctx.emit(
                    EventType::AgentFailed,
                    metadata,
                    object(json!({ "message": Error::Cancelled.to_string() })),
                );
                return Err(cancelled());
            }
            Err(CallEnd::Failed(error)) => {
                let message = error.to_string();
                return Err(self
                    .fail_agent_step(row, message, Error::Provider(error), billed, metadata)
                    .await);
            }
            Err(CallEnd::Mismatch(message)) => {
                let error = Error::SchemaMismatch {
                    message: message.clone(),
                };
                return Err(self
                    .fail_agent_step(row, message, error, billed, metadata)
                    .await);
            }
        };
        self.save_session(call, row, &response).await;
        let stored = serde_json::to_value(response.without_raw()).unwrap_or(Value::Null);
        let max_result = self.ctx.engine.limits.max_result_bytes;
        if let Some(message) = oversized("the agent result", &stored, max_result, RESULT_LIMIT) {
            self.write_claim(unclaimed, lease_extra_ms).await;
            // Paid for but not stored: billed like a failed try of this claim.
            billed.push(self.try_ledger_entry(row, "oversized", response.usage.as_ref()));
            let limit = Error::Script(crate::ScriptError::new(
                crate::ScriptErrorKind::Limit,
                message.clone(),
            ));
            let rejected = self
                .fail_agent_step(row, message, limit, billed, metadata)
                .await;
            // A limit: another attempt would pay for the same oversized answer again.
            return Err(self.fatal(Error::Script(crate::ScriptError::new(
                crate::ScriptErrorKind::Limit,
                rejected.message,
            ))));
        }
        // Tries paid for that did not become the result, for the completed event.
        let failed_tries: Vec<&LedgerEntry> = billed
            .iter()
            .filter(|entry| entry.source_type == LedgerSource::AgentTry)
            .collect();
        let failed_tries = (!failed_tries.is_empty()).then(|| {
            json!({
                "count": failed_tries.len(),
                "usage": crate::engine::usage::sum_usage(failed_tries.into_iter()),
            })
        });
        billed.push(LedgerEntry::new(
            &self.run_id,
            &self.ctx.root_run_id,
            &row.step_id,
            LedgerSource::AgentStep,
            row.step_id.clone(),
            response.usage.as_ref(),
            self.ctx.now(),
        ));
        let billed_tokens: u64 = billed.iter().map(|entry| entry.output_tokens).sum();
        let store = self.ctx.engine.store.as_ref();
        let now = self.ctx.now();
        let completed = match unclaimed.take() {
            Some(new) => {
                let attempt_id = &self.ctx.attempt.attempt_id;
                match record_completed(store, new, attempt_id, stored, billed, now)
                    .await
                    .map_err(|error| self.fatal(error))?
                {
                    Recorded::Completed(completed) => Ok(completed),
                    Recorded::Held { result, ledger, .. } => {
                        self.complete_after_claim(call, row, result, ledger, lease_extra_ms)
                            .await
                    }
                }
            }
            None => complete_fenced(store, &row.step_id, fence, stored, billed, now).await,
        }
        .map_err(|error| self.fatal(error))?;
        let adopted = completed.adopted;
        if !adopted {
            self.ctx.add_spent(billed_tokens);
        }
        metadata.session_id = response.session_id.clone();
        self.ctx.emit(
            EventType::AgentCompleted,
            metadata,
            object(completed_data(&response, failed_tries)),
        );
        if self.ctx.cancel.is_cancelled() {
            // Completed and paid for (the session sink needed the call to finish), but the run
            // is stopping.
            return Err(cancelled());
        }
        if !completed.adopted {
            // The stored result is this response's: its output needs no reading back.
            return Ok(response.output);
        }
        let seen = AgentResponse::deserialize(&completed.value).unwrap_or(response);
        Ok(seen.output)
    }

    /// One provider call: in a fresh worktree for an isolated call (each try starts from a
    /// clean checkout, never from what a failed or stopped try left), stopped at the call's
    /// `timeoutMs`, and dropped when the run is cancelled (unless a session-log sink waits for
    /// its transcript).
    async fn call_once(
        &self,
        call: &AgentCall,
        request: &AgentRequest,
    ) -> Result<Result<AgentResponse, ProviderError>, CallEnd> {
        let mut request = request.clone();
        let worktree = match call.isolation {
            Some(Isolation::Worktree) => match self.create_worktree().await {
                Ok(worktree) => {
                    request.context.cwd = Some(worktree.cwd().to_string_lossy().into_owned());
                    Some(worktree)
                }
                Err(message) => return Err(CallEnd::Failed(ProviderError::terminal(message))),
            },
            None => None,
        };
        let run = timed(call, call.provider.run(request));
        let result = if self.ctx.engine.session_sink.is_some() {
            run.await
        } else {
            tokio::select! {
                result = run => result,
                // Dropping the worktree removes it.
                () = self.ctx.cancel.cancelled() => return Err(CallEnd::Cancelled),
            }
        };
        let Some(worktree) = worktree else {
            return Ok(result);
        };
        let isolation = worktree.metadata();
        worktree.remove().await;
        Ok(result.map(|response| AgentResponse {
            isolation: Some(isolation),
            ..response
        }))
    }

    /// The worktree of an `isolation: "worktree"` call, in the run's directory (else the
    /// process's).
    async fn create_worktree(&self) -> Result<crate::worktree::AgentWorktree, String> {
        let cwd = match &self.ctx.settings.cwd {
            Some(cwd) => std::path::PathBuf::from(cwd),
            None => std::env::current_dir()
                .map_err(|error| format!("cannot read the current directory: {error}"))?,
        };
        crate::worktree::AgentWorktree::create(&cwd).await
    }

    /// The handle through which the provider's live events become `workflow.agent_event`
    /// events (smol-wf's data: `provider`, `sessionId`, `providerEvent`, `stepId`).
    fn agent_events(
        &self,
        call: &AgentCall,
        metadata: &crate::EventMetadata,
    ) -> crate::AgentEvents {
        let ctx = Arc::clone(&self.ctx);
        let metadata = metadata.clone();
        let provider = call.provider.name().to_owned();
        // Room for the fields around the provider's event, which alone is cut to fit.
        let limit = ctx
            .engine
            .limits
            .max_event_payload_bytes
            .saturating_sub(1_024)
            .max(256);
        crate::AgentEvents::new(move |event| {
            let mut metadata = metadata.clone();
            metadata.session_id.clone_from(&event.session_id);
            let mut bounded = object(json!({ "providerEvent": event.provider_event }));
            crate::events::bound_event_data(&mut bounded, limit);
            let truncated = bounded.contains_key("truncated");
            let provider_event = match bounded.remove("providerEvent") {
                Some(kept) if !bounded.contains_key("preview") => kept,
                // Too large even cut: its preview stands in for it.
                _ => Value::Object(bounded),
            };
            let mut data = object(json!({
                "provider": provider,
                "sessionId": event.session_id,
                "providerEvent": provider_event,
                "stepId": metadata.step_id,
            }));
            if let Some(action) = event.action {
                data.insert("action".to_owned(), Value::String(action));
            }
            if truncated {
                data.insert("truncated".to_owned(), Value::Bool(true));
            }
            ctx.emit(EventType::AgentEvent, metadata, data);
        })
    }

    /// Fails a claimed agent step with `message` (billing `billed`), reports it, and gives the
    /// rejection the script sees, standing for the typed `error`.
    async fn fail_agent_step(
        &self,
        row: &StepRecord,
        message: String,
        error: Error,
        billed: Vec<LedgerEntry>,
        metadata: crate::EventMetadata,
    ) -> HostError {
        self.close_step(row, State::Failed, &message, billed).await;
        self.ctx.emit(
            EventType::AgentFailed,
            metadata,
            object(json!({ "message": message })),
        );
        self.ctx.reject(HostErrorKind::Provider, message, error)
    }

    /// The ledger row of one paid try of a claimed step that did not become its result (a
    /// failed try, a rejected schema answer, an oversized answer): keyed by step, fence and
    /// `label`, so each try is billed once however often its completion is retried.
    fn try_ledger_entry(
        &self,
        row: &StepRecord,
        label: &str,
        usage: Option<&crate::Usage>,
    ) -> LedgerEntry {
        LedgerEntry::new(
            &self.run_id,
            &self.ctx.root_run_id,
            &row.step_id,
            LedgerSource::AgentTry,
            format!("{}:{}:{label}", row.step_id, row.fence),
            usage,
            self.ctx.now(),
        )
    }

    /// Hands a provider result, transcript included, to the session-log sink.
    async fn save_session(&self, call: &AgentCall, row: &StepRecord, response: &AgentResponse) {
        if let Some(sink) = &self.ctx.engine.session_sink {
            if let Err(error) = sink
                .save(call.provider.name(), &self.run_id, &row.step_id, response)
                .await
            {
                tracing::warn!(step_id = %row.step_id, %error, "session log sink failed");
            }
        }
    }

    /// Validates the output against the call's `schema`; on a mismatch asks once more with the
    /// errors appended to the prompt. Every answer is billed, the rejected ones as
    /// `agent_attempt` rows.
    async fn enforce_schema(
        &self,
        call: &AgentCall,
        request: &AgentRequest,
        row: &StepRecord,
        schema: &OutputSchema,
        first: AgentResponse,
        billed: &mut Vec<LedgerEntry>,
    ) -> Result<AgentResponse, CallEnd> {
        let errors = match schema.check(&first.output) {
            Ok(output) => return Ok(AgentResponse { output, ..first }),
            Err(errors) => errors,
        };
        self.save_session(call, row, &first).await;
        let bill = |response: &AgentResponse, label: &str, billed: &mut Vec<LedgerEntry>| {
            billed.push(self.try_ledger_entry(row, label, response.usage.as_ref()));
        };
        bill(&first, "schema-1", billed);
        let mut corrective = request.clone();
        corrective.prompt = corrective_prompt(&request.prompt, &errors);
        let second = self
            .call_with_retry(call, &corrective, row, billed, "schema-retry-")
            .await?;
        match schema.check(&second.output) {
            Ok(output) => Ok(AgentResponse { output, ..second }),
            Err(errors) => {
                self.save_session(call, row, &second).await;
                bill(&second, "schema-2", billed);
                Err(CallEnd::Mismatch(mismatch_message(&errors)))
            }
        }
    }

    /// Calls the provider up to `retry.max_tries` times for retryable errors, billing the
    /// usage of failed tries. Without a session-log sink, cancellation drops the call at once;
    /// with one, the call finishes so its transcript can be saved.
    async fn call_with_retry(
        &self,
        call: &AgentCall,
        request: &AgentRequest,
        row: &StepRecord,
        billed: &mut Vec<LedgerEntry>,
        label: &str,
    ) -> Result<AgentResponse, CallEnd> {
        let mut tries = 0;
        loop {
            // A call in flight may finish after cancellation (for the session sink); no new
            // call starts.
            if self.ctx.cancel.is_cancelled() {
                return Err(CallEnd::Cancelled);
            }
            tries += 1;
            let result = self.call_once(call, request).await?;
            let error = match result {
                Ok(response) => return Ok(response),
                Err(error) => error,
            };
            if let Some(usage) = error.usage() {
                billed.push(self.try_ledger_entry(row, &format!("{label}{tries}"), Some(usage)));
            }
            let Some(wait_ms) = call.retry.next_try_in(tries, &error) else {
                return Err(CallEnd::Failed(error));
            };
            tracing::debug!(step_id = %row.step_id, tries, %error, "retrying agent call");
            let mut metadata =
                self.ctx
                    .metadata(&self.run_id, self.depth, self.parent_step_id.as_deref());
            metadata.step_id = Some(row.step_id.clone());
            metadata.provider = Some(call.provider.name().to_owned());
            self.ctx.emit(
                EventType::AgentRetrying,
                metadata,
                object(json!({
                    "try": tries,
                    "maxTries": call.retry.max_tries,
                    "waitMs": wait_ms,
                    "message": error.to_string(),
                    "kind": error.kind().as_str(),
                })),
            );
            tokio::select! {
                () = crate::clock::sleep_for(self.ctx.engine.clock.as_ref(), Duration::from_millis(wait_ms)) => {}
                () = self.ctx.cancel.cancelled() => return Err(CallEnd::Cancelled),
            }
        }
    }
}

/// A provider call, stopped (dropped: its processes are killed) after the call's `timeoutMs`.
async fn timed(
    call: &AgentCall,
    run: impl std::future::Future<Output = Result<AgentResponse, ProviderError>>,
) -> Result<AgentResponse, ProviderError> {
    let Some(limit) = call.timeout else {
        return run.await;
    };
    match tokio::time::timeout(limit, run).await {
        Ok(result) => result,
        Err(_) => Err(ProviderError::transient(format!(
            "{} provider timed out after {} ms (timeoutMs)",
            call.provider.name(),
            limit.as_millis()
        ))),
    }
}

/// The `agent_completed` event's data: smol-wf's model, session and usage, and the tries that
/// were paid for before this answer (`failedTries`, only when there were some).
fn completed_data(response: &AgentResponse, failed_tries: Option<Value>) -> Value {
    let mut data = json!({
        "model": response.model,
        "sessionId": response.session_id,
        "usage": response.usage,
    });
    if let (Some(tries), Value::Object(map)) = (failed_tries, &mut data) {
        map.insert("failedTries".into(), tries);
    }
    data
}

/// A ledger row billed to the deferred step `from`, billed to the claimed row `to` instead
/// (its step id, and in a try's key the claim's fence).
fn moved_to(mut entry: LedgerEntry, from: &StepRecord, to: &StepRecord) -> LedgerEntry {
    if entry.step_id.as_deref() == Some(from.step_id.as_str()) {
        entry.step_id = Some(to.step_id.clone());
    }
    if entry.source_id == from.step_id {
        entry.source_id.clone_from(&to.step_id);
    } else if let Some(label) = entry
        .source_id
        .strip_prefix(&format!("{}:{}:", from.step_id, from.fence))
    {
        entry.source_id = format!("{}:{}:{label}", to.step_id, to.fence);
    }
    entry
}
