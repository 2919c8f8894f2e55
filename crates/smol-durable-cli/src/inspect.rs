//! `status`, `cancel` and `events`: one run, from any process.

use std::time::Duration;

use anyhow::bail;
use serde_json::{json, Value};
use smol_durable::store::RunRecord;
use smol_durable::Engine;

use crate::output::pretty;
use crate::output::{errln, outln};
use crate::Outcome;

/// `status`: the run's state, attempts and outcome, by run id or task id.
pub async fn status(engine: &Engine, id: &str) -> anyhow::Result<Outcome> {
    let status = engine.status(id).await?;
    let mut summary = run_json(&status.run);
    summary["attempts"] = json!(status.attempts.len());
    outln!("{}", pretty(&summary));
    Ok(Outcome::Success)
}

/// `cancel`: request cancellation; a running owner notices at its next heartbeat.
pub async fn cancel(engine: &Engine, run_id: &str) -> anyhow::Result<Outcome> {
    use smol_durable::store::CancelRequest;
    let message = match engine.cancel(run_id).await? {
        CancelRequest::Requested => {
            format!("cancellation of run {run_id} requested; its owner stops at its next heartbeat")
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

/// `events`: stored events as JSON lines; `--follow` waits for more until the run finishes.
pub async fn events(engine: &Engine, run_id: &str, follow: bool) -> anyhow::Result<Outcome> {
    // Fails with a clear "not found" before printing anything.
    engine.status(run_id).await?;
    let mut after = 0;
    let mut last_pass = !follow;
    loop {
        let batch = engine.events(run_id, after, 500).await?;
        for event in &batch {
            outln!("{}", event.payload);
            after = after.max(event.seq);
        }
        if batch.len() == 500 {
            continue;
        }
        if last_pass {
            return Ok(Outcome::Success);
        }
        // Once the run has ended, one more pass reads what it wrote before the state check.
        last_pass = engine.status(run_id).await?.run.state.is_terminal();
        if !last_pass {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// A run as `history -o json` and `status` print it (smol-wf's camelCase names, `runID`).
pub fn run_json(run: &RunRecord) -> Value {
    json!({
        "runID": run.run_id,
        "taskID": run.task_id,
        "rootRunID": run.root_run_id,
        "parentRunID": run.parent_run_id,
        "state": run.state.as_str(),
        "name": workflow_name(run),
        "scriptPath": run.workflow.script_path,
        "args": run.args,
        "budgetAllowance": run.budget_total,
        "budgetSpent": run.budget_spent,
        "results": run.completed_payload,
        "error": run.failure_reason,
        "createdAt": run.created_at,
        "updatedAt": run.updated_at,
    })
}

pub fn workflow_name(run: &RunRecord) -> String {
    run.workflow
        .metadata
        .as_ref()
        .and_then(|meta| meta.get("name"))
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned()
}
