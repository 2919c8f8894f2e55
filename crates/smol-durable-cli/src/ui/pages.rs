//! The layout every page shares, the runs list and the waits, rendered on the server from the
//! same JSON the API serves. maud escapes every value it interpolates: prompts and results are
//! text, never markup.

use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use maud::{html, Markup, DOCTYPE};
use serde_json::Value;

use super::api::{runs_json, waits_json, RunsQuery};
use super::{error_response, forms, segment, Ui};

/// A value as pretty JSON text, cut past `limit` characters.
pub(super) fn pretty(value: &Value, limit: usize) -> String {
    let text = serde_json::to_string_pretty(value).unwrap_or_default();
    if text.chars().count() <= limit {
        return text;
    }
    let mut cut: String = text.chars().take(limit).collect();
    cut.push_str("\n… (cut)");
    cut
}

/// A value as pretty JSON: whole when short; else its start, with the rest behind "show all"
/// (up to 200 000 characters; the JSON API has everything).
pub(super) fn json_block(value: &Value, short: usize) -> Markup {
    let text = serde_json::to_string_pretty(value).unwrap_or_default();
    let length = text.chars().count();
    if length <= short {
        return html! { pre { (text) } };
    }
    html! {
        pre { (text.chars().take(short).collect::<String>()) "…" }
        details { summary { "show all (" (length) " characters)" } pre { (pretty(value, 200_000)) } }
    }
}

pub(super) fn text<'a>(value: &'a Value, key: &str) -> &'a str {
    value.get(key).and_then(Value::as_str).unwrap_or("")
}

/// A state as a coloured badge; `waiting` when the run has open waits.
pub(super) fn state_badge(state: &str, waiting: bool) -> Markup {
    let shown = if waiting && !super::api::finished(state) {
        "waiting"
    } else {
        state
    };
    html! { span class=(format!("state s-{shown}")) { (shown) } }
}

/// A duration in milliseconds for people.
pub(super) fn duration(ms: i64) -> String {
    match ms {
        ms if ms < 1_000 => format!("{ms} ms"),
        ms if ms < 60_000 => format!("{:.1} s", ms as f64 / 1_000.0),
        ms if ms < 3_600_000 => format!("{} min {} s", ms / 60_000, ms % 60_000 / 1_000),
        ms => format!("{} h {} min", ms / 3_600_000, ms % 3_600_000 / 60_000),
    }
}

/// The page around `body`. `stream`: the server-sent events that make its `data-live`
/// regions refresh.
pub(super) fn layout(ui: &Ui, title: &str, stream: &str, body: Markup) -> Response {
    let page = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · smol-durable" }
                link rel="stylesheet" href=(ui.href("/assets/inspector.css"));
            }
            body data-token=[ui.token.as_deref()] data-stream=(stream) {
                header {
                    a.brand href=(ui.href("/")) { "smol-durable" }
                    a href=(ui.href("/")) { "Runs" }
                    a href=(ui.href("/waits")) { "Waits" }
                    @if ui.read_only { span.muted { "read-only" } }
                }
                main { (body) }
                script src=(ui.href("/assets/inspector.js")) {}
            }
        }
    };
    page.into_response()
}

/// `GET /`: the root runs, newest first, with filters and pages.
pub(super) async fn runs(State(ui): State<Ui>, Query(query): Query<RunsQuery>) -> Response {
    let runs = match runs_json(&ui.engine, &query).await {
        Ok(runs) => runs,
        Err(error) => return error_response(&error),
    };
    let rows = runs.as_array().cloned().unwrap_or_default();
    let limit = query.page_size();
    let waiting = query.state.as_deref() == Some("waiting");
    // The waiting runs are few and listed at once; a search finds one run.
    let next = (rows.len() == limit && query.search().is_none() && !waiting)
        .then(|| rows.last().and_then(|run| run["createdAtMs"].as_i64()))
        .flatten()
        .map(|before| {
            let mut link = format!("/?before={before}&limit={limit}");
            for (key, value) in [
                ("state", &query.state),
                ("name", &query.name),
                ("since", &query.since),
            ] {
                if let Some(value) = value.as_deref().filter(|value| !value.is_empty()) {
                    link.push_str(&format!("&{key}={}", segment(value)));
                }
            }
            link
        });
    let selected = |value: &str, current: &Option<String>| current.as_deref() == Some(value);
    let body = html! {
        h1 { "Runs" }
        form.filters method="get" action="/" {
            @if let Some(token) = ui.token.as_deref() { input type="hidden" name="token" value=(token); }
            input type="search" name="q" placeholder="run or task id" value=[query.q.as_deref()];
            select name="state" {
                option value="" { "any state" }
                @for state in ["waiting", "running", "pending", "completed", "failed", "cancelled"] {
                    option value=(state) selected[selected(state, &query.state)] { (state) }
                }
            }
            input type="text" name="name" placeholder="workflow name" value=[query.name.as_deref()];
            select name="since" {
                option value="" { "any time" }
                @for (value, label) in [("1h", "last hour"), ("24h", "last day"), ("7d", "last week"), ("30d", "last 30 days")] {
                    option value=(value) selected[selected(value, &query.since)] { (label) }
                }
            }
            button type="submit" { "Filter" }
        }
        div #runs data-live {
            @if rows.is_empty() {
                p { "No runs." }
            } @else {
                table {
                    thead { tr {
                        th { "run" } th { "state" } th { "workflow" } th { "started" } th { "duration" }
                        th { "attempts" } th { "output tokens" } th { "cost" }
                    } }
                    tbody {
                        @for run in &rows {
                            @let waiting_on: Vec<&str> = run["waitingOn"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
                            tr data-run=(text(run, "runId")) {
                                td { a href=(ui.href(&format!("/runs/{}", segment(text(run, "runId"))))) { (text(run, "runId")) } }
                                td {
                                    (state_badge(text(run, "state"), !waiting_on.is_empty()))
                                    @if !waiting_on.is_empty() { " " small { "on " (waiting_on.join(", ")) } }
                                }
                                td { (text(run, "name")) }
                                td { (text(run, "createdAt")) }
                                td { (duration(run["durationMs"].as_i64().unwrap_or(0))) }
                                td { (run["attempts"]) }
                                td {
                                    (run["budgetSpent"])
                                    @if let Some(total) = run["budgetTotal"].as_u64() {
                                        " / " (total) " ("
                                        (run["budgetSpent"].as_u64().unwrap_or(0).saturating_mul(100) / total.max(1)) "%)"
                                    }
                                }
                                td { (cost_text(&run["cost"])) }
                            }
                        }
                    }
                }
            }
        }
        @if let Some(next) = next { p { a href=(ui.href(&next)) { "older runs →" } } }
    };
    layout(&ui, "runs", "/api/changes", body)
}

/// A cost as `0.0123 USD`, or a dash.
pub(super) fn cost_text(cost: &Value) -> String {
    match (cost["total"].as_f64(), cost["currency"].as_str()) {
        (Some(total), Some(currency)) => format!("{total:.4} {currency}"),
        _ => "–".to_owned(),
    }
}

/// The open waits with a form each (the waits page, and a run's own on its page).
pub(super) fn wait_list(ui: &Ui, waits: &[Value], with_run: bool) -> Markup {
    html! {
        @for wait in waits {
            div.wait data-step=(text(wait, "stepId")) {
                p {
                    @if with_run {
                        a href=(ui.href(&format!("/runs/{}", segment(text(wait, "rootRunId"))))) { (text(wait, "runId")) } " · "
                    }
                    @if let Some(description) = wait["description"].as_str() { (description) }
                    @else { span.muted { "(no description)" } }
                    " · since " (text(wait, "since"))
                    @if let Some(deadline) = wait["deadline"].as_str() { " · times out at " (deadline) }
                }
                @for name in wait["names"].as_array().into_iter().flatten().filter_map(Value::as_str) {
                    (forms::signal_form(ui, text(wait, "runId"), name, wait.get("schema")))
                }
            }
        }
    }
}

/// `GET /waits`: every open wait, oldest first, each with a form that answers it.
pub(super) async fn waits(State(ui): State<Ui>) -> Response {
    let waits = match waits_json(&ui.engine).await {
        Ok(waits) => waits,
        Err(error) => return error_response(&error),
    };
    let waits = waits.as_array().cloned().unwrap_or_default();
    let body = html! {
        h1 { "Waits" }
        div #waits data-live {
            @if waits.is_empty() { p { "No run is waiting." } }
            @else { (wait_list(&ui, &waits, true)) }
        }
    };
    layout(&ui, "waits", "/api/changes", body)
}
