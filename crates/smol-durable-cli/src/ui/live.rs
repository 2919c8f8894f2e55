//! Live updates over server-sent events. The store is the only channel: another process (a
//! `run`, a worker on another machine) writes events and changes runs there, so these streams
//! poll it — a read of the rows after the last one seen — every [`POLL`]. That works the same
//! on SQLite and PostgreSQL and keeps an idle inspector at a few cheap queries a second.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::Stream;
use serde::Deserialize;
use smol_durable_core::store::{RunFilter, WaitFilter};
use smol_durable_core::Engine;

use super::api::event_view;
use super::{error_response, Ui};

/// How often a stream looks at the store.
const POLL: Duration = Duration::from_millis(250);

/// `GET /api/runs/{run_id}/events?after=SEQ`'s query.
#[derive(Debug, Default, Deserialize)]
pub(super) struct EventsQuery {
    /// Only events after this position (default: from the first).
    after: Option<i64>,
}

/// `GET /api/runs/{run_id}/events`: the run's stored events (its children's included) as they
/// are written, each a `message` whose id is its position (a reconnecting browser sends it
/// back as `Last-Event-ID`), and a `run` event (`{state, updatedAtMs}`) whenever the run
/// changes. The page's script closes it once the run has finished.
pub(super) async fn run_events(
    State(ui): State<Ui>,
    Path(run_id): Path<String>,
    Query(query): Query<EventsQuery>,
    headers: HeaderMap,
) -> Response {
    let run = match ui.engine.status(&run_id).await {
        Ok(status) => status.run,
        Err(error) => return error_response(&error),
    };
    let resumed = headers
        .get("last-event-id")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse().ok());
    // The page was drawn with the run as it is now: only a later change is news.
    let watch = RunWatch {
        engine: ui.engine.clone(),
        last_state: Some((run.state.as_str().to_owned(), run.updated_at)),
        run_id: run.run_id,
        after: resumed.or(query.after).unwrap_or(0),
        pending: std::collections::VecDeque::new(),
    };
    Sse::new(run_stream(watch))
        .keep_alive(KeepAlive::default())
        .into_response()
}

struct RunWatch {
    engine: Engine,
    run_id: String,
    after: i64,
    /// The run's state and last change, as last sent.
    last_state: Option<(String, i64)>,
    pending: std::collections::VecDeque<Event>,
}

fn run_stream(watch: RunWatch) -> impl Stream<Item = Result<Event, Infallible>> {
    futures::stream::unfold(watch, |mut watch| async move {
        loop {
            if let Some(event) = watch.pending.pop_front() {
                return Some((Ok(event), watch));
            }
            match watch.engine.events(&watch.run_id, watch.after, 500).await {
                Ok(events) => {
                    for event in events {
                        watch.after = event.seq;
                        let data = event_view(&event).to_string();
                        watch
                            .pending
                            .push_back(Event::default().id(event.seq.to_string()).data(data));
                    }
                }
                // A store that stopped answering ends the stream; the browser reconnects.
                Err(error) => {
                    tracing::warn!(%error, "the inspector's event stream stopped");
                    return None;
                }
            }
            if let Ok(Some(run)) = watch.engine.store().get_run(&watch.run_id).await {
                let now = (run.state.as_str().to_owned(), run.updated_at);
                if watch.last_state.as_ref() != Some(&now) {
                    let data = serde_json::json!({ "state": now.0, "updatedAtMs": now.1 });
                    watch
                        .pending
                        .push_back(Event::default().event("run").data(data.to_string()));
                    watch.last_state = Some(now);
                }
            }
            if watch.pending.is_empty() {
                tokio::time::sleep(POLL).await;
            }
        }
    })
}

/// `GET /api/changes`: a `changed` event whenever the newest runs or the open waits change (a
/// run starts, changes state, or a wait opens or ends), for the runs and waits pages.
pub(super) async fn changes(State(ui): State<Ui>) -> Response {
    let stream = futures::stream::unfold(
        (ui.engine.clone(), None::<u64>),
        |(engine, last)| async move {
            loop {
                let Ok(now) = fingerprint(&engine).await else {
                    return None;
                };
                if last.is_some_and(|last| last != now) {
                    let event = Event::default().event("changed").data(now.to_string());
                    return Some((Ok::<_, Infallible>(event), (engine, Some(now))));
                }
                if last.is_none() {
                    let event = Event::default().event("ready").data(now.to_string());
                    return Some((Ok(event), (engine, Some(now))));
                }
                tokio::time::sleep(POLL * 2).await;
            }
        },
    );
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// A hash of the newest root runs' ids, states and last changes, and of the open waits.
async fn fingerprint(engine: &Engine) -> Result<u64, smol_durable_core::Error> {
    use std::hash::{Hash, Hasher};
    let runs = engine
        .list_runs(&RunFilter {
            roots_only: true,
            limit: Some(50),
            ..RunFilter::default()
        })
        .await?;
    let waits = engine.waits(&WaitFilter::default()).await?;
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    for run in &runs {
        (&run.run_id, run.state.as_str(), run.updated_at).hash(&mut hasher);
    }
    for wait in &waits {
        wait.step_id.hash(&mut hasher);
    }
    Ok(hasher.finish())
}
