//! `status`, `cancel` and `events`: one run, from any process.

use anyhow::bail;
use futures::StreamExt;
use serde_json::{json, Value};
use smol_durable_core::store::RunRecord;
use smol_durable_core::Engine;

use crate::database::Database;
use crate::output::pretty;
use crate::output::{errln, outln};
use crate::Outcome;

/// `status`: the run's state, attempts, tokens and outcome, by run id or task id. A run whose
/// owner is gone says so, with the command that continues it.
pub async fn status(engine: &Engine, id: &str, database: &Database) -> anyhow::Result<Outcome> {
    let status = engine.status(id).await?;
    let mut summary = run_json(&status.run);
    summary["attempts"] = json!(status.attempts.len());
    summary["tokenUsage"] = json!(engine.token_usage(&status.run.root_run_id).await?);
    if status.owner_gone {
        summary["ownerGone"] = json!(true);
    }
    if !status.run.state.is_terminal() {
        let filter = smol_durable_core::WaitFilter {
            task_id: Some(status.run.task_id.clone()),
            ..smol_durable_core::WaitFilter::default()
        };
        let waits = engine.waits(&filter).await?;
        if !waits.is_empty() {
            summary["waitingFor"] = crate::history::waiting_json(&waits);
            // What the stored reason says of a run handed back to wait ("released by its
            // owner") is not an error.
            if let Some(object) = summary.as_object_mut() {
                object.remove("error");
            }
        }
    }
    outln!("{}", pretty(&summary));
    if status.owner_gone {
        let mut command = resume_words(database, &status.run);
        // The run keeps its provider; a `command` provider's program is not stored with it.
        if status.run.workflow.provider.as_deref() == Some("command") {
            command.extend(["--agent-command".into(), "<the program it ran with>".into()]);
        }
        errln!(
            "note: run {} is running (owner gone; resume it): {}",
            status.run.root_run_id,
            crate::output::shell_line(&command)
        );
    }
    Ok(Outcome::Success)
}

/// `smol-durable --db DB run SCRIPT --resume-run ROOT`: the command that continues the run tree
/// of `run` (a root run; its script as stored, `<script>` when none is).
pub fn resume_words(database: &Database, run: &RunRecord) -> Vec<String> {
    vec![
        "smol-durable".into(),
        "--db".into(),
        database.as_flag(),
        "run".into(),
        run.workflow
            .script_path
            .clone()
            .unwrap_or_else(|| "<script>".into()),
        "--resume-run".into(),
        run.root_run_id.clone(),
    ]
}

/// `cancel`: request cancellation; a running owner notices at its next heartbeat.
pub async fn cancel(engine: &Engine, run_id: &str) -> anyhow::Result<Outcome> {
    use smol_durable_core::store::CancelRequest;
    let message = match engine.cancel(run_id).await? {
        CancelRequest::Requested => {
            format!("cancellation of run {run_id} requested; its owner stops within a second")
        }
        CancelRequest::CancelledPending => format!("run {run_id} cancelled"),
        CancelRequest::AlreadyFinished(state) => {
            format!("run {run_id} already finished ({state}); nothing to cancel")
        }
        CancelRequest::NotFound => bail!("workflow run {run_id} was not found; check --db"),
        other => format!("run {run_id}: {other:?}"),
    };
    errln!("{message}");
    Ok(Outcome::Success)
}

/// `events`: stored events as JSON lines; `--follow` waits for more until the run finishes or
/// its owner is gone ([`Engine::follow_events`]).
pub async fn events(engine: &Engine, run_id: &str, follow: bool) -> anyhow::Result<Outcome> {
    // Fails with a clear "not found" before printing anything.
    engine.status(run_id).await?;
    if follow {
        let mut events = engine.follow_events(run_id);
        while let Some(event) = events.next().await {
            print_event(&event?);
        }
        return Ok(Outcome::Success);
    }
    let mut after = 0;
    loop {
        let batch = engine.events(run_id, after, 500).await?;
        for event in &batch {
            print_event(event);
            after = after.max(event.seq);
        }
        if batch.len() < 500 {
            return Ok(Outcome::Success);
        }
    }
}

/// One stored event as a JSON line. Through the event type, so the keys come in smol-wf's order
/// (`type`, `elapsedNanos`, `metadata`, `data`); an event that does not read as one (written by
/// an older version) is printed as stored.
fn print_event(event: &smol_durable_core::EventRecord) {
    match serde_json::from_value::<smol_durable_core::WorkflowEvent>(event.payload.clone()) {
        Ok(parsed) => outln!("{}", serde_json::to_string(&parsed).unwrap_or_default()),
        Err(_) => outln!("{}", event.payload),
    }
}

/// A run as `history -o json` and `status` print it (smol-wf's camelCase names, `runID`).
pub fn run_json(run: &RunRecord) -> Value {
    json!({
        "runID": run.run_id,
        "taskId": run.task_id,
        "rootRunId": run.root_run_id,
        "parentRunId": run.parent_run_id,
        "state": run.state.as_str(),
        "name": run.workflow.name().unwrap_or("").to_owned(),
        "scriptPath": run.workflow.script_path,
        "args": run.args,
        "budgetAllowance": run.budget_total,
        "budgetSpent": run.budget_spent,
        "results": run.result(),
        "error": run.failure_reason,
        "createdAt": run.created_at,
        "updatedAt": run.updated_at,
    })
}
