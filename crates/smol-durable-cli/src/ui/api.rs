//! The JSON API: what every page shows, for scripts and other tools.

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use smol_durable_core::store::RunFilter;
use smol_durable_core::{rfc3339_ms, Engine, Error};

use super::{error_response, Ui};

/// `GET /api/runs?state=…&name=…&before=…&limit=…`.
#[derive(Debug, Default, Deserialize)]
pub(super) struct RunsQuery {
    /// Only runs in this state.
    state: Option<String>,
    /// Only runs whose workflow name contains this.
    name: Option<String>,
    /// Only runs created before this time (epoch ms): the next page.
    before: Option<i64>,
    /// At most this many (default 50, at most 500).
    limit: Option<usize>,
}

/// The root runs matching the query, newest first.
pub(super) async fn runs_json(engine: &Engine, query: &RunsQuery) -> Result<Value, Error> {
    let states = match &query.state {
        Some(state) if !state.is_empty() => {
            vec![crate::history::state(state).map_err(Error::InvalidRequest)?]
        }
        _ => Vec::new(),
    };
    let filter = RunFilter {
        states,
        roots_only: true,
        name_contains: query.name.clone().filter(|name| !name.is_empty()),
        created_until: query.before.map(|before| before.saturating_sub(1)),
        limit: Some(query.limit.unwrap_or(50).clamp(1, 500)),
        ..RunFilter::default()
    };
    let runs = engine.list_runs(&filter).await?;
    Ok(Value::Array(
        runs.iter()
            .map(|run| {
                json!({
                    "runId": run.run_id,
                    "taskId": run.task_id,
                    "state": run.state.as_str(),
                    "name": run.workflow.name(),
                    "scriptPath": run.workflow.script_path,
                    "createdAt": rfc3339_ms(run.created_at),
                    "createdAtMs": run.created_at,
                    "updatedAt": rfc3339_ms(run.updated_at),
                    "budgetTotal": run.budget_total,
                    "budgetSpent": run.budget_spent,
                })
            })
            .collect(),
    ))
}

/// One run: its record, attempts, steps (numbered as `history` numbers them) and token usage.
pub(super) async fn run_json(engine: &Engine, run_id: &str) -> Result<Value, Error> {
    let status = engine.status(run_id).await?;
    let run = &status.run;
    let steps = engine.store().load_steps(&run.run_id).await?;
    let usage = engine.token_usage(&run.root_run_id).await?;
    let steps: Vec<Value> = steps
        .iter()
        .enumerate()
        .map(|(index, step)| {
            json!({
                "number": index + 1,
                "stepId": step.step_id,
                "kind": step.kind.as_str(),
                "state": step.state.as_str(),
                "checkpointName": step.checkpoint_name,
                "input": step.input,
                "result": step.result,
                "failureReason": step.failure_reason,
                "fence": step.fence,
                "createdAt": rfc3339_ms(step.created_at),
                "updatedAt": rfc3339_ms(step.updated_at),
            })
        })
        .collect();
    let attempts: Vec<Value> = status
        .attempts
        .iter()
        .map(|attempt| {
            json!({
                "attempt": attempt.attempt,
                "state": attempt.state.as_str(),
                "workerId": attempt.worker_id,
                "startedAt": rfc3339_ms(attempt.started_at),
                "completedAt": attempt.completed_at.map(rfc3339_ms),
                "failureReason": attempt.failure_reason,
            })
        })
        .collect();
    Ok(json!({
        "run": {
            "runId": run.run_id,
            "taskId": run.task_id,
            "rootRunId": run.root_run_id,
            "parentRunId": run.parent_run_id,
            "state": run.state.as_str(),
            "ownerGone": status.owner_gone,
            "name": run.workflow.name(),
            "scriptPath": run.workflow.script_path,
            "args": run.args,
            "result": run.result(),
            "failureReason": run.failure_reason,
            "forkedFrom": run.workflow.forked_from,
            "budgetTotal": run.budget_total,
            "createdAt": rfc3339_ms(run.created_at),
            "updatedAt": rfc3339_ms(run.updated_at),
        },
        "tokenUsage": usage,
        "attempts": attempts,
        "steps": steps,
    }))
}

/// `GET /api/runs`.
pub(super) async fn runs(State(ui): State<Ui>, Query(query): Query<RunsQuery>) -> Response {
    match runs_json(&ui.engine, &query).await {
        Ok(runs) => Json(runs).into_response(),
        Err(error) => error_response(&error),
    }
}

/// `GET /api/runs/{run_id}`.
pub(super) async fn run(State(ui): State<Ui>, Path(run_id): Path<String>) -> Response {
    match run_json(&ui.engine, &run_id).await {
        Ok(run) => Json(run).into_response(),
        Err(error) => error_response(&error),
    }
}
