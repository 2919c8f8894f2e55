//! The actions that change runs: cancel, signal, delete, fork. Each is one `Engine` call, the
//! same one the CLI's command makes, so the rules (what may be cancelled, which payloads a wait
//! takes) are the engine's; `guard` has already refused read-only inspectors and other sites.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::response::Response;
use serde::Deserialize;
use serde_json::{json, Value};
use smol_durable_core::store::CancelRequest;
use smol_durable_core::{Error, ForkOptions, ForkPoint, SignalOptions, SubmitOptions};

use super::api::respond;
use super::Ui;

/// `POST /api/runs/{run_id}/cancel`.
pub(super) async fn cancel(State(ui): State<Ui>, Path(run_id): Path<String>) -> Response {
    respond(ui.engine.cancel(&run_id).await.and_then(|outcome| {
        let outcome = match outcome {
            CancelRequest::Requested => "requested",
            CancelRequest::CancelledPending => "cancelled",
            CancelRequest::AlreadyFinished(_) => "alreadyFinished",
            // NotFound (and any outcome a later version adds).
            _ => {
                return Err(Error::RunNotFound {
                    run_id: run_id.clone(),
                    store: ui.engine.store().describe(),
                })
            }
        };
        Ok(json!({ "runId": run_id, "outcome": outcome }))
    }))
}

/// `DELETE /api/runs/{run_id}`: a finished root run with everything under it.
pub(super) async fn delete(State(ui): State<Ui>, Path(run_id): Path<String>) -> Response {
    respond(
        ui.engine
            .delete(&run_id)
            .await
            .map(|()| json!({ "runId": run_id, "deleted": true })),
    )
}

/// `POST /api/runs/{run_id}/signals/{name}` with the payload as the JSON body (an empty body
/// is `null`); `Idempotency-Key` makes a repeated send answer the first receipt.
pub(super) async fn signal(
    State(ui): State<Ui>,
    Path((run_id, name)): Path<(String, String)>,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> Response {
    let payload = if body.iter().all(u8::is_ascii_whitespace) {
        Ok(Value::Null)
    } else {
        serde_json::from_slice::<Value>(&body)
            .map_err(|error| Error::InvalidRequest(format!("the payload is not JSON: {error}")))
    };
    let mut options = SignalOptions::default();
    if let Some(key) = headers
        .get("idempotency-key")
        .and_then(|value| value.to_str().ok())
    {
        options = options.idempotency_key(key);
    }
    let sent = match payload {
        Ok(payload) => ui.engine.signal(&run_id, &name, payload, options).await,
        Err(error) => Err(error),
    };
    respond(sent.map(|receipt| {
        json!({
            "signalId": receipt.signal_id,
            "delivered": receipt.delivered,
            "duplicate": receipt.duplicate,
        })
    }))
}

/// `POST /api/runs/{run_id}/fork`'s body.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct ForkRequest {
    /// The first step not copied: a number as `history` shows it, a step name or id; none:
    /// every completed step is copied.
    before_step: Option<String>,
}

/// `POST /api/runs/{run_id}/fork`: a fork queued for workers (`smol-durable worker` runs it),
/// with the command that would run it here instead.
pub(super) async fn fork(
    State(ui): State<Ui>,
    Path(run_id): Path<String>,
    body: Bytes,
) -> Response {
    let request: Result<ForkRequest, Error> = if body.iter().all(u8::is_ascii_whitespace) {
        Ok(ForkRequest::default())
    } else {
        serde_json::from_slice(&body).map_err(|error| {
            Error::InvalidRequest(format!("a fork request is {{\"beforeStep\": N}}: {error}"))
        })
    };
    let request = match request {
        Ok(request) => request,
        Err(error) => return respond(Err(error)),
    };
    let mut options = ForkOptions::new();
    let mut words = vec!["fork", run_id.as_str()];
    if let Some(point) = request.before_step.as_deref() {
        let Ok(point_parsed) = point.parse::<ForkPoint>();
        options = options.before_step(point_parsed);
        words.extend(["--before-step", point]);
    }
    let command = ui.command(&words);
    respond(
        ui.engine
            .submit_fork(&run_id, options, SubmitOptions::default())
            .await
            .map(|queued| json!({ "runId": queued.run_id, "taskId": queued.task_id, "queued": true, "localCommand": command })),
    )
}
