//! The inspector's two static files, compiled into the binary. Only these names are served: a
//! path is looked up, never joined to a directory, so nothing else can be read through it.

use axum::extract::Path;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

/// The stylesheet.
pub(super) const STYLE: &str = include_str!("assets/inspector.css");
/// Live regions, signal forms and action buttons (no dependencies).
pub(super) const SCRIPT: &str = include_str!("assets/inspector.js");

/// `GET /assets/{name}`.
pub(super) async fn asset(Path(name): Path<String>) -> Response {
    let (body, kind) = match name.as_str() {
        "inspector.css" => (STYLE, "text/css; charset=utf-8"),
        "inspector.js" => (SCRIPT, "text/javascript; charset=utf-8"),
        _ => return (StatusCode::NOT_FOUND, "not found").into_response(),
    };
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}
