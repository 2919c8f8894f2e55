//! The host side of a running script: each host call becomes a durable step (`agent`,
//! `sleep`, child `workflow`, `wait`, `signal`) or an event (`log`, `phase`). One [`RunScope`] per run (root or
//! child). This file holds the scope and dispatches the calls; the step kinds live in `agent`,
//! `sleep` and `child`, each claiming its step through `claim` (the claim loop every kind
//! shares), and `workflow_refs` resolves what a child call names.

mod agent;
mod child;
mod claim;
mod signal;
mod sleep;
mod wait;
mod workflow_refs;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};

use super::context::{object, AttemptCtx};
use crate::agent_options::StepIdentity;
use crate::events::EventType;
use crate::script::{
    BudgetSnapshot, CallSite, HostError, HostErrorKind, HostFuture, HostRequest, WorkflowHost,
    WorkflowMeta, WorkflowSource,
};
use crate::signature::{child_workflow_scope, OccurrenceCounter};
use crate::store::{NewStep, RunRecord, StepRecord};
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
    /// The run's steps as loaded when the scope opened, by checkpoint; a row a claim has taken
    /// is `None` (its checkpoint existed, but only the store knows its state now).
    known_steps: Mutex<HashMap<String, Option<StepRecord>>>,
    /// For a child of a run smol-wf 0.3.4 started: that root's scope. smol-wf ran child
    /// workflows inline, so their calls' steps are the root run's, named in its scope and
    /// numbered with its occurrence counter; a call of this child finds its smol-wf step there.
    inline_in: Option<Arc<RunScope>>,
    /// Where the call being dispatched was made (an offline replay reports it); each scope's
    /// script runs on its own thread, so its own slot.
    call_site: Mutex<Option<CallSite>>,
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
    Replay { result: Value, step_id: String },
    /// Ours to run, under the row's fence.
    Ours(Box<StepRecord>),
}

/// What the claim loop settled on for a step whose claim may be deferred.
#[derive(Debug)]
enum Claim {
    /// Settled as any claim is.
    Settled(Claimed),
    /// Ours to run with no row written yet: the row its claim would insert.
    Deferred(Box<NewStep>),
}

impl RunScope {
    /// The root run's scope, over its `steps` as the attempt read them.
    pub fn root(
        ctx: Arc<AttemptCtx>,
        run: &RunRecord,
        source: &WorkflowSource,
        steps: Vec<StepRecord>,
    ) -> Result<Arc<Self>, Error> {
        let root_dir = source
            .path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        Self::open(ctx, run.run_id.clone(), source, root_dir, None, steps)
    }

    /// The scope of `run_id`: the root's, or a child's called by `parent`'s step `step`, over
    /// every step of the run, read in one query: completed ones replay from it, and a
    /// checkpoint missing from it is inserted without a read first (insert-if-absent settles
    /// any race).
    fn open(
        ctx: Arc<AttemptCtx>,
        run_id: String,
        source: &WorkflowSource,
        root_dir: PathBuf,
        parent: Option<(&Arc<RunScope>, &StepRecord)>,
        steps: Vec<StepRecord>,
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
        let known_steps = steps
            .into_iter()
            .map(|step| (step.checkpoint_name.clone(), Some(step)))
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
            call_site: Mutex::new(None),
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
        let checkpoint = match self.occurrences.lock() {
            Ok(mut counter) => counter.next(&base),
            Err(poisoned) => poisoned.into_inner().next(&base),
        };
        if let Some(replay) = &self.ctx.settings.replay {
            let site = self.call_site.lock().ok().and_then(|site| site.clone());
            replay.named(&checkpoint, site);
        }
        checkpoint
    }

    /// The completed steps this scope loaded that no call reached (nor a claim took out of the
    /// preload), in the order the run reached them.
    pub fn unreached(&self) -> Vec<StepRecord> {
        let Ok(steps) = self.known_steps.lock() else {
            return Vec::new();
        };
        let mut unreached: Vec<StepRecord> = steps
            .values()
            .flatten()
            .filter(|step| step.state == crate::store::State::Completed)
            .cloned()
            .collect();
        unreached.sort_by(StepRecord::reached_order);
        unreached
    }

    /// A durability failure: the script sees a rejection, and the run fails even if it catches it.
    fn fatal(&self, error: Error) -> HostError {
        let message = error.to_string();
        self.ctx.fail_fatally(error);
        HostError::new(HostErrorKind::Durability, message)
    }
}

impl WorkflowHost for RunHost {
    fn call_at(&self, request: HostRequest, site: Option<CallSite>) -> HostFuture {
        if let Ok(mut slot) = self.0.call_site.lock() {
            *slot = site;
        }
        self.call(request)
    }

    fn wants_call_sites(&self) -> bool {
        self.0.ctx.settings.replay.is_some()
    }

    fn answers_at_once(&self) -> bool {
        self.0.ctx.settings.replay.is_some()
    }

    fn call(&self, request: HostRequest) -> HostFuture {
        let scope = Arc::clone(&self.0);
        if scope.ctx.cancel.is_cancelled()
            && matches!(
                request,
                HostRequest::Agent { .. }
                    | HostRequest::Sleep { .. }
                    | HostRequest::Workflow { .. }
                    | HostRequest::Wait { .. }
                    | HostRequest::Signal { .. }
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
            HostRequest::Wait {
                names,
                options,
                any,
            } => scope.wait(names.into_iter().map(Value::String).collect(), options, any),
            HostRequest::Signal {
                run_id,
                name,
                payload,
            } => scope.signal(run_id, name, payload),
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
