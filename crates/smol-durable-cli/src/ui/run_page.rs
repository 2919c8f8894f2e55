//! `GET /runs/{run_id}`: one run — its header and actions, open waits with their forms,
//! lineage and child runs, the timeline and token chart, steps, live agent events, logs, the
//! ledger and attempts — from the view `GET /api/runs/{run_id}` serves.

use axum::extract::{Path, Query, State};
use axum::response::Response;
use maud::{html, Markup};
use serde_json::Value;

use super::api::{finished, run_json, RunQuery, STEPS_PER_PAGE};
use super::pages::{cost_text, duration, json_block, layout, state_badge, text, wait_list};
use super::{charts, error_response, segment, Ui};

/// Event types shown as the agent's live events, and as the run's logs.
const AGENT_EVENTS: [&str; 5] = [
    "workflow.agent_started",
    "workflow.agent_event",
    "workflow.agent_retrying",
    "workflow.agent_completed",
    "workflow.agent_failed",
];
const LOG_EVENTS: [&str; 2] = ["workflow.log", "workflow.phase"];

fn empty() -> &'static Vec<Value> {
    static EMPTY: Vec<Value> = Vec::new();
    &EMPTY
}

fn list<'a>(value: &'a Value, key: &str) -> &'a Vec<Value> {
    value[key].as_array().unwrap_or(empty())
}

pub(super) async fn run(
    State(ui): State<Ui>,
    Path(run_id): Path<String>,
    Query(query): Query<RunQuery>,
) -> Response {
    let view = match run_json(&ui.engine, &run_id, &query).await {
        Ok(view) => view,
        Err(error) => return error_response(&error),
    };
    let run = &view["run"];
    let id = text(run, "runId").to_owned();
    let path_id = segment(&id);
    let state = text(run, "state");
    let waits = list(&view, "waits");
    let now = super::api::engine_now();
    let body = html! {
        h1 { (text(run, "name")) " " small { (id) } }
        div #header data-live {
            p.meta {
                span #run-state { (state_badge(state, !waits.is_empty())) }
                @if run["ownerGone"] == Value::Bool(true) { span { "owner gone: resume it" } }
                span { "started " (text(run, "createdAt")) }
                span { "duration " (duration(if finished(state) { run["updatedAtMs"].as_i64().unwrap_or(now) } else { now } - run["createdAtMs"].as_i64().unwrap_or(now))) }
                span { "tokens " (view["tokenUsage"]["outputTokens"]) " out / " (view["tokenUsage"]["totalTokens"]) " total"
                    @if let Some(total) = run["budgetTotal"].as_u64() { " · budget " (run["budgetSpent"]) " / " (total) } }
                span { "cost " (cost_text(&view["cost"])) }
            }
            p.meta {
                span { "task " (text(run, "taskId")) " (" (text(&view["task"], "claimScope")) ", " (text(&view["task"], "state")) ")" }
                @if let Some(owner) = view["task"]["ownerId"].as_str() { span { "owner " (owner) } }
                @if let Some(lease) = view["task"]["leaseExpiresAt"].as_str() { span { "lease until " (lease) } }
                @if let Some(at) = run["cancelRequestedAt"].as_str() { span { "cancel requested " (at) } }
            }
            (lineage(&ui, run))
            (actions(&ui, &view))
        }
        div #action-note .note {}
        div #waits data-live {
            @if !waits.is_empty() {
                h2 { "Waiting" }
                (wait_list(&ui, waits, false))
            }
        }
        div #outcome data-live {
            @if !run["result"].is_null() { h2 { "Result" } (json_block(&run["result"], 4_000)) }
            @if !run["failureReason"].is_null() { h2 { "Failure" } (json_block(&run["failureReason"], 4_000)) }
        }
        h2 { "Arguments" }
        (json_block(&run["args"], 4_000))
        div #live data-live {
            @if !list(&view, "children").is_empty() {
                h2 { "Child runs" }
                div.tree { (tree(&ui, list(&view, "children"))) }
            }
            h2 { "Timeline" }
            (charts::timeline(list(&view, "steps"), now))
            h2 { "Tokens" }
            (charts::tokens(list(&view, "ledger"), run["budgetTotal"].as_u64()))
            h2 { "Agent events" }
            (events(list(&view, "events"), &AGENT_EVENTS, "agent-events", 50))
            h2 #steps { "Steps" }
            (steps(&ui, &view))
            h2 { "Logs" }
            (events(list(&view, "events"), &LOG_EVENTS, "logs", 200))
            h2 { "Ledger" }
            (ledger(list(&view, "ledger")))
            h2 { "Attempts" }
            (attempts(list(&view, "attempts")))
        }
    };
    // The stream starts after the newest event on the page: the page already shows the rest.
    let last_seq = list(&view, "events")
        .last()
        .and_then(|event| event["seq"].as_i64())
        .unwrap_or(0);
    layout(
        &ui,
        &format!("run {id}"),
        &format!("/api/runs/{path_id}/events?after={last_seq}"),
        body,
    )
}

fn run_link(ui: &Ui, run_id: &str) -> Markup {
    html! { a href=(ui.href(&format!("/runs/{}", segment(run_id)))) { (run_id) } }
}

fn lineage(ui: &Ui, run: &Value) -> Markup {
    let parent = run["parentRunId"].as_str();
    let root = text(run, "rootRunId");
    let origin = run["forkedFrom"].as_object();
    html! {
        @if parent.is_some() || origin.is_some() {
            p.meta {
                @if let Some(parent) = parent { span { "child of " (run_link(ui, parent)) } span { "root " (run_link(ui, root)) } }
                @if let Some(origin) = origin {
                    span { "forked from " (run_link(ui, origin.get("runId").and_then(Value::as_str).unwrap_or("")))
                        @if let Some(step) = origin.get("beforeStep").filter(|step| !step.is_null()) { " before step " (step) } }
                }
            }
        }
    }
}

/// The buttons for what can be done to this run now, and the commands that do it from a shell.
fn actions(ui: &Ui, view: &Value) -> Markup {
    let run = &view["run"];
    let id = text(run, "runId");
    let state = text(run, "state");
    let is_root = run["parentRunId"].is_null();
    let done = finished(state);
    let resumable =
        matches!(state, "failed" | "cancelled") || run["ownerGone"] == Value::Bool(true);
    let script = text(run, "scriptPath");
    html! {
        @if resumable && is_root {
            p.meta { "resume here: " code { (ui.command(&["run", script, "--resume-run", id])) } }
        }
        @if !ui.read_only {
            div.actions {
                @if !done {
                    button.danger data-action=(format!("/api/runs/{}/cancel", segment(id))) data-confirm="Cancel this run?" { "Cancel" }
                }
                @if is_root {
                    label { "fork before step " input #fork-step type="number" min="1" size="4" placeholder="all"; }
                    button data-action=(format!("/api/runs/{}/fork", segment(id))) data-input="fork-step" { "Fork (queue for workers)" }
                }
                @if done && is_root {
                    button.danger data-action=(format!("/api/runs/{}", segment(id))) data-method="DELETE"
                        data-confirm="Delete this run with its steps, events and child runs?" data-then="/" { "Delete" }
                }
            }
        }
    }
}

fn tree(ui: &Ui, children: &[Value]) -> Markup {
    html! {
        ul {
            @for child in children {
                li {
                    (run_link(ui, text(child, "runId"))) " " (text(child, "name")) " " (state_badge(text(child, "state"), false))
                    @if !list(child, "children").is_empty() { (tree(ui, list(child, "children"))) }
                }
            }
        }
    }
}

fn steps(ui: &Ui, view: &Value) -> Markup {
    let id = text(&view["run"], "runId");
    let steps = list(view, "steps");
    let total = view["totalSteps"].as_u64().unwrap_or(0) as usize;
    let from = view["stepsFrom"].as_u64().unwrap_or(1) as usize;
    let page = |from: usize| ui.href(&format!("/runs/{}?steps_from={from}#steps", segment(id)));
    html! {
        @if steps.is_empty() { p.muted { "No steps." } }
        @else {
            p.meta { "steps " (from) "–" (from + steps.len() - 1) " of " (total)
                @if from > 1 { " · " a href=(page(from.saturating_sub(STEPS_PER_PAGE).max(1))) { "← earlier" } }
                @if from + steps.len() <= total { " · " a href=(page(from + steps.len())) { "later →" } }
            }
            table.steps {
                thead { tr { th { "#" } th { "step" } th { "call" } th { "result" } th { "usage" } } }
                tbody {
                    @for step in steps {
                        tr data-step=(text(step, "stepId")) {
                            td { (step["number"]) }
                            td {
                                (text(step, "kind")) " " (state_badge(text(step, "state"), false))
                                @if let Some(phase) = step["phase"].as_str() { br; small { "phase " (phase) } }
                                br; small.muted { "fence " (step["fence"]) }
                                @if let Some(lease) = step["leaseExpiresAt"].as_str() { br; small.muted { "held by " (text(step, "workerId")) " until " (lease) } }
                                br; small.muted { (text(step, "createdAt")) }
                            }
                            td {
                                @if let Some(prompt) = step["prompt"].as_str() { (json_block(&Value::String(prompt.to_owned()), 600)) }
                                @else { (json_block(&step["input"], 600)) }
                                @if let Some(model) = step["model"].as_str() { small { "model " (model) } " " }
                                @if let Some(provider) = step["provider"].as_str() { small { "provider " (provider) } }
                                @let options = &step["input"]["options"];
                                @if options.as_object().is_some_and(|options| !options.is_empty()) {
                                    details { summary { "options" } (json_block(options, 2_000)) }
                                }
                            }
                            td {
                                @if !step["result"].is_null() { (json_block(&step["result"], 1_200)) }
                                @if !step["failureReason"].is_null() { (json_block(&step["failureReason"], 1_200)) }
                                @for retry in list(step, "retries") {
                                    div.note.errors { (text(retry, "at")) " " (text(retry, "type")) ": " (json_block(&retry["error"], 400)) }
                                }
                            }
                            td {
                                @let usage = &step["usage"];
                                @if usage.is_object() {
                                    small {
                                        "in " (usage["inputTokens"]) " · out " (usage["outputTokens"])
                                        @if !usage["cacheReadTokens"].is_null() { " · cache read " (usage["cacheReadTokens"]) }
                                        @if !usage["cacheWriteTokens"].is_null() { " · cache write " (usage["cacheWriteTokens"]) }
                                        br; "cost " (cost_text(&usage["cost"]))
                                    }
                                }
                                @if let Some(session) = step["sessionId"].as_str() { br; small.muted { "session " (session) } }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The newest `most` stored events of the given types, newest first.
fn events(events: &[Value], types: &[&str], id: &str, most: usize) -> Markup {
    let shown: Vec<&Value> = events
        .iter()
        .rev()
        .filter(|event| types.contains(&text(event, "type")))
        .take(most)
        .collect();
    html! {
        @if shown.is_empty() { p.muted id=(id) { "None." } }
        @else {
            table id=(id) {
                tbody {
                    @for event in shown {
                        @let payload = &event["payload"];
                        tr {
                            td { small { (text(event, "at")) } }
                            td { (text(event, "type").trim_start_matches("workflow.")) }
                            td { (event_text(payload)) }
                        }
                    }
                }
            }
        }
    }
}

/// What an event says, in one line: a log's message, a phase's name, an agent event's data.
fn event_text(payload: &Value) -> String {
    let data = &payload["data"];
    if let Some(usage) = data.get("usage").filter(|usage| usage.is_object()) {
        return format!(
            "done: {} tokens in, {} out",
            usage["inputTokens"], usage["outputTokens"]
        );
    }
    if let Some(event) = data.get("providerEvent").filter(|event| event.is_object()) {
        let kind = [event["type"].as_str(), event["subtype"].as_str()]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join("/");
        let said = event
            .pointer("/message/content/0/text")
            .or_else(|| event.get("text"))
            .or_else(|| event.get("result"))
            .and_then(Value::as_str)
            .map_or_else(|| event.to_string(), str::to_owned);
        let provider = data["provider"].as_str().unwrap_or("agent");
        return format!(
            "{provider} {kind}: {}",
            said.chars().take(240).collect::<String>()
        );
    }
    for key in ["message", "phase", "name", "promptPreview", "error"] {
        if let Some(text) = data[key].as_str() {
            return text.chars().take(300).collect();
        }
    }
    let shown = if data.is_null() { payload } else { data };
    shown.to_string().chars().take(300).collect()
}

fn ledger(rows: &[Value]) -> Markup {
    html! {
        @if rows.is_empty() { p.muted { "No tokens billed." } }
        @else {
            table {
                thead { tr { th { "at" } th { "run" } th { "step" } th { "source" } th { "output tokens" } th { "cost" } } }
                tbody {
                    @for row in rows {
                        tr {
                            td { small { (text(row, "createdAt")) } }
                            td { small { (text(row, "runId")) } }
                            td { small { (text(row, "stepId")) } }
                            td { (text(row, "source")) }
                            td { (row["outputTokens"]) }
                            td { (cost_text(&row["usage"]["cost"])) }
                        }
                    }
                }
            }
        }
    }
}

fn attempts(rows: &[Value]) -> Markup {
    html! {
        table {
            thead { tr { th { "#" } th { "state" } th { "worker" } th { "started" } th { "completed" } th { "failure" } } }
            tbody {
                @for attempt in rows {
                    tr {
                        td { (attempt["attempt"]) }
                        td { (state_badge(text(attempt, "state"), false)) }
                        td { small { (text(attempt, "workerId")) } }
                        td { small { (text(attempt, "startedAt")) } }
                        td { small { (text(attempt, "completedAt")) } }
                        td { @if !attempt["failureReason"].is_null() { (json_block(&attempt["failureReason"], 600)) } }
                    }
                }
            }
        }
    }
}
