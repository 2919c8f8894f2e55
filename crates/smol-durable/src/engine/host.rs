//! The host side of a running script: turns `agent`, `sleep` and `workflow` calls into durable
//! steps, and `log`/`phase` into events. One [`RunScope`] per run (root or child).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::FutureExt;
use serde_json::{json, Value};
use tracing::Instrument;

use super::attempt::{object, AttemptCtx, HeldStep};
use super::steps::{acquire_step, complete_fenced, Acquired, KnownRow, StepClaim};
use crate::agent_options::{
    effective_options, legacy_signature, step_key, OptionDefaults, StepIdentity,
};
use crate::decide::{check_budget, sleep_wake_at, step_lease_expires_at, RetryPolicy};
use crate::events::{prompt_preview, EventType};
use crate::schema::{corrective_prompt, mismatch_message, OutputSchema};
use crate::script::{
    BudgetSnapshot, HostError, HostErrorKind, HostFuture, HostRequest, ScriptInvocation,
    WorkflowHost, WorkflowMeta, WorkflowSource,
};
use crate::signature::{child_workflow_scope, OccurrenceCounter};
use crate::store::{
    FailStep, LedgerEntry, NewChildRun, RunOutcome, RunRecord, State, StepCas, StepKind,
    StepRecord, WorkflowInfo,
};
use crate::{
    AgentContext, AgentProvider, AgentRequest, AgentResponse, Error, ProviderError, StepSignature,
};

/// One run of the tree being executed by an attempt.
#[derive(Debug)]
pub(crate) struct RunScope {
    ctx: Arc<AttemptCtx>,
    run_id: String,
    scope: String,
    depth: u32,
    parent_step_id: Option<String>,
    source_path: PathBuf,
    root_dir: PathBuf,
    meta: Option<WorkflowMeta>,
    occurrences: Mutex<OccurrenceCounter>,
    known_steps: Mutex<HashMap<String, StepRecord>>,
    /// For a child of a run smol-wf 0.3.4 started: that root's scope. smol-wf ran child
    /// workflows inline, so their calls' steps are the root run's, named in its scope and
    /// numbered with its occurrence counter; a call of this child finds its smol-wf step there.
    inline_in: Option<Arc<RunScope>>,
}

/// The [`WorkflowHost`] handed to the script engine.
#[derive(Debug, Clone)]
pub(crate) struct RunHost(Arc<RunScope>);

/// An agent call with every default applied: what the signature and the provider see.
#[derive(Debug, Clone)]
struct AgentCall {
    provider: Arc<dyn AgentProvider>,
    prompt: String,
    options: Value,
    phase: Option<String>,
    retry: RetryPolicy,
    schema: Option<OutputSchema>,
    signature: StepSignature,
    checkpoint: String,
    /// Where the rules that named this run's steps put this call, when that differs: a
    /// completed step found there replays (see [`crate::agent_options::legacy_signature`]).
    legacy_checkpoint: Option<String>,
    /// Where smol-wf put this call of an inline child: a checkpoint of [`RunScope::inline_in`].
    inline_checkpoint: Option<String>,
}

fn rejected(error: HostError) -> HostFuture {
    Box::pin(futures::future::ready(Err(error)))
}

fn invalid(message: impl Into<String>) -> HostError {
    HostError::new(HostErrorKind::Invalid, message)
}

fn cancelled() -> HostError {
    HostError::new(HostErrorKind::Cancelled, Error::Cancelled.to_string())
}

impl RunScope {
    pub async fn root(
        ctx: Arc<AttemptCtx>,
        run: &RunRecord,
        source: &WorkflowSource,
    ) -> Result<Arc<Self>, Error> {
        let root_dir = source
            .path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        Self::open(ctx, run.run_id.clone(), source, root_dir, None).await
    }

    /// The scope of `run_id`: the root's, or a child's called by `parent`'s step `step`.
    async fn open(
        ctx: Arc<AttemptCtx>,
        run_id: String,
        source: &WorkflowSource,
        root_dir: PathBuf,
        parent: Option<(&Arc<RunScope>, &StepRecord)>,
    ) -> Result<Arc<Self>, Error> {
        let (scope, depth, parent_step_id, inline_in) = match parent {
            None => ("root".to_owned(), 0, None, None),
            Some((parent, step)) => (
                child_workflow_scope(&step.checkpoint_name),
                parent.depth + 1,
                Some(step.step_id.clone()),
                (parent.depth == 0 && ctx.settings.step_identity == StepIdentity::SmolWf)
                    .then(|| Arc::clone(parent)),
            ),
        };
        // One query loads every step of the run: completed ones replay from it, and a checkpoint
        // missing from it is inserted without a read first (insert-if-absent settles any race).
        let known_steps = ctx
            .engine
            .store
            .load_steps(&run_id)
            .await?
            .into_iter()
            .map(|step| (step.checkpoint_name.clone(), step))
            .collect();
        // Phase defaults come from `meta`: a script whose metadata does not read fails here
        // rather than running with silently different models and providers.
        let meta = Some(ctx.engine.scripts.read_metadata(source)?);
        Ok(Arc::new(Self {
            ctx,
            run_id,
            scope,
            depth,
            parent_step_id,
            source_path: source.path.clone(),
            root_dir,
            meta,
            occurrences: Mutex::new(OccurrenceCounter::default()),
            known_steps: Mutex::new(known_steps),
            inline_in,
        }))
    }

    pub fn host(self: &Arc<Self>) -> RunHost {
        RunHost(Arc::clone(self))
    }

    pub fn emit(&self, event_type: EventType, step_id: Option<&str>, data: Value) {
        let mut metadata =
            self.ctx
                .metadata(&self.run_id, self.depth, self.parent_step_id.as_deref());
        metadata.step_id = step_id.map(str::to_owned);
        self.ctx.emit(event_type, metadata, object(data));
    }

    fn next_checkpoint(&self, signature: &StepSignature) -> String {
        let base = signature.base_checkpoint();
        match self.occurrences.lock() {
            Ok(mut counter) => counter.next(&base),
            Err(poisoned) => poisoned.into_inner().next(&base),
        }
    }

    /// What the preload says about a checkpoint. Each checkpoint is asked for once per attempt
    /// (occurrence numbering makes them unique), so the row is taken out of the map.
    fn take_known(&self, checkpoint: &str) -> KnownRow {
        match self.known_steps.lock() {
            Ok(mut steps) => steps
                .remove(checkpoint)
                .map_or(KnownRow::Absent, |row| KnownRow::Row(Box::new(row))),
            Err(_) => KnownRow::Unknown,
        }
    }

    /// Resolves `KnownRow::Unknown` with a read.
    async fn read_if_unknown(
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
            retry: effective.retry,
            schema,
            signature,
            checkpoint,
            legacy_checkpoint,
            inline_checkpoint,
        })
    }

    /// Waits for a step held by someone else: until the store says it finished, the next poll,
    /// or its lease runs out.
    async fn wait_for_holder(&self, row: &StepRecord) -> Result<(), HostError> {
        let poll = self.ctx.engine.limits.wait_poll;
        let now = self.ctx.now();
        let until_expiry = row
            .lease_expires_at
            .unwrap_or(now)
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

    /// Runs the claim loop until the step replays or is ours.
    /// With `budget_gate`, a call that would have to run (the row is not completed) is rejected
    /// when the budget is exhausted, before anything is written.
    async fn claim(
        &self,
        kind: StepKind,
        checkpoint: &str,
        signature: &StepSignature,
        input: Value,
        lease_extra_ms: u64,
        gate: Option<&AgentCall>,
    ) -> Result<Claimed, HostError> {
        let mut known = self.take_known(checkpoint);
        loop {
            if self.ctx.cancel.is_cancelled() {
                return Err(cancelled());
            }
            known = self.read_if_unknown(checkpoint, known).await?;
            let completed = matches!(&known, KnownRow::Row(row) if row.state == State::Completed);
            // An agent call that will run (not replay) must be affordable and within limits.
            if let (Some(call), false) = (gate, completed) {
                let budget = self.ctx.budget();
                if let Err(error) = check_budget(budget.total, budget.spent) {
                    return Err(HostError::new(
                        HostErrorKind::BudgetExhausted,
                        error.to_string(),
                    ));
                }
                let max_prompt = self.ctx.engine.limits.max_prompt_bytes;
                if call.prompt.len() > max_prompt {
                    return Err(invalid(format!(
                        "the agent prompt is {} bytes, more than the {max_prompt}-byte limit \
                         (Limits::max_prompt_bytes)",
                        call.prompt.len()
                    )));
                }
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
                lease_expires_at: now
                    .saturating_add(i64::try_from(self.ctx.lease_ttl_ms()).unwrap_or(i64::MAX))
                    .saturating_add(i64::try_from(lease_extra_ms).unwrap_or(i64::MAX)),
            };
            let hint = std::mem::replace(&mut known, KnownRow::Unknown);
            match acquire_step(self.ctx.engine.store.as_ref(), &claim, hint, now).await {
                Ok(Acquired::Replay(result)) => return Ok(Claimed::Replay(result)),
                Ok(Acquired::Claimed(row)) => {
                    self.ctx.hold(
                        &row.step_id,
                        HeldStep {
                            fence: row.attempts,
                            extra_ms: lease_extra_ms,
                            agent: kind == StepKind::Agent,
                        },
                    );
                    return Ok(Claimed::Ours(Box::new(row)));
                }
                Ok(Acquired::Wait(row)) => self.wait_for_holder(&row).await?,
                Err(error) => return Err(self.fatal(error)),
            }
        }
    }

    /// A durability failure: the script sees a rejection, and the run fails even if it catches it.
    fn fatal(&self, error: Error) -> HostError {
        let message = error.to_string();
        self.ctx.fail_fatally(error);
        HostError::new(HostErrorKind::Durability, message)
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
        let row = match self
            .claim(
                StepKind::Agent,
                &call.checkpoint,
                &call.signature,
                input,
                lease_extra,
                Some(&call),
            )
            .await?
        {
            Claimed::Replay(result) => return self.replay_agent(&call, result),
            Claimed::Ours(row) => *row,
        };
        let outcome = self.call_provider(&call, &row).await;
        self.ctx.release(&row.step_id);
        outcome
    }

    /// The result of a call the rules that named this run's steps stored under another
    /// checkpoint: only when nothing is stored under its current one and that step completed.
    fn completed_under_legacy_name(&self, checkpoint: &str, legacy: Option<&str>) -> Option<Value> {
        let legacy = legacy?;
        let mut steps = self.known_steps.lock().ok()?;
        if steps.contains_key(checkpoint) {
            return None;
        }
        match steps.get(legacy) {
            Some(row) if row.state == State::Completed => {
                steps.remove(legacy).and_then(|row| row.result)
            }
            _ => None,
        }
    }

    /// The result smol-wf stored for this call of an inline child in the root run: only when
    /// this run has nothing under the call's current checkpoint and that step completed.
    fn completed_inline(&self, checkpoint: &str, inline: Option<&str>) -> Option<Value> {
        let root = self.inline_in.as_ref()?;
        if self.known_steps.lock().ok()?.contains_key(checkpoint) {
            return None;
        }
        let mut steps = root.known_steps.lock().ok()?;
        match steps.get(inline?) {
            Some(row) if row.state == State::Completed => {
                steps.remove(inline?).and_then(|row| row.result)
            }
            _ => None,
        }
    }

    fn replay_agent(&self, call: &AgentCall, result: Value) -> Result<Value, HostError> {
        let response: AgentResponse = serde_json::from_value(result.clone()).map_err(|error| {
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

    async fn call_provider(&self, call: &AgentCall, row: &StepRecord) -> Result<Value, HostError> {
        let fence = row.attempts;
        let _slot = match &self.ctx.agent_slots {
            Some(slots) => tokio::select! {
                permit = Arc::clone(slots).acquire_owned() => permit.ok(),
                () = self.ctx.cancel.cancelled() => None,
            },
            None => None,
        };
        if self.ctx.cancel.is_cancelled() {
            self.close_step(row, State::Cancelled, "workflow cancelled", Vec::new())
                .await;
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
        let request = AgentRequest {
            prompt: call.prompt.clone(),
            options: call.options.clone(),
            context: AgentContext {
                phase: call.phase.clone(),
                cwd: self.ctx.settings.cwd.clone(),
            },
            run_id: self.run_id.clone(),
            step_id: row.step_id.clone(),
            attempt: fence,
        };
        let mut billed: Vec<LedgerEntry> = Vec::new();
        let result = match (
            &call.schema,
            self.call_with_retry(call, &request, row, &mut billed, "")
                .await,
        ) {
            (Some(schema), Ok(response)) => {
                self.enforce_schema(call, &request, row, schema, response, &mut billed)
                    .await
            }
            (_, result) => result,
        };
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
            Err(end @ (CallEnd::Failed(_) | CallEnd::Mismatch(_))) => {
                let message = match end {
                    CallEnd::Failed(error) => error.to_string(),
                    CallEnd::Mismatch(message) => message,
                    CallEnd::Cancelled => String::new(),
                };
                return Err(self.fail_agent_step(row, message, billed, metadata).await);
            }
        };
        self.save_session(call, row, &response).await;
        let stored = serde_json::to_value(response.without_raw()).unwrap_or(Value::Null);
        let max_result = self.ctx.engine.limits.max_result_bytes;
        if let Some(message) = crate::limits::oversized(
            "the agent result",
            &stored,
            max_result,
            crate::limits::RESULT_LIMIT,
        ) {
            // Paid for but not stored: billed like a failed try of this claim.
            billed.push(self.try_ledger_entry(row, "oversized", response.usage.as_ref()));
            let rejected = self.fail_agent_step(row, message, billed, metadata).await;
            // A limit: another attempt would pay for the same oversized answer again.
            return Err(self.fatal(Error::Script(crate::ScriptError::new(
                crate::ScriptErrorKind::Limit,
                rejected.message,
            ))));
        }
        billed.push(LedgerEntry::new(
            &self.run_id,
            &self.ctx.root_run_id,
            &row.step_id,
            "agent_step",
            row.step_id.clone(),
            response.usage.as_ref(),
            self.ctx.now(),
        ));
        let billed_tokens: u64 = billed.iter().map(|entry| entry.output_tokens).sum();
        let completed = complete_fenced(
            self.ctx.engine.store.as_ref(),
            &row.step_id,
            fence,
            stored,
            billed,
            self.ctx.now(),
        )
        .await
        .map_err(|error| self.fatal(error))?;
        let adopted = completed.adopted;
        if !adopted {
            self.ctx.add_spent(billed_tokens);
        }
        metadata.session_id = response.session_id.clone();
        self.ctx.emit(
            EventType::AgentCompleted,
            metadata,
            object(json!({ "model": response.model, "sessionId": response.session_id, "usage": response.usage })),
        );
        if self.ctx.cancel.is_cancelled() {
            // Completed and paid for (the session sink needed the call to finish), but the run
            // is stopping.
            return Err(cancelled());
        }
        let seen: AgentResponse = serde_json::from_value(completed.value).unwrap_or(response);
        Ok(seen.output)
    }

    /// Fails a claimed agent step with `message` (billing `billed`), reports it, and gives the
    /// rejection the script sees.
    async fn fail_agent_step(
        &self,
        row: &StepRecord,
        message: String,
        billed: Vec<LedgerEntry>,
        metadata: crate::EventMetadata,
    ) -> HostError {
        self.close_step(row, State::Failed, &message, billed).await;
        self.ctx.emit(
            EventType::AgentFailed,
            metadata,
            object(json!({ "message": message })),
        );
        HostError::new(HostErrorKind::Provider, message)
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
            "agent_attempt",
            format!("{}:{}:{label}", row.step_id, row.attempts),
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

    /// Calls the provider up to `retry.max_attempts` times for retryable errors, billing the
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
            let attempt = call.provider.run(request.clone());
            let result = if self.ctx.engine.session_sink.is_some() {
                attempt.await
            } else {
                tokio::select! {
                    result = attempt => result,
                    () = self.ctx.cancel.cancelled() => return Err(CallEnd::Cancelled),
                }
            };
            let error = match result {
                Ok(response) => return Ok(response),
                Err(error) => error,
            };
            if let Some(usage) = error.usage() {
                billed.push(self.try_ledger_entry(row, &format!("{label}{tries}"), Some(usage)));
            }
            if !error.is_retryable() || tries >= call.retry.max_attempts {
                return Err(CallEnd::Failed(error));
            }
            tracing::debug!(step_id = %row.step_id, tries, %error, "retrying agent call");
            let backoff = Duration::from_millis(call.retry.backoff_ms);
            tokio::select! {
                () = crate::clock::sleep_for(self.ctx.engine.clock.as_ref(), backoff) => {}
                () = self.ctx.cancel.cancelled() => return Err(CallEnd::Cancelled),
            }
        }
    }

    /// Marks a step we hold failed or cancelled (fenced), writing billed usage with it.
    async fn close_step(
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
                fence: row.attempts,
                state,
                reason: json!({ "message": message }),
                ledger,
                now: self.ctx.now(),
            })
            .await;
        self.ctx.release(&row.step_id);
        match closed {
            Ok(StepCas::Applied(_)) => self.ctx.add_spent(tokens),
            Ok(StepCas::Conflict(_)) => {}
            Err(error) => {
                tracing::warn!(step_id = %row.step_id, %error, "could not record a step failure");
            }
        }
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
                Claimed::Replay(_) => {
                    self.emit(
                        EventType::StepReplayed,
                        None,
                        json!({ "kind": "sleep", "checkpoint": checkpoint, "durationMs": duration_ms }),
                    );
                    return Ok(Value::Null);
                }
                Claimed::Ours(row) => *row,
            };
            let wake_at = crate::decide::wake_at(&row).map_err(|error| self.fatal(error))?;
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
                complete_fenced(store, &row.step_id, row.attempts, result, Vec::new(), now).await;
            self.ctx.release(&row.step_id);
            match completed {
                Ok(_) => return Ok(Value::Null),
                // Taken over while we slept (our owner was presumed gone): decide again.
                Err(Error::LeaseLost(_)) => {}
                Err(error) => return Err(self.fatal(error)),
            }
        }
    }

    async fn run_workflow(self: Arc<Self>, step: ChildStep) -> Result<Value, HostError> {
        let ChildStep {
            reference,
            args,
            signature,
            checkpoint,
            legacy_checkpoint,
        } = step;
        if let Some(result) =
            self.completed_under_legacy_name(&checkpoint, legacy_checkpoint.as_deref())
        {
            self.emit(
                EventType::StepReplayed,
                None,
                json!({ "kind": "workflow", "checkpoint": checkpoint, "ref": reference }),
            );
            return Ok(result.get("value").cloned().unwrap_or(Value::Null));
        }
        let child_run_id = crate::new_id("run");
        let input = json!({ "ref": reference, "args": args, "childRunId": child_run_id });
        let row = match self
            .claim(StepKind::Workflow, &checkpoint, &signature, input, 0, None)
            .await?
        {
            Claimed::Replay(result) => {
                self.emit(
                    EventType::StepReplayed,
                    None,
                    json!({ "kind": "workflow", "checkpoint": checkpoint, "ref": reference }),
                );
                return Ok(result.get("value").cloned().unwrap_or(Value::Null));
            }
            Claimed::Ours(row) => *row,
        };
        // A reclaimed step keeps the child run it started the first time.
        let child_run_id = row
            .input
            .get("childRunId")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .unwrap_or(child_run_id);
        // Resolved only now: replaying a completed child needs neither its file nor a valid ref.
        let source = match self.child_source(&reference, &child_run_id).await {
            Ok(source) => source,
            Err(error) => {
                self.close_step(&row, State::Failed, &error.message, Vec::new())
                    .await;
                return Err(error);
            }
        };
        let outcome = Arc::clone(&self)
            .execute_child(&row, &child_run_id, source, args)
            .await;
        let store = self.ctx.engine.store.as_ref();
        let now = self.ctx.now();
        match outcome {
            Ok(value) => {
                if let Err(error) = store
                    .finish_child_run(&child_run_id, RunOutcome::Completed(value.clone()), now)
                    .await
                {
                    return Err(self.fatal(error.into()));
                }
                let result = json!({ "value": value, "childRunId": child_run_id });
                let seen =
                    complete_fenced(store, &row.step_id, row.attempts, result, Vec::new(), now)
                        .await
                        .map_err(|error| self.fatal(error));
                self.ctx.release(&row.step_id);
                Ok(seen?.value.get("value").cloned().unwrap_or(Value::Null))
            }
            Err(error) => {
                let cancelled_run = error.kind == crate::HostErrorKind::Cancelled;
                let reason = json!({ "message": error.message });
                let run_outcome = if cancelled_run {
                    RunOutcome::Cancelled(reason)
                } else {
                    RunOutcome::Failed(reason)
                };
                if let Err(store_error) = store
                    .finish_child_run(&child_run_id, run_outcome, now)
                    .await
                {
                    tracing::warn!(%store_error, %child_run_id, "could not record child run failure");
                }
                let state = if cancelled_run {
                    State::Cancelled
                } else {
                    State::Failed
                };
                self.close_step(&row, state, &error.message, Vec::new())
                    .await;
                Err(error)
            }
        }
    }

    async fn execute_child(
        self: Arc<Self>,
        row: &StepRecord,
        child_run_id: &str,
        source: WorkflowSource,
        args: Value,
    ) -> Result<Value, HostError> {
        let store = self.ctx.engine.store.as_ref();
        let meta = match self.ctx.engine.scripts.read_metadata(&source) {
            Ok(meta) => meta,
            Err(error) => {
                return Err(HostError::new(
                    HostErrorKind::Workflow,
                    format!(
                        "child workflow {} cannot start: {error}",
                        source.path.display()
                    ),
                ))
            }
        };
        let hash = source.content_hash();
        store
            .put_script(&hash, &source.text)
            .await
            .map_err(|error| self.fatal(error.into()))?;
        let mut workflow = WorkflowInfo::new();
        workflow.script_path = Some(source.path.display().to_string());
        workflow.script_hash = Some(hash);
        workflow.metadata = serde_json::to_value(meta).ok();
        workflow.cwd = self.ctx.settings.cwd.clone();
        store
            .create_child_run(NewChildRun {
                run_id: child_run_id.to_owned(),
                task_id: self.ctx.task_id.clone(),
                root_run_id: self.ctx.root_run_id.clone(),
                parent_run_id: self.run_id.clone(),
                parent_step_id: row.step_id.clone(),
                workflow,
                args: args.clone(),
                now: self.ctx.now(),
            })
            .await
            .map_err(|error| self.fatal(error.into()))?;
        // A named workflow from the project's workflow directories may live outside the root
        // workflow's directory: its own references stay inside its own.
        let root_dir = if crate::paths::normalize(&source.path)
            .starts_with(crate::paths::normalize(&self.root_dir))
        {
            self.root_dir.clone()
        } else {
            source
                .path
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_default()
        };
        let child = RunScope::open(
            Arc::clone(&self.ctx),
            child_run_id.to_owned(),
            &source,
            root_dir,
            Some((&self, row)),
        )
        .await
        .map_err(|error| self.fatal(error))?;
        child.emit(
            EventType::Started,
            None,
            json!({ "startTime": crate::clock::rfc3339_ms(self.ctx.now()) }),
        );
        let invocation = ScriptInvocation {
            source,
            args,
            host: Arc::new(child.host()),
            cancel: self.ctx.cancel.clone(),
        };
        let max_result = self.ctx.engine.limits.max_result_bytes;
        let evaluated = self
            .ctx
            .engine
            .scripts
            .evaluate(invocation)
            .await
            .and_then(|value| {
                match crate::limits::oversized(
                    "the child workflow's result",
                    &value,
                    max_result,
                    crate::limits::RESULT_LIMIT,
                ) {
                    Some(message) => Err(crate::ScriptError::new(
                        crate::ScriptErrorKind::Limit,
                        message,
                    )),
                    None => Ok(value),
                }
            });
        match evaluated {
            Ok(value) => {
                // Reporting only: a usage that cannot be read must not fail the child.
                let usage = super::attempt::run_usage(store, &self.ctx.root_run_id, child_run_id)
                    .await
                    .unwrap_or_default();
                child.emit(
                    EventType::Result,
                    None,
                    json!({ "results": value, "tokenUsage": usage }),
                );
                Ok(value)
            }
            Err(error) => {
                child.emit(
                    EventType::Error,
                    None,
                    json!({ "message": error.to_string() }),
                );
                if self.ctx.cancel.is_cancelled() {
                    return Err(cancelled());
                }
                Err(HostError::new(
                    HostErrorKind::Workflow,
                    format!(
                        "child workflow {} failed: {error}",
                        child.source_path.display()
                    ),
                ))
            }
        }
    }

    /// The child's script: the ref resolved now (so a fixed script can continue), else the
    /// source stored when this child run first started.
    async fn child_source(
        &self,
        reference: &Value,
        child_run_id: &str,
    ) -> Result<WorkflowSource, HostError> {
        let resolved = self.resolve_child(reference).await;
        let Err(error) = resolved else {
            return resolved;
        };
        let store = self.ctx.engine.store.as_ref();
        let stored = match store.get_run(child_run_id).await {
            Ok(Some(run)) => match (&run.workflow.script_hash, &run.workflow.script_path) {
                (Some(hash), Some(path)) => store
                    .get_script(hash)
                    .await
                    .ok()
                    .flatten()
                    .map(|text| WorkflowSource::inline(path.as_str(), text)),
                _ => None,
            },
            _ => None,
        };
        stored.ok_or(error)
    }

    /// A named workflow from the project's workflow directories, searched from the calling
    /// script's directory; smol-wf's message when there is none.
    async fn find_named(&self, name: &str) -> Result<WorkflowSource, HostError> {
        let start = self
            .source_path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let scripts = Arc::clone(&self.ctx.engine.scripts);
        let wanted = name.to_owned();
        let found = tokio::task::spawn_blocking(move || {
            let dirs = crate::paths::named_workflow_dirs(&start);
            let path = crate::paths::find_named_workflow(&dirs, &wanted, |path| {
                let source = WorkflowSource::from_file(path).ok()?;
                scripts.read_metadata(&source).ok().map(|meta| meta.name)
            })?;
            WorkflowSource::from_file(path).ok()
        })
        .await;
        match found {
            Ok(Some(source)) => Ok(source),
            Ok(None) => Err(invalid(format!("Unknown workflow: {name}"))),
            Err(join_error) => Err(invalid(format!(
                "looking up workflow {name} failed: {join_error}"
            ))),
        }
    }

    /// Resolves `workflow(ref)`: a `{scriptPath}` relative to the calling script and confined to
    /// the root workflow's directory, or a name: registered with the engine, else found in the
    /// project's workflow directories ([`crate::paths::named_workflow_dirs`], never the
    /// process's working directory).
    async fn resolve_child(&self, reference: &Value) -> Result<WorkflowSource, HostError> {
        let name = match reference {
            Value::String(name) => Some(name.as_str()),
            Value::Object(map) => map.get("name").and_then(Value::as_str),
            _ => None,
        };
        if let Some(name) = name {
            if let Some(source) = self.ctx.engine.named_workflows.get(name) {
                return Ok(source.clone());
            }
            return self.find_named(name).await;
        }
        let script_path = reference
            .get("scriptPath")
            .and_then(Value::as_str)
            .ok_or_else(|| {
                invalid(format!(
                    "workflow ref must be a name or {{scriptPath}}, got {reference}"
                ))
            })?;
        let base = self.source_path.parent().unwrap_or(Path::new(""));
        let joined = crate::paths::normalize(&base.join(script_path));
        if !joined.starts_with(crate::paths::normalize(&self.root_dir)) {
            return Err(invalid(format!(
                "workflow path {script_path:?} resolves outside the workflow directory {}",
                self.root_dir.display()
            )));
        }
        if let Some(source) = self.ctx.engine.workflows_by_path.get(&joined) {
            return Ok(source.clone());
        }
        let path = joined.clone();
        let root = self.root_dir.clone();
        let read = tokio::task::spawn_blocking(move || -> Result<WorkflowSource, String> {
            // Symlinks must not lead out of the workflow directory either.
            let real = crate::paths::confined(&root, &path).map_err(|error| match error {
                crate::paths::ConfineError::Outside { .. } => format!(
                    "workflow {} resolves outside the workflow directory",
                    path.display()
                ),
                other => format!("cannot open workflow: {other}"),
            })?;
            let text = std::fs::read_to_string(&real)
                .map_err(|e| format!("cannot read workflow {}: {e}", path.display()))?;
            Ok(WorkflowSource { path, text })
        })
        .await;
        match read {
            Ok(Ok(source)) => Ok(source),
            Ok(Err(message)) => Err(invalid(message)),
            Err(join_error) => Err(invalid(format!("reading workflow failed: {join_error}"))),
        }
    }
}

fn step_span(kind: &'static str, run_id: &str, checkpoint: &str) -> tracing::Span {
    tracing::info_span!("step", kind, run_id = %run_id, checkpoint = %checkpoint)
}

/// A `workflow(ref, args)` call with its identity.
#[derive(Debug)]
struct ChildStep {
    reference: Value,
    args: Value,
    signature: StepSignature,
    checkpoint: String,
    /// Where smol-durable 0.1.0 stored this call, when that differs.
    legacy_checkpoint: Option<String>,
}

#[derive(Debug)]
enum Claimed {
    Replay(Value),
    Ours(Box<StepRecord>),
}

#[derive(Debug)]
enum CallEnd {
    Cancelled,
    Failed(ProviderError),
    /// The output did not match the call's schema, even after the corrective retry.
    Mismatch(String),
}

impl WorkflowHost for RunHost {
    fn call(&self, request: HostRequest) -> HostFuture {
        let scope = Arc::clone(&self.0);
        if scope.ctx.cancel.is_cancelled()
            && matches!(
                request,
                HostRequest::Agent { .. }
                    | HostRequest::Sleep { .. }
                    | HostRequest::Workflow { .. }
            )
        {
            return rejected(cancelled());
        }
        match request {
            HostRequest::Agent {
                prompt,
                options,
                phase,
            } => match scope.prepare_agent(prompt, options, phase) {
                Ok(call) => {
                    let span = step_span("agent", &scope.run_id, &call.checkpoint);
                    let busy = scope.ctx.agent_busy();
                    async move {
                        let _busy = busy;
                        scope.run_agent(call).await
                    }
                    .instrument(span)
                    .boxed()
                }
                Err(error) => rejected(error),
            },
            HostRequest::Sleep { duration_ms } => {
                let max = scope.ctx.engine.limits.max_sleep_ms;
                if duration_ms > max {
                    return rejected(invalid(format!(
                        "sleep duration {duration_ms} ms exceeds the maximum of {max} ms"
                    )));
                }
                let checkpoint =
                    scope.next_checkpoint(&StepSignature::sleep(&scope.scope, duration_ms));
                let span = step_span("sleep", &scope.run_id, &checkpoint);
                scope
                    .run_sleep(duration_ms, checkpoint)
                    .instrument(span)
                    .boxed()
            }
            HostRequest::Workflow { reference, args } => {
                let max = scope.ctx.engine.limits.max_workflow_depth;
                if scope.depth + 1 > max {
                    return rejected(invalid(format!(
                        "workflow nesting depth {} exceeds the maximum of {max}",
                        scope.depth + 1
                    )));
                }
                let signature = StepSignature::workflow(&scope.scope, &reference, &args);
                let checkpoint = scope.next_checkpoint(&signature);
                // smol-durable 0.1.0 gave a child called without arguments `{}`, not `null`.
                let legacy_checkpoint = (args.is_null()
                    && scope.ctx.settings.step_identity == StepIdentity::SmolDurable01)
                    .then(|| {
                        let legacy = StepSignature::workflow(&scope.scope, &reference, &json!({}));
                        scope.next_checkpoint(&legacy)
                    });
                let span = step_span("workflow", &scope.run_id, &checkpoint);
                let step = ChildStep {
                    reference,
                    args,
                    signature,
                    checkpoint,
                    legacy_checkpoint,
                };
                scope.run_workflow(step).instrument(span).boxed()
            }
            HostRequest::Log { values } => {
                let message = values
                    .iter()
                    .map(|value| match value {
                        Value::String(text) => text.clone(),
                        other => other.to_string(),
                    })
                    .collect::<Vec<_>>()
                    .join(" ");
                scope.emit(EventType::Log, None, json!({ "message": message }));
                Box::pin(futures::future::ready(Ok(Value::Null)))
            }
            HostRequest::Phase { name, options } => {
                let mut data = json!({ "name": name });
                if let Some(options) = options {
                    data["options"] = options;
                }
                scope.emit(EventType::Phase, None, data);
                Box::pin(futures::future::ready(Ok(Value::Null)))
            }
        }
    }

    fn budget(&self) -> BudgetSnapshot {
        self.0.ctx.budget()
    }
}
