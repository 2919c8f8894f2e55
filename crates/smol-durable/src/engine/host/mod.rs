//! The host side of a running script: each host call becomes a durable step (`agent`,
//! `sleep`, child `workflow`) or an event (`log`, `phase`). One [`RunScope`] per run (root or
//! child). This file dispatches the calls and holds what every step kind shares: the claim
//! loop, waiting for another holder, and closing a step; the step kinds live in `agent`,
//! `sleep` and `child`, and `workflow_refs` resolves what a child call names.

mod agent;
mod child;
mod sleep;
mod workflow_refs;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};

use super::context::{object, AttemptCtx, HeldStep};
use super::steps::{acquire_step, Acquired, KnownRow, StepClaim};
use crate::agent_options::StepIdentity;
use crate::decide::reason;
use crate::events::EventType;
use crate::script::{
    BudgetSnapshot, HostError, HostErrorKind, HostFuture, HostRequest, WorkflowHost, WorkflowMeta,
    WorkflowSource,
};
use crate::signature::{child_workflow_scope, OccurrenceCounter};
use crate::store::{FailStep, LedgerEntry, RunRecord, State, StepCas, StepKind, StepRecord};
use crate::{Error, StepSignature};

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

fn rejected(error: HostError) -> HostFuture {
    Box::pin(futures::future::ready(Err(error)))
}

fn invalid(message: impl Into<String>) -> HostError {
    HostError::new(HostErrorKind::Invalid, message)
}

fn cancelled() -> HostError {
    HostError::new(HostErrorKind::Cancelled, Error::Cancelled.to_string())
}

fn step_span(kind: &'static str, run_id: &str, checkpoint: &str) -> tracing::Span {
    tracing::info_span!("step", kind, run_id = %run_id, checkpoint = %checkpoint)
}

/// What the claim loop settled on.
#[derive(Debug)]
enum Claimed {
    /// Completed earlier: its stored result.
    Replay(Value),
    /// Ours to run, under the row's fence.
    Ours(Box<StepRecord>),
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

    /// Runs the claim loop until the step replays or is ours. A call that would have to run
    /// (its row is not completed) first passes `admit`, which may reject it before anything is
    /// written (an agent call over the budget or the prompt limit).
    async fn claim(
        &self,
        kind: StepKind,
        checkpoint: &str,
        signature: &StepSignature,
        input: Value,
        lease_extra_ms: u64,
        admit: Option<&(dyn Fn() -> Result<(), HostError> + Sync)>,
    ) -> Result<Claimed, HostError> {
        let mut known = self.take_known(checkpoint);
        loop {
            if self.ctx.cancel.is_cancelled() {
                return Err(cancelled());
            }
            known = self.read_if_unknown(checkpoint, known).await?;
            let completed = matches!(&known, KnownRow::Row(row) if row.state == State::Completed);
            if let (Some(admit), false) = (admit, completed) {
                admit()?;
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
                            fence: row.fence,
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
            } => scope.agent(prompt, options, phase),
            HostRequest::Sleep { duration_ms } => scope.sleep(duration_ms),
            HostRequest::Workflow { reference, args } => scope.workflow(reference, args),
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
