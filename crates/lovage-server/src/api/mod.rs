//! The JSON API under `/api/v1`: one module per resource, each with its types (which the
//! OpenAPI document is generated from) and handlers.

mod bulk;
mod control;
mod events;
pub mod health;
mod list;
mod overview;
mod queues;
mod schedule;
pub mod session;
mod tasks;
mod workers;

use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::Router;
use lovage_broker::{App, BrokerError};
use utoipa::OpenApi;

pub use control::check_task_name;
pub use queues::queue_views;
pub use workers::worker_views;

use crate::error::ApiError;
use crate::ServerState;

/// The OpenAPI 3.1 document, generated from the handlers and their types.
#[derive(OpenApi)]
#[openapi(
    info(title = "lovage", description = "lovage's task queue over HTTP"),
    paths(
        overview::overview,
        tasks::submit,
        list::list,
        bulk::bulk,
        tasks::get_task,
        tasks::get_result,
        tasks::revoke,
        tasks::retry,
        queues::list,
        queues::purge,
        queues::pause,
        queues::resume,
        queues::peek,
        queues::dead,
        queues::dead_retry,
        queues::dead_discard,
        events::events,
        events::charts,
        workers::list,
        workers::get_worker,
        control::inspect,
        control::control,
        control::list_task_types,
        control::rate_limit,
        control::time_limit,
        schedule::schedule,
        health::healthz,
        health::readyz,
        session::login,
        session::me,
        session::session,
    ),
    components(schemas(crate::error::ErrorBody)),
    modifiers(&Security)
)]
pub struct ApiDoc;

struct Security;

impl utoipa::Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The API's routes, relative to `/api/v1`; every one passes the auth check.
pub fn routes() -> Router<ServerState> {
    Router::new()
        .route("/overview", get(overview::overview))
        .route("/me", get(session::me))
        .route("/tasks", post(tasks::submit).get(list::list))
        .route("/tasks/bulk", post(bulk::bulk))
        .route("/tasks/{id}", get(tasks::get_task))
        .route("/tasks/{id}/result", get(tasks::get_result))
        .route("/tasks/{id}/revoke", post(tasks::revoke))
        .route("/tasks/{id}/retry", post(tasks::retry))
        .route("/queues", get(queues::list))
        .route("/queues/{queue}/purge", post(queues::purge))
        .route("/queues/{queue}/pause", post(queues::pause))
        .route("/queues/{queue}/resume", post(queues::resume))
        .route("/queues/{queue}/peek", get(queues::peek))
        .route("/dead", get(queues::dead))
        .route("/dead/retry", post(queues::dead_retry))
        .route("/dead/discard", post(queues::dead_discard))
        .route("/events", get(events::events))
        .route("/charts", get(events::charts))
        .route("/workers", get(workers::list))
        .route("/workers/{id}", get(workers::get_worker))
        .route("/workers/{id}/inspect/{what}", get(control::inspect))
        .route("/workers/{id}/control", post(control::control))
        .route("/task-types", get(control::list_task_types))
        .route("/task-types/{name}/rate-limit", post(control::rate_limit))
        .route("/task-types/{name}/time-limit", post(control::time_limit))
        .route("/schedule", get(schedule::schedule))
}

/// `GET /api/v1/openapi.json`.
pub async fn openapi() -> impl IntoResponse {
    axum::Json(ApiDoc::openapi())
}

/// Any path no route serves: a JSON 404, not an empty body.
pub async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::not_found(format!("no such endpoint: {}", uri.path()))
}

/// Runs a blocking broker call on tokio's blocking pool.
pub async fn blocking<T, F>(state: &ServerState, f: F) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: FnOnce(&App) -> Result<T, ApiError> + Send + 'static,
{
    let app = state.app.clone();
    tokio::task::spawn_blocking(move || f(&app))
        .await
        .map_err(|e| ApiError::internal(format!("a broker call failed: {e}")))?
}

/// Shorthand for a broker result inside [`blocking`].
pub fn b<T>(r: Result<T, BrokerError>) -> Result<T, ApiError> {
    r.map_err(ApiError::from)
}

/// A task id from a path, or a 400 naming it.
pub fn parse_id(text: &str) -> Result<lovage_core::TaskId, ApiError> {
    text.parse()
        .map_err(|e| ApiError::bad_request(format!("task id {text:?}: {e}")))
}

/// A body that may be empty (then `T::default()`); otherwise JSON, refused like [`Json`](crate::error::Json).
#[derive(Debug, Default)]
pub struct OptionalJson<T>(pub T);

impl<T, S> axum::extract::FromRequest<S> for OptionalJson<T>
where
    T: serde::de::DeserializeOwned + Default,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, ApiError> {
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|r| ApiError::new(r.status(), "bad_request", r.body_text()))?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(OptionalJson(T::default()));
        }
        serde_json::from_slice(&bytes)
            .map(OptionalJson)
            .map_err(|e| ApiError::bad_request(format!("request body: {e}")))
    }
}

/// A short one-line preview of a JSON value (task arguments), at most `max` characters.
pub fn preview(v: &serde_json::Value, max: usize) -> String {
    let s = v.to_string();
    if s.chars().count() <= max {
        return s;
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}
