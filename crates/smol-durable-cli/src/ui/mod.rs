//! `smol-durable ui`: a local web inspector of the runs in a store — server-rendered pages
//! (`pages`, `run_page`), the JSON API behind them (`api`), the actions that change runs
//! (`actions`) and live updates over server-sent events (`live`), over the same `Engine` every
//! other command uses.
//!
//! Every request passes [`guard`]: the Host header must name this inspector (a page on another
//! site that resolves its own name to 127.0.0.1 reads nothing), the token is checked when there
//! is one, and a request that changes something must come from the inspector's own pages (its
//! `Origin`) or carry the token, so another site cannot make a browser cancel a run.

mod actions;
mod api;
mod assets;
mod charts;
mod forms;
mod live;
mod pages;
mod run_page;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use smol_durable_core::Engine;

use crate::cli::UiArgs;
use crate::output::outln;
use crate::{Invocation, Outcome};

/// What every handler shares.
#[derive(Clone)]
struct Ui {
    engine: Engine,
    /// Required on every request when set (`?token=` or `Authorization: Bearer`).
    token: Option<Arc<str>>,
    /// `--read-only`: no actions are offered, and their routes answer 403.
    read_only: bool,
    /// The `--db` value (without a password) and script-engine flags that printed commands
    /// repeat.
    database_flag: Arc<str>,
    script_flags: Arc<[String]>,
    /// The address it listens on, one of the hosts a request may name.
    bound: SocketAddr,
}

/// `ui [--listen ADDR] [--token T] [--read-only] [--open]`: serves until SIGINT.
pub async fn ui(
    engine: &Engine,
    options: &UiArgs,
    invocation: &Invocation<'_>,
) -> anyhow::Result<Outcome> {
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
        read_only: options.read_only,
        database_flag: invocation.database.as_shown_flag().into(),
        script_flags: invocation.script_flags.clone().into(),
        bound,
    };
    let router = router(state);
    let query = token
        .as_deref()
        .map_or_else(String::new, |token| format!("?token={token}"));
    let url = format!("http://{bound}/{query}");
    outln!("smol-durable ui: {url}");
    if options.open {
        open_browser(&url);
    }
    axum::serve(listener, router)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
        .context("the web inspector stopped")?;
    Ok(Outcome::Success)
}

/// `--open`: the desktop's browser (`xdg-open`, `open` on macOS); failing to start one only
/// says so, the URL is printed anyway.
fn open_browser(url: &str) {
    let opener = if cfg!(target_os = "macos") {
        "open"
    } else {
        "xdg-open"
    };
    let started = std::process::Command::new(opener)
        .arg(url)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
    if let Err(error) = started {
        crate::output::errln!(
            "note: could not start a browser with {opener} ({error}); open the URL above"
        );
    }
}

fn router(state: Ui) -> Router {
    Router::new()
        .route("/", get(pages::runs))
        .route("/waits", get(pages::waits))
        .route("/runs/{run_id}", get(run_page::run))
        .route("/assets/{name}", get(assets::asset))
        .route("/api/runs", get(api::runs))
        .route("/api/runs/{run_id}", get(api::run).delete(actions::delete))
        .route("/api/runs/{run_id}/events", get(live::run_events))
        .route("/api/runs/{run_id}/cancel", post(actions::cancel))
        .route("/api/runs/{run_id}/fork", post(actions::fork))
        .route("/api/runs/{run_id}/signals/{name}", post(actions::signal))
        .route("/api/waits", get(api::waits))
        .route("/api/changes", get(live::changes))
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(state.clone(), guard))
        // Signal payloads are the only bodies; the engine's own limit on them is lower.
        .layer(axum::extract::DefaultBodyLimit::max(1024 * 1024))
        .with_state(state)
}

/// Host, token, read-only and cross-site checks before any handler runs.
async fn guard(State(ui): State<Ui>, request: Request, next: Next) -> Response {
    let headers = request.headers();
    if !ui.host_allowed(headers) {
        return (
            StatusCode::MISDIRECTED_REQUEST,
            "this inspector answers only requests that name it (Host)",
        )
            .into_response();
    }
    let token_given = ui.token.as_deref().is_some_and(|token| {
        let bearer = headers
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "));
        let in_query = request.uri().query().is_some_and(|query| {
            query
                .split('&')
                .any(|pair| pair.strip_prefix("token=") == Some(token))
        });
        bearer == Some(token) || in_query
    });
    if ui.token.is_some() && !token_given {
        return (
            StatusCode::UNAUTHORIZED,
            "this inspector needs its token: open the URL it printed",
        )
            .into_response();
    }
    let changes = !matches!(*request.method(), Method::GET | Method::HEAD);
    if changes {
        if ui.read_only {
            return (
                StatusCode::FORBIDDEN,
                "this inspector is read-only (--read-only)",
            )
                .into_response();
        }
        if !token_given && !ui.same_origin(headers) {
            return (
                StatusCode::FORBIDDEN,
                "a request that changes a run must come from the inspector's own pages",
            )
                .into_response();
        }
    }
    let mut response = next.run(request).await;
    // No other site may frame the pages (to trick a click on Send or Delete), run scripts in
    // them, or learn a token-bearing URL from the Referer.
    let headers = response.headers_mut();
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
        ),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

impl Ui {
    /// Whether the Host header names this inspector: its address, or loopback by any of its
    /// names. With a token, any host (a reverse proxy's name) is fine: the token decides.
    fn host_allowed(&self, headers: &HeaderMap) -> bool {
        if self.token.is_some() {
            return true;
        }
        let Some(host) = headers.get(header::HOST).and_then(|v| v.to_str().ok()) else {
            return false;
        };
        let name = match host.rsplit_once(':') {
            Some((name, port)) if !name.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => {
                name
            }
            _ => host,
        };
        let name = name.trim_start_matches('[').trim_end_matches(']');
        name.eq_ignore_ascii_case("localhost")
            || name
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback() || ip == self.bound.ip())
    }

    /// Whether a browser sent the request from this inspector's pages: `Origin` (or, without
    /// it, `Sec-Fetch-Site`) says so. A client that sends neither is not a browser page, so no
    /// other site can have made it.
    fn same_origin(&self, headers: &HeaderMap) -> bool {
        let value = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        match (value("origin"), value("sec-fetch-site")) {
            (Some(origin), _) => {
                let host = value("host").unwrap_or_default();
                origin
                    .strip_prefix("http://")
                    .is_some_and(|rest| rest.eq_ignore_ascii_case(host))
            }
            (None, Some(site)) => site == "same-origin" || site == "none",
            (None, None) => true,
        }
    }

    /// A path with the token in its query when the inspector has one (the pages' links).
    fn href(&self, path: &str) -> String {
        match self.token.as_deref() {
            Some(token) if path.contains('?') => format!("{path}&token={token}"),
            Some(token) => format!("{path}?token={token}"),
            None => path.to_owned(),
        }
    }

    /// The start of a printed command: the binary with this inspector's database and flags.
    fn command(&self, words: &[&str]) -> String {
        let mut line: Vec<String> = vec!["smol-durable".into(), "--db".into()];
        line.push(self.database_flag.to_string());
        line.extend(self.script_flags.iter().cloned());
        line.extend(words.iter().map(|word| (*word).to_owned()));
        crate::output::shell_line(&line)
    }
}

/// A value as one URL path segment or query value: everything but unreserved characters
/// percent-encoded (`/` included, so a stored name cannot reach another route).
fn segment(value: &str) -> String {
    value
        .bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (byte as char).to_string()
            }
            _ => format!("%{byte:02X}"),
        })
        .collect()
}

async fn not_found() -> Response {
    (StatusCode::NOT_FOUND, "not found").into_response()
}

/// An engine error as an HTTP answer: a missing run is 404, a bad request 400, an operation
/// the run's state refuses 409, the rest 500, with the message.
fn error_response(error: &smol_durable_core::Error) -> Response {
    use smol_durable_core::{Error, ErrorKind, StoreErrorKind};
    let status = match error.kind() {
        // A store's refusal of an operation the run's state does not allow (deleting a run
        // that has not finished).
        ErrorKind::Store if matches!(error, Error::Store(store) if store.kind() == StoreErrorKind::Conflict) => {
            StatusCode::CONFLICT
        }
        ErrorKind::NotFound => StatusCode::NOT_FOUND,
        ErrorKind::InvalidRequest => StatusCode::BAD_REQUEST,
        ErrorKind::InvalidState => StatusCode::CONFLICT,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    (status, error.to_string()).into_response()
}
