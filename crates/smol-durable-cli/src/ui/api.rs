//! The JSON API: what every page shows, for scripts and other tools. The pages render these
//! same values, so the API cannot drift from what people see.

use std::collections::{BTreeMap, HashMap};

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::future::try_join_all;
use serde::Deserialize;
use serde_json::{json, Value};
use smol_durable_core::store::{
    EventRecord, LedgerEntry, RunFilter, RunRecord, State as RunState, StepRecord, WaitFilter,
};
use smol_durable_core::{rfc3339_ms, Engine, Error, OpenWait};

use super::{error_response, Ui};

/// `GET /api/runs?state=…&name=…&q=…&since=…&before=…&limit=…`.
#[derive(Debug, Default, Deserialize)]
pub(super) struct RunsQuery {
    /// Only runs in this state; `waiting`: runs with an open wait.
    pub state: Option<String>,
    /// Only runs whose workflow name contains this.
    pub name: Option<String>,
    /// A run or task id: that run alone.
    pub q: Option<String>,
    /// Only runs created in the last `1h`, `24h`, `7d` or `30d`.
    pub since: Option<String>,
    /// Only runs created before this time (epoch ms): the next page.
    pub before: Option<i64>,
    /// At most this many (default 50, at most 500).
    pub limit: Option<usize>,
}

impl RunsQuery {
    /// Runs per page.
    pub(super) fn page_size(&self) -> usize {
        self.limit.unwrap_or(50).clamp(1, 500)
    }

    /// The run or task id searched for, if any.
    pub(super) fn search(&self) -> Option<&str> {
        self.q.as_deref().map(str::trim).filter(|q| !q.is_empty())
    }
}

/// The most events a run's view reads (its newest ones): enough for every live call and log
/// line of a page, bounded for runs with many thousands of steps.
const EVENTS_SHOWN: usize = 2_000;

/// The root runs matching the query, newest first, each with its attempts, cost and what it
/// waits on.
pub(super) async fn runs_json(engine: &Engine, query: &RunsQuery) -> Result<Value, Error> {
    let waits = engine.waits(&WaitFilter::default()).await?;
    let mut waiting: HashMap<&str, Vec<&OpenWait>> = HashMap::new();
    for wait in &waits {
        waiting
            .entry(wait.root_run_id.as_str())
            .or_default()
            .push(wait);
    }
    let limit = query.page_size();
    let search = query.search();
    let state = query.state.as_deref().filter(|state| !state.is_empty());
    let runs: Vec<RunRecord> = if let Some(id) = search {
        match engine.status(id).await {
            Ok(status) => vec![status.run],
            Err(error) if error.kind() == smol_durable_core::ErrorKind::NotFound => Vec::new(),
            Err(error) => return Err(error),
        }
    } else if state == Some("waiting") {
        let mut roots: Vec<&str> = waiting.keys().copied().collect();
        roots.sort_unstable_by(|a, b| b.cmp(a));
        let mut runs = Vec::new();
        for root in roots.into_iter().take(limit) {
            runs.push(engine.status(root).await?.run);
        }
        runs
    } else {
        let states = match state {
            Some(state) => vec![crate::history::state(state).map_err(Error::InvalidRequest)?],
            None => Vec::new(),
        };
        let created_from = match query.since.as_deref().filter(|since| !since.is_empty()) {
            Some(since) => Some(engine_now().saturating_sub(since_ms(since)?)),
            None => None,
        };
        let filter = RunFilter {
            states,
            roots_only: true,
            name_contains: query.name.clone().filter(|name| !name.is_empty()),
            created_from,
            created_until: query.before.map(|before| before.saturating_sub(1)),
            limit: Some(limit),
            ..RunFilter::default()
        };
        engine.list_runs(&filter).await?
    };
    // Each row's attempts and cost: two small reads per row, side by side.
    let store = engine.store();
    let details = try_join_all(runs.iter().map(|run| async move {
        let attempts = store.list_attempts(&run.task_id).await?;
        let ledger = store.ledger_entries(&run.root_run_id).await?;
        Ok::<_, smol_durable_core::StoreError>((attempts.len(), cost(&ledger)))
    }))
    .await?;
    let now = engine_now();
    Ok(Value::Array(
        runs.iter()
            .zip(details)
            .map(|(run, (attempts, cost))| {
                let waits_on: Vec<&str> = waiting
                    .get(run.run_id.as_str())
                    .into_iter()
                    .flatten()
                    .flat_map(|wait| wait.names.iter().map(String::as_str))
                    .collect();
                let finished = run.state.is_terminal();
                let ended = if finished { run.updated_at } else { now };
                json!({
                    "runId": run.run_id,
                    "taskId": run.task_id,
                    "state": run.state.as_str(),
                    "waitingOn": waits_on,
                    "name": run.workflow.name(),
                    "scriptPath": run.workflow.script_path,
                    "createdAt": rfc3339_ms(run.created_at),
                    "createdAtMs": run.created_at,
                    "updatedAt": rfc3339_ms(run.updated_at),
                    "durationMs": (ended - run.created_at).max(0),
                    "attempts": attempts,
                    "budgetTotal": run.budget_total,
                    "budgetSpent": run.budget_spent,
                    "cost": cost,
                })
            })
            .collect(),
    ))
}

/// Now, in epoch milliseconds.
pub(super) fn engine_now() -> i64 {
    use smol_durable_core::Clock;
    smol_durable_core::SystemClock.now_ms()
}

/// `1h`, `24h`, `7d`, `30d`: milliseconds.
fn since_ms(text: &str) -> Result<i64, Error> {
    let units = [('m', 60_000), ('h', 3_600_000), ('d', 86_400_000)];
    let (number, unit_ms) = units
        .iter()
        .find_map(|(unit, ms)| Some((text.strip_suffix(*unit)?, *ms)))
        .ok_or_else(|| bad_since(text))?;
    let number: u32 = number.parse().map_err(|_| bad_since(text))?;
    Ok(i64::from(number).saturating_mul(unit_ms))
}

fn bad_since(text: &str) -> Error {
    Error::InvalidRequest(format!(
        "since must be a number of minutes, hours or days (30m, 24h, 7d), not {text:?}"
    ))
}

/// The total cost the ledger records as spent (not the rows a fork copied: its source paid
/// them), with its currency (the first one seen); `None` when no call reported one.
fn cost(ledger: &[LedgerEntry]) -> Option<Value> {
    let mut total = 0.0;
    let mut currency = None;
    for entry in ledger.iter().filter(|entry| entry.source_type.is_spent()) {
        if let Some(cost) = entry.usage.as_ref().and_then(|usage| usage.cost.as_ref()) {
            total += cost.total;
            currency.get_or_insert_with(|| cost.currency.clone());
        }
    }
    currency.map(|currency| json!({ "total": total, "currency": currency }))
}

/// What a step's stored input and result say about the call, for people: its phase, prompt,
/// model, provider, usage and session.
fn step_view(number: usize, step: &StepRecord, retries: &[Value]) -> Value {
    let input = &step.input;
    let result = step.result.as_ref();
    let phase = input
        .pointer("/options/phase")
        .or_else(|| input.pointer("/context/phase"))
        .cloned()
        .unwrap_or(Value::Null);
    let finished = step.state.is_terminal();
    json!({
        "number": number,
        "stepId": step.step_id,
        "kind": step.kind.as_str(),
        "state": step.state.as_str(),
        "checkpointName": step.checkpoint_name,
        "phase": phase,
        "prompt": input.get("prompt"),
        "provider": input.get("provider"),
        "model": input.pointer("/options/model"),
        "input": input,
        "result": step.result,
        "usage": result.and_then(|result| result.get("usage")),
        "sessionId": result.and_then(|result| result.get("sessionId")),
        "failureReason": step.failure_reason,
        "fence": step.fence,
        "workerId": step.worker_id,
        "leaseExpiresAt": step.lease_expires_at.filter(|_| !finished).map(rfc3339_ms),
        "retries": retries,
        "createdAt": rfc3339_ms(step.created_at),
        "createdAtMs": step.created_at,
        "endedAtMs": finished.then_some(step.updated_at),
    })
}

/// `GET /api/runs/{id}?steps_from=N`: one run — record, task (owner and lease), attempts,
/// child runs, open waits, ledger, up to 200 steps from step N (numbered as `history` numbers
/// them), and its newest events.
#[derive(Debug, Default, Deserialize)]
pub(super) struct RunQuery {
    /// The first step shown (1-based; default 1).
    pub steps_from: Option<usize>,
}

/// Steps per page of a run.
pub(super) const STEPS_PER_PAGE: usize = 200;

/// One run's view.
pub(super) async fn run_json(
    engine: &Engine,
    run_id: &str,
    query: &RunQuery,
) -> Result<Value, Error> {
    let status = engine.status(run_id).await?;
    let run = &status.run;
    let task = &status.task;
    let store = engine.store();
    let family_filter = RunFilter {
        task_id: Some(run.task_id.clone()),
        ..RunFilter::default()
    };
    let wait_filter = WaitFilter {
        run_id: Some(run.run_id.clone()),
        ..WaitFilter::default()
    };
    let (steps, ledger, family, waits, events) = futures::try_join!(
        async { Ok::<_, Error>(store.load_steps(&run.run_id).await?) },
        async { Ok(store.ledger_entries(&run.root_run_id).await?) },
        engine.list_runs(&family_filter),
        engine.waits(&wait_filter),
        async { Ok(store.read_newest_events(&run.run_id, EVENTS_SHOWN).await?) },
    )?;
    // The ledger is read once: its rows are shown, and they are what the run spent.
    let usage = smol_durable_core::TokenUsage::from_ledger(&ledger);
    let total_steps = steps.len();
    let from = query.steps_from.unwrap_or(1).max(1);
    let mut retries: HashMap<&str, Vec<Value>> = HashMap::new();
    for event in &events {
        if event.event_type == "workflow.agent_retrying"
            || event.event_type == "workflow.agent_failed"
        {
            if let Some(step_id) = &event.step_id {
                retries.entry(step_id.as_str()).or_default().push(json!({
                    "at": rfc3339_ms(event.created_at),
                    "type": event.event_type,
                    "error": event.payload.get("error").or_else(|| event.payload.get("data")),
                }));
            }
        }
    }
    // Phases as the script entered them: a step that does not record its own (waits, sleeps,
    // child runs) is in the last phase entered before it started.
    let phases: Vec<(i64, &str)> = events
        .iter()
        .filter(|event| event.event_type == "workflow.phase" && event.run_id == run.run_id)
        .filter_map(|event| Some((event.created_at, event.payload["data"]["name"].as_str()?)))
        .collect();
    let no_retries = Vec::new();
    let shown: Vec<Value> = steps
        .iter()
        .enumerate()
        .skip(from - 1)
        .take(STEPS_PER_PAGE)
        .map(|(index, step)| {
            let tries = retries.get(step.step_id.as_str()).unwrap_or(&no_retries);
            let mut view = step_view(index + 1, step, tries);
            if view["phase"].is_null() {
                if let Some((_, phase)) = phases.iter().rev().find(|(at, _)| *at <= step.created_at)
                {
                    view["phase"] = Value::String((*phase).to_owned());
                }
            }
            view
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
    let ledger_view: Vec<Value> = ledger
        .iter()
        .map(|entry| {
            json!({
                "runId": entry.run_id,
                "stepId": entry.step_id,
                "source": entry.source_type.as_str(),
                "spent": entry.source_type.is_spent(),
                "outputTokens": entry.output_tokens,
                "usage": entry.usage,
                "createdAtMs": entry.created_at,
                "createdAt": rfc3339_ms(entry.created_at),
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
            "budgetSpent": run.budget_spent,
            "cancelRequestedAt": run.cancel_requested_at.map(rfc3339_ms),
            "createdAt": rfc3339_ms(run.created_at),
            "createdAtMs": run.created_at,
            "updatedAt": rfc3339_ms(run.updated_at),
            "updatedAtMs": run.updated_at,
        },
        "task": {
            "state": task.state.as_str(),
            "claimScope": task.claim_scope.as_str(),
            "ownerId": task.claimed_by_owner_id,
            "leaseExpiresAt": task.lease_expires_at.filter(|_| !task.state.is_terminal()).map(rfc3339_ms),
            "notBefore": task.not_before.map(rfc3339_ms),
        },
        "tokenUsage": usage,
        "cost": cost(&ledger),
        "attempts": attempts,
        "children": children_tree(&family, &run.run_id),
        "waits": waits.iter().map(crate::waits::wait_json).collect::<Vec<_>>(),
        "ledger": ledger_view,
        "totalSteps": total_steps,
        "stepsFrom": from,
        "steps": shown,
        "events": events.iter().map(event_view).collect::<Vec<_>>(),
    }))
}

/// An event as the API shows it: its position, type, time, run and step, and its document.
pub(super) fn event_view(event: &EventRecord) -> Value {
    json!({
        "seq": event.seq,
        "type": event.event_type,
        "runId": event.run_id,
        "stepId": event.step_id,
        "at": rfc3339_ms(event.created_at),
        "atMs": event.created_at,
        "payload": event.payload,
    })
}

/// The runs under `root` (the run whose page it is) as a tree: each with its children.
fn children_tree(family: &[RunRecord], root: &str) -> Vec<Value> {
    let mut by_parent: BTreeMap<&str, Vec<&RunRecord>> = BTreeMap::new();
    for run in family {
        if let Some(parent) = &run.parent_run_id {
            by_parent.entry(parent.as_str()).or_default().push(run);
        }
    }
    fn level(
        by_parent: &BTreeMap<&str, Vec<&RunRecord>>,
        parent: &str,
        depth: usize,
    ) -> Vec<Value> {
        if depth > 64 {
            return Vec::new();
        }
        let mut runs = by_parent.get(parent).cloned().unwrap_or_default();
        runs.sort_by_key(|run| run.created_at);
        runs.iter()
            .map(|run| {
                json!({
                    "runId": run.run_id,
                    "name": run.workflow.name(),
                    "state": run.state.as_str(),
                    "children": level(by_parent, &run.run_id, depth + 1),
                })
            })
            .collect()
    }
    level(&by_parent, root, 0)
}

/// Every open wait, oldest first.
pub(super) async fn waits_json(engine: &Engine) -> Result<Value, Error> {
    let waits = engine.waits(&WaitFilter::default()).await?;
    Ok(Value::Array(
        waits.iter().map(crate::waits::wait_json).collect(),
    ))
}

/// Whether a run's state is one it will not leave.
pub(super) fn finished(state: &str) -> bool {
    RunState::parse(state).is_terminal()
}

/// `GET /api/runs`.
pub(super) async fn runs(State(ui): State<Ui>, Query(query): Query<RunsQuery>) -> Response {
    respond(runs_json(&ui.engine, &query).await)
}

/// `GET /api/runs/{run_id}`.
pub(super) async fn run(
    State(ui): State<Ui>,
    Path(run_id): Path<String>,
    Query(query): Query<RunQuery>,
) -> Response {
    respond(run_json(&ui.engine, &run_id, &query).await)
}

/// `GET /api/waits`.
pub(super) async fn waits(State(ui): State<Ui>) -> Response {
    respond(waits_json(&ui.engine).await)
}

/// A value as JSON, an error as its status and message.
pub(super) fn respond(value: Result<Value, Error>) -> Response {
    match value {
        Ok(value) => Json(value).into_response(),
        Err(error) => error_response(&error),
    }
}
