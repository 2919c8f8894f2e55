//! The pages, rendered on the server from the same JSON the API serves. maud escapes every
//! value it interpolates: prompts and results are text, never markup.

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use maud::{html, Markup, DOCTYPE};
use serde_json::Value;

use super::api::{run_json, runs_json, RunsQuery};
use super::{error_response, Ui};

/// A value as pretty JSON text, cut past `limit` characters.
fn pretty(value: &Value, limit: usize) -> String {
    let text = serde_json::to_string_pretty(value).unwrap_or_default();
    if text.chars().count() <= limit {
        return text;
    }
    let mut cut: String = text.chars().take(limit).collect();
    cut.push_str("\n… (cut; the JSON API has all of it)");
    cut
}

fn text<'a>(value: &'a Value, key: &str) -> &'a str {
    value.get(key).and_then(Value::as_str).unwrap_or("")
}

/// The page around `body`; `home` links to the runs.
fn layout(home: &str, title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                title { (title) " · smol-durable" }
                style { (maud::PreEscaped(STYLE)) }
            }
            body {
                header { a href=(home) { "smol-durable" } " · " (title) }
                main { (body) }
            }
        }
    }
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:1.5rem;color:#222}\
table{border-collapse:collapse;width:100%}td,th{border-bottom:1px solid #ddd;padding:.3rem .5rem;\
text-align:left;vertical-align:top}pre{white-space:pre-wrap;margin:0;max-height:20rem;overflow:auto}\
.state{font-weight:600}header{margin-bottom:1rem}";

/// Links keep the token when the inspector has one (the token travels in the query).
fn href(ui: &Ui, path: &str) -> String {
    match ui.token.as_deref() {
        Some(token) => format!("{path}?token={token}"),
        None => path.to_owned(),
    }
}

/// `GET /`: the runs, newest first.
pub(super) async fn runs(State(ui): State<Ui>, Query(query): Query<RunsQuery>) -> Response {
    let runs = match runs_json(&ui.engine, &query).await {
        Ok(runs) => runs,
        Err(error) => return error_response(&error),
    };
    let rows = runs.as_array().cloned().unwrap_or_default();
    let body = html! {
        h1 { "Runs" }
        @if rows.is_empty() {
            p { "No runs yet." }
        } @else {
            table {
                thead { tr { th { "run" } th { "state" } th { "workflow" } th { "created" } th { "output tokens" } } }
                tbody {
                    @for run in &rows {
                        tr {
                            td { a href=(href(&ui, &format!("/runs/{}", text(run, "runId")))) { (text(run, "runId")) } }
                            td.state { (text(run, "state")) }
                            td { (text(run, "name")) }
                            td { (text(run, "createdAt")) }
                            td { (run["budgetSpent"]) @if let Some(total) = run["budgetTotal"].as_u64() { " / " (total) } }
                        }
                    }
                }
            }
        }
    };
    layout(&href(&ui, "/"), "runs", body).into_response()
}

/// `GET /runs/{run_id}`: one run with its attempts and steps.
pub(super) async fn run(State(ui): State<Ui>, Path(run_id): Path<String>) -> Response {
    let view = match run_json(&ui.engine, &run_id).await {
        Ok(view) => view,
        Err(error) => return error_response(&error),
    };
    let run = &view["run"];
    let empty = Vec::new();
    let steps = view["steps"].as_array().unwrap_or(&empty);
    let attempts = view["attempts"].as_array().unwrap_or(&empty);
    let body = html! {
        h1 { (text(run, "name")) " " small { (text(run, "runId")) } }
        p {
            span.state { (text(run, "state")) }
            @if run["ownerGone"] == Value::Bool(true) { " (owner gone; resume it)" }
            " · created " (text(run, "createdAt"))
            " · tokens " (view["tokenUsage"]["totalTokens"])
        }
        @if let Some(origin) = run["forkedFrom"].as_object() {
            p { "forked from "
                a href=(href(&ui, &format!("/runs/{}", origin.get("runId").and_then(Value::as_str).unwrap_or("")))) {
                    (origin.get("runId").and_then(Value::as_str).unwrap_or(""))
                }
            }
        }
        h2 { "Arguments" }
        pre { (pretty(&run["args"], 10_000)) }
        @if !run["result"].is_null() {
            h2 { "Result" }
            pre { (pretty(&run["result"], 10_000)) }
        }
        @if !run["failureReason"].is_null() {
            h2 { "Failure" }
            pre { (pretty(&run["failureReason"], 10_000)) }
        }
        h2 { "Attempts" }
        table {
            thead { tr { th { "#" } th { "state" } th { "worker" } th { "started" } th { "completed" } } }
            tbody {
                @for attempt in attempts {
                    tr {
                        td { (attempt["attempt"]) }
                        td.state { (text(attempt, "state")) }
                        td { (text(attempt, "workerId")) }
                        td { (text(attempt, "startedAt")) }
                        td { (text(attempt, "completedAt")) }
                    }
                }
            }
        }
        h2 { "Steps" }
        table {
            thead { tr { th { "#" } th { "kind" } th { "state" } th { "input" } th { "result" } } }
            tbody {
                @for step in steps {
                    tr {
                        td { (step["number"]) }
                        td { (text(step, "kind")) }
                        td.state { (text(step, "state")) }
                        td { pre { (pretty(&step["input"], 2_000)) } }
                        td { pre {
                            @if step["result"].is_null() { (pretty(&step["failureReason"], 2_000)) }
                            @else { (pretty(&step["result"], 2_000)) }
                        } }
                    }
                }
            }
        }
    };
    layout(
        &href(&ui, "/"),
        &format!("run {}", text(run, "runId")),
        body,
    )
    .into_response()
}
