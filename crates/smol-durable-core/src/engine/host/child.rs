//! Child `workflow()` calls: a step that starts (or continues) a child run, evaluates its
//! script in the same attempt, and records its result.

use std::path::Path;
use std::sync::Arc;

use futures::FutureExt;
use serde_json::{json, Value};
use tracing::Instrument;

use super::{cancelled, rejected, step_span, Claimed, RunScope};
use crate::agent_options::StepIdentity;
use crate::engine::steps::complete_fenced;
use crate::engine::usage::run_usage;
use crate::events::EventType;
use crate::limits::{oversized, RESULT_LIMIT};
use crate::script::{HostError, HostErrorKind, HostFuture, ScriptInvocation, WorkflowSource};
use crate::store::{NewChildRun, RunOutcome, State, StepKind, StepRecord, WorkflowInfo};
use crate::StepSignature;

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

impl RunScope {
    /// `workflow(ref, args)`: a durable step that replays a finished child, or runs it.
    pub(super) fn workflow(self: Arc<Self>, reference: Value, args: Value) -> HostFuture {
        let max = self.ctx.engine.limits.max_workflow_depth;
        if self.depth + 1 > max {
            return rejected(self.ctx.reject_limit(format!(
                "workflow nesting depth {} exceeds the maximum of {max}",
                self.depth + 1
            )));
        }
        let signature = StepSignature::workflow(&self.scope, &reference, &args);
        let checkpoint = self.next_checkpoint(&signature);
        // smol-durable 0.1.0 gave a child called without arguments `{}`, not `null`.
        let legacy_checkpoint = (args.is_null()
            && self.ctx.settings.step_identity == StepIdentity::SmolDurable01)
            .then(|| {
                let legacy = StepSignature::workflow(&self.scope, &reference, &json!({}));
                self.next_checkpoint(&legacy)
            });
        let span = step_span("workflow", &self.run_id, &checkpoint);
        let step = ChildStep {
            reference,
            args,
            signature,
            checkpoint,
            legacy_checkpoint,
        };
        self.run_workflow(step).instrument(span).boxed()
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
            Claimed::Replay { result, .. } => {
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
                let seen = complete_fenced(store, &row.step_id, row.fence, result, Vec::new(), now)
                    .await
                    .map_err(|error| self.fatal(error));
                self.ctx.unhold(&row.step_id);
                Ok(seen?.value.get("value").cloned().unwrap_or(Value::Null))
            }
            // Handed back (parked, released, detached): the child run and its step wait with
            // the run; the attempt's end leaves the child pending and the step reclaimable.
            Err(error)
                if error.kind == crate::HostErrorKind::Cancelled && self.ctx.handing_back() =>
            {
                Err(error)
            }
            Err(error) => {
                let cancelled_run = error.kind == crate::HostErrorKind::Cancelled;
                // The child run keeps its own failure; the parent's step says the child failed.
                let reason = match self.ctx.rejection_reason(&error) {
                    Some(failure) => failure.get("cause").cloned().unwrap_or(failure),
                    None if cancelled_run => crate::decide::Closure::cancelled().reason,
                    None => crate::decide::reason(error.message.as_str()),
                };
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
                let message = format!(
                    "child workflow {} cannot start: {error}",
                    source.path.display()
                );
                let failure = crate::Error::Workflow {
                    message: message.clone(),
                    cause: Some(Box::new(crate::Error::Script(error))),
                };
                return Err(self.ctx.reject(HostErrorKind::Workflow, message, failure));
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
        let steps = self
            .ctx
            .engine
            .store
            .load_steps(child_run_id)
            .await
            .map_err(|error| self.fatal(error.into()))?;
        let child = RunScope::open(
            Arc::clone(&self.ctx),
            child_run_id.to_owned(),
            &source,
            root_dir,
            Some((&self, row)),
            steps,
        )
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
            run_id: child.run_id.clone(),
            max_sleep_ms: self.ctx.engine.limits.max_sleep_ms,
        };
        let max_result = self.ctx.engine.limits.max_result_bytes;
        let evaluated = self
            .ctx
            .engine
            .scripts
            .evaluate(invocation)
            .await
            .and_then(|value| {
                match oversized(
                    "the child workflow's result",
                    &value,
                    max_result,
                    RESULT_LIMIT,
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
                let usage = run_usage(store, &self.ctx.root_run_id, child_run_id)
                    .await
                    .unwrap_or_default();
                child.emit(
                    EventType::Result,
                    None,
                    json!({ "results": value, "tokenUsage": usage }),
                );
                Ok(value)
            }
            Err(_) if self.ctx.handing_back() => Err(cancelled()),
            Err(error) => {
                child.emit(
                    EventType::Error,
                    None,
                    json!({ "message": error.to_string() }),
                );
                if self.ctx.cancel.is_cancelled() {
                    return Err(cancelled());
                }
                let cause = self.ctx.script_failure(error);
                let message = format!(
                    "child workflow {} failed: {cause}",
                    child.source_path.display()
                );
                let failure = crate::Error::Workflow {
                    message: message.clone(),
                    cause: Some(Box::new(cause)),
                };
                Err(self.ctx.reject(HostErrorKind::Workflow, message, failure))
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
}
