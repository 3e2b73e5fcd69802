//! The dashboard: one HTML page, its CSS and JavaScript, embedded in the binary (no CDN, no
//! build step). The page reads the JSON API with relative paths, so it works under any prefix.

use axum::http::header;
use axum::response::{Html, IntoResponse, Response};

const INDEX: &str = include_str!("dashboard/index.html");
const CSS: &str = include_str!("dashboard/app.css");
const JS: &str = include_str!("dashboard/app.js");

/// A policy that keeps the page to its own origin: no script, style or request elsewhere.
/// (Inline handlers need 'unsafe-inline' for scripts; the page has no third-party content.)
const CSP: &str = "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; \
                   img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'";

/// `GET /`: the page (it asks for a token itself when the API answers 401).
pub async fn index() -> Response {
    (
        [
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Html(INDEX),
    )
        .into_response()
}

/// `GET /ui/app.css`.
pub async fn css() -> Response {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], CSS).into_response()
}

/// `GET /ui/app.js`.
pub async fn js() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        JS,
    )
        .into_response()
}
