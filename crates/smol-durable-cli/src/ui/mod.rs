//! `smol-durable ui`: a local web inspector of the runs in a store — server-rendered pages
//! (`pages`) and the JSON API behind them (`api`), over the same `Engine` every other command
//! uses.
//!
//! It listens on loopback unless told otherwise; any other address needs a token (given, or
//! generated and printed with the URL), checked on every request.

mod api;
mod pages;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use smol_durable_core::Engine;

use crate::cli::UiArgs;
use crate::output::outln;
use crate::Outcome;

/// What every handler shares.
#[derive(Clone)]
struct Ui {
    engine: Engine,
    /// Required on every request when set (`?token=` or `Authorization: Bearer`).
    token: Option<Arc<str>>,
}

/// `ui [--listen ADDR] [--token T]`: serves until SIGINT or SIGTERM.
pub async fn ui(engine: &Engine, options: &UiArgs) -> anyhow::Result<Outcome> {
    let address: SocketAddr = options.listen;
    let token: Option<Arc<str>> = match (&options.token, address.ip().is_loopback()) {
        (Some(token), _) => Some(token.as_str().into()),
        // Anyone who can reach a non-loopback address could read every prompt and result.
        (None, false) => Some(smol_durable_core::new_id("token").into()),
        (None, true) => None,
    };
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .with_context(|| format!("cannot listen on {address}"))?;
    let bound = listener.local_addr()?;
    let state = Ui {
        engine: engine.clone(),
        token: token.clone(),
    };
    let router = router(state);
    let query = token
        .as_deref()
        .map_or_else(String::new, |token| format!("?token={token}"));
    outln!("smol-durable ui: http://{bound}/{query}");
    axum::serve(listener, router)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
        .context("the web inspector stopped")?;
    Ok(Outcome::Success)
}

fn router(state: Ui) -> Router {
    Router::new()
        .route("/", get(pages::runs))
        .route("/runs/{run_id}", get(pages::run))
        .route("/api/runs", get(api::runs))
        .route("/api/runs/{run_id}", get(api::run))
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            require_token,
        ))
        // Requests carry no bodies yet; anything large is refused before it is read.
        .layer(axum::extract::DefaultBodyLimit::max(64 * 1024))
        .with_state(state)
}

/// Refuses a request without the token, when there is one.
async fn require_token(State(ui): State<Ui>, request: Request, next: Next) -> Response {
    let Some(token) = ui.token.as_deref() else {
        return next.run(request).await;
    };
    let bearer = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "));
    let in_query = request.uri().query().is_some_and(|query| {
        query
            .split('&')
            .any(|pair| pair.strip_prefix("token=") == Some(token))
    });
    if bearer == Some(token) || in_query {
        next.run(request).await
    } else {
        (
            StatusCode::UNAUTHORIZED,
            "this inspector needs its token: open the URL it printed",
        )
            .into_response()
    }
}

async fn not_found() -> Response {
    (StatusCode::NOT_FOUND, "not found").into_response()
}

/// An engine error as an HTTP answer: a missing run is 404, the rest 500, with the message.
fn error_response(error: &smol_durable_core::Error) -> Response {
    let status = match error.kind() {
        smol_durable_core::ErrorKind::NotFound => StatusCode::NOT_FOUND,
        smol_durable_core::ErrorKind::InvalidRequest => StatusCode::BAD_REQUEST,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    (status, error.to_string()).into_response()
}
