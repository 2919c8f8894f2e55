//! One attempt at a root run, from start to end: the heartbeat and the event writer beside
//! the script, the evaluation, and recording how it ended.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures::FutureExt;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::context::{object, AttemptCtx, Interruption, RunSettings, RunnerAttempt};
use super::event_writer::write_events;
use super::heartbeat::{heartbeat, watch_for_cancel};
use super::host::RunScope;
use super::options::{RunOutput, TokenUsage};
use super::shared::EngineShared;
use super::usage::ledger_usage;
use crate::decide::Closure;
use crate::events::{EventType, WorkflowEvent};
use crate::limits::{oversized, RESULT_LIMIT};
use crate::script::{ScriptInvocation, WorkflowSource};
use crate::store::{AttemptOutcome, AttemptRecord, FailStep, FinishAttempt, RunRecord, StepRecord};
use crate::{Error, ScriptError, ScriptErrorKind, StoreErrorKind};

/// Everything needed to execute an attempt that `start_attempt` opened.
pub(crate) struct AttemptPlan {
    pub engine: Arc<EngineShared>,
    pub run: RunRecord,
    pub attempt: AttemptRecord,
    pub source: WorkflowSource,
    pub settings: RunSettings,
    pub cancel: CancellationToken,
    pub handle_events: Option<mpsc::UnboundedSender<WorkflowEvent>>,
    /// Set when a worker claimed a runner task.
    pub runner: Option<RunnerAttempt>,
}

/// Executes the attempt to its end and records the outcome.
pub(crate) async fn execute(plan: AttemptPlan) -> Result<RunOutput, Error> {
    let AttemptPlan {
        engine,
        run,
        attempt,
        source,
        settings,
        cancel,
        handle_events,
        runner,
    } = plan;
    let (writer, inbox) = mpsc::unbounded_channel();
    let writer_task = tokio::spawn(write_events(Arc::clone(&engine), inbox, handle_events));
    let ctx = Arc::new(AttemptCtx::new(
        engine, &run, attempt, settings, cancel, runner, writer,
    ));
    let heartbeat = tokio::spawn(heartbeat(Arc::clone(&ctx)));
    let cancel_watch = tokio::spawn(watch_for_cancel(Arc::clone(&ctx)));
    let release = ctx.runner.as_ref().map(|runner| {
        let (token, ctx) = (runner.release.clone(), Arc::clone(&ctx));
        tokio::spawn(async move {
            token.cancelled().await;
            ctx.release_task();
        })
    });
    let (outcome, unreached) = run_root(&ctx, &run, source).await;
    heartbeat.abort();
    cancel_watch.abort();
    if let Some(release) = release {
        release.abort();
    }
    if let Some(replay) = &ctx.settings.replay {
        replay.ended(unreached.clone());
    }
    let result = finish(&ctx, &run, outcome, unreached).await;
    ctx.close_events().await;
    drop(ctx);
    let _ = writer_task.await;
    result
}

/// Evaluates the root run's script; with its outcome, the completed steps it never reached.
async fn run_root(
    ctx: &Arc<AttemptCtx>,
    run: &RunRecord,
    source: WorkflowSource,
) -> (Result<Value, Error>, Vec<StepRecord>) {
    // What earlier attempts spent is in the ledger; a resumed run continues from there.
    let opened = async {
        let start = ctx.engine.store.load_run_start(&run.run_id).await?;
        ctx.add_spent(start.budget_spent);
        RunScope::root(Arc::clone(ctx), run, &source, start.steps)
    };
    let scope = match opened.await {
        Ok(scope) => scope,
        Err(error) => return (Err(error), Vec::new()),
    };
    let outcome = evaluate_root(ctx, run, &scope, source).await;
    (outcome, scope.unreached())
}

async fn evaluate_root(
    ctx: &Arc<AttemptCtx>,
    run: &RunRecord,
    scope: &Arc<RunScope>,
    source: WorkflowSource,
) -> Result<Value, Error> {
    scope.emit(
        EventType::Started,
        None,
        json!({ "startTime": crate::clock::rfc3339_ms(ctx.now()) }),
    );
    let invocation = ScriptInvocation {
        source,
        args: run.args.clone(),
        host: Arc::new(scope.host()),
        cancel: ctx.cancel.clone(),
        run_id: run.run_id.clone(),
        max_sleep_ms: ctx.engine.limits.max_sleep_ms,
    };
    // A panicking engine fails this run, not the host.
    let evaluation = AssertUnwindSafe(ctx.engine.scripts.evaluate(invocation))
        .catch_unwind()
        .map(|outcome| match outcome {
            Ok(result) => result,
            Err(panic) => Err(ScriptError::new(
                ScriptErrorKind::Internal,
                format!("the script engine panicked: {}", panic_message(&panic)),
            )),
        });
    tokio::pin!(evaluation);
    tokio::select! {
        result = &mut evaluation => result.map_err(|error| ctx.script_failure(error)),
        () = ctx.cancel.cancelled() => {
            // Host calls now reject; give the script a moment to unwind on its own. With a
            // session-log sink, agent calls in flight are let finish (their transcripts are
            // saved and their results kept), however long that takes.
            let grace = ctx.engine.limits.cancel_grace;
            loop {
                match tokio::time::timeout(grace, &mut evaluation).await {
                    Ok(result) => break result.map_err(|error| ctx.script_failure(error)),
                    Err(_) if ctx.engine.session_sink.is_some() && ctx.holds_agent_calls() => {}
                    Err(_) => break Err(Error::Cancelled),
                }
            }
        }
    }
}

async fn finish(
    ctx: &Arc<AttemptCtx>,
    run: &RunRecord,
    outcome: Result<Value, Error>,
    unreached: Vec<StepRecord>,
) -> Result<RunOutput, Error> {
    let now = ctx.now();
    let interruption = ctx.take_interruption();
    // The token also fires from the run handle and `Engine::cancel`, which only cancel. A
    // release that came too late to stop the script does not undo its result.
    let outcome = match (interruption, outcome) {
        (Some(Interruption::Released { .. }), Ok(result)) => Ok(result),
        (Some(Interruption::Released { not_before: None }), Err(_)) => Err(Error::Released),
        (
            Some(Interruption::Released {
                not_before: Some(until),
            }),
            Err(_),
        ) => Err(Error::Parked { until }),
        (Some(Interruption::Detached { .. }), Ok(result)) => Ok(result),
        (Some(Interruption::Detached { not_before }), Err(_)) => {
            Err(Error::Detached { until: not_before })
        }
        (Some(Interruption::Fatal(error)), _) => Err(error),
        (Some(Interruption::Cancelled), _) => Err(Error::Cancelled),
        (None, _) if ctx.cancel.is_cancelled() => Err(Error::Cancelled),
        (None, outcome) => outcome,
    };
    let max_result = ctx.engine.limits.max_result_bytes;
    let outcome = outcome.and_then(|result| {
        match oversized("the workflow result", &result, max_result, RESULT_LIMIT) {
            Some(message) => Err(Error::Script(crate::ScriptError::new(
                crate::ScriptErrorKind::Limit,
                message,
            ))),
            None => Ok(result),
        }
    });
    // The outcome is fixed: host calls a script engine left running (un-awaited agents,
    // dropped evaluations) now reject instead of spending more.
    ctx.cancel.cancel();
    close_held_steps(ctx, matches!(outcome, Err(Error::Cancelled))).await;
    let root_meta = ctx.metadata(&run.run_id, 0, None);
    match outcome {
        Ok(result) => {
            let completed = AttemptOutcome::Completed {
                result: run.completed_payload_of(result.clone()),
            };
            record_end(ctx, completed, now).await?;
            // Said once the completion is recorded; an offline replay reports them itself.
            if !unreached.is_empty() && ctx.settings.replay.is_none() {
                report_unreached(ctx, run, &unreached).await;
            }
            // The result is stored; usage is reporting only and must not undo that.
            let usage = ledger_usage(ctx.engine.store.as_ref(), &ctx.root_run_id)
                .await
                .unwrap_or_else(|error| {
                    tracing::warn!(%error, "could not read token usage");
                    TokenUsage::default()
                });
            let data = json!({ "results": result, "tokenUsage": usage });
            ctx.emit(EventType::Result, root_meta, object(data));
            Ok(RunOutput {
                task_id: ctx.task_id.clone(),
                run_id: run.run_id.clone(),
                attempt: ctx.attempt.attempt,
                result,
                token_usage: usage,
            })
        }
        Err(error) => {
            let reason = error.failure_reason();
            let outcome = match &error {
                Error::Cancelled => AttemptOutcome::Cancelled { reason },
                Error::Released => AttemptOutcome::Released { not_before: None },
                Error::Parked { until } => AttemptOutcome::Released {
                    not_before: Some(*until),
                },
                Error::Detached { until } => AttemptOutcome::Detached { not_before: *until },
                _ => AttemptOutcome::Failed {
                    reason,
                    retry_at: ctx.runner.as_ref().and_then(|runner| {
                        crate::decide::attempt_retry_at(
                            &error,
                            runner.failed_before + 1,
                            runner.max_attempts,
                            runner.retry_backoff_ms,
                            now,
                        )
                    }),
                },
            };
            let recorded = record_end(ctx, outcome, now).await;
            // Handed back (released, parked, detached): the run goes on later, nothing failed.
            if error.kind() != crate::ErrorKind::Stopped {
                ctx.emit(
                    EventType::Error,
                    root_meta,
                    object(json!({ "message": error.to_string() })),
                );
            }
            match recorded {
                Err(lost @ Error::LeaseLost(_)) => Err(lost),
                Err(store_error) => {
                    tracing::error!(%store_error, %error, "could not record the end of a failed attempt");
                    Err(error)
                }
                Ok(()) => Err(error),
            }
        }
    }
}

/// A run completing without reaching completed steps of earlier attempts (or of the run it
/// was forked from): its script changed under it. Said once, with the count and the first
/// such step, so the leftover work is not silently ignored.
async fn report_unreached(ctx: &AttemptCtx, run: &RunRecord, unreached: &[StepRecord]) {
    let Some(first) = unreached.first() else {
        return;
    };
    // Numbered as `history` numbers steps: by the order the run reached them.
    let number = match ctx.engine.store.load_steps(&run.run_id).await {
        Ok(steps) => steps
            .iter()
            .position(|step| step.step_id == first.step_id)
            .map(|index| index + 1),
        Err(_) => None,
    };
    let count = unreached.len();
    let at = number.map_or_else(String::new, |number| format!("step {number}, "));
    let message = format!(
        "{count} completed step{} recorded before this attempt {} not reached again; the \
         first: {at}{} {}",
        if count == 1 { "" } else { "s" },
        if count == 1 { "was" } else { "were" },
        first.kind,
        first.checkpoint_name,
    );
    // The event is the warning; this is for logs that keep no events.
    tracing::info!(run_id = %run.run_id, "{message}");
    let data = json!({
        "count": count,
        "message": message,
        "first": {
            "number": number,
            "stepId": first.step_id,
            "kind": first.kind.as_str(),
            "checkpointName": first.checkpoint_name,
        },
    });
    ctx.emit(
        EventType::StepsUnreached,
        ctx.metadata(&run.run_id, 0, None),
        object(data),
    );
}

/// Records how the attempt ended; another owner having taken the task over is `LeaseLost`.
async fn record_end(ctx: &AttemptCtx, outcome: AttemptOutcome, now: i64) -> Result<(), Error> {
    let finished = ctx
        .engine
        .store
        .finish_attempt(FinishAttempt::new(
            &ctx.attempt,
            ctx.owner_id(),
            &outcome,
            now,
        ))
        .await;
    match finished {
        Err(error) if error.kind() == StoreErrorKind::LeaseLost => {
            Err(Error::LeaseLost(error.to_string()))
        }
        other => Ok(other?),
    }
}

/// Steps still held when the script ended (e.g. `Promise.all` rejected while siblings ran) are
/// closed so the next attempt reclaims them at once instead of waiting for their lease.
async fn close_held_steps(ctx: &AttemptCtx, cancelled: bool) {
    let closure = if cancelled {
        Closure::cancelled()
    } else {
        Closure::abandoned_step()
    };
    // A call whose claim was deferred has no row to close: the next attempt runs it again.
    for (step_id, step) in ctx.take_held().into_iter().filter(|(_, step)| step.claimed) {
        let closed = ctx
            .engine
            .store
            .fail_step(FailStep {
                step_id: step_id.clone(),
                fence: step.fence,
                state: closure.state.clone(),
                reason: closure.reason.clone(),
                ledger: Vec::new(),
                now: ctx.now(),
            })
            .await;
        if let Err(error) = closed {
            tracing::warn!(%step_id, %error, "could not close a step at the end of the attempt");
        }
    }
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|text| (*text).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_owned())
}
