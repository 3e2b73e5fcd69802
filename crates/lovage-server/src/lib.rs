//! lovage's HTTP server: a JSON API under `/api/v1`, the OpenAPI document that describes it,
//! health checks, and token auth, over one broker and result store.
//!
//! The server owns no state of its own: every answer is read from the broker and the result
//! store, so a server killed and restarted shows the same tasks and counts. It is the only
//! lovage crate with an async runtime; broker calls are blocking and run on tokio's blocking
//! pool, so a slow broker never stalls the accept loop.
//!
//! [`router`] is public: a user's own axum app can mount it under any prefix
//! (`Router::new().nest("/lovage", lovage_server::router(state))`).

mod api;
pub mod auth;
mod dashboard;
pub mod error;
pub mod hub;
mod metrics;
mod serve;

use std::sync::Arc;
use std::time::Instant;

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;
use lovage_broker::App;

pub use api::ApiDoc;
pub use auth::{Auth, ProxyAuth, Scope, Tokens};
pub use error::ApiError;
pub use serve::{Config, Server};

/// The largest request body accepted (a task's arguments included); larger ones get 413.
pub const BODY_LIMIT: usize = 256 * 1024;

/// What every handler shares: the broker connection and the auth rules. Cheap to clone.
#[derive(Clone)]
pub struct ServerState {
    app: App,
    auth: Auth,
    started: Arc<Instant>,
    started_unix_s: u64,
    hub: Arc<hub::Hub>,
    open_metrics: bool,
    metrics_per_worker: bool,
    proxy: Option<Arc<auth::ProxyAuth>>,
}

impl ServerState {
    /// State over `app` checking requests with `auth`.
    pub fn new(app: App, auth: Auth) -> ServerState {
        ServerState {
            app,
            auth,
            started: Arc::new(Instant::now()),
            started_unix_s: lovage_broker::Timestamp::now().as_millis() as u64 / 1000,
            hub: Arc::new(hub::Hub::default()),
            open_metrics: false,
            metrics_per_worker: false,
            proxy: None,
        }
    }

    /// Serves `/metrics` without a token (for a scraper on a trusted network).
    pub fn open_metrics(mut self, open: bool) -> Self {
        self.open_metrics = open;
        self
    }

    /// Adds per-worker series to `/metrics` (they drop out when a worker goes away).
    pub fn metrics_per_worker(mut self, on: bool) -> Self {
        self.metrics_per_worker = on;
        self
    }

    /// Signs in the user a trusted reverse proxy names in its header ([`auth::ProxyAuth`]);
    /// requests without it are checked by token as before.
    pub fn trust_proxy(mut self, proxy: Option<auth::ProxyAuth>) -> Self {
        self.proxy = proxy.map(Arc::new);
        self
    }

    /// The broker connection.
    pub fn app(&self) -> &App {
        &self.app
    }
}

impl std::fmt::Debug for ServerState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerState")
            .field("broker", &self.app.backend().url())
            .finish()
    }
}

/// Every route: `/healthz`, `/readyz`, `/login`, `/logout` and the API under `/api/v1`.
/// Links it makes are relative, so it works nested under any prefix.
pub fn router(state: ServerState) -> Router {
    let api = api::routes().route_layer(axum::middleware::from_fn_with_state(
        state.clone(),
        auth::require,
    ));
    Router::new()
        .route("/", get(dashboard::index))
        .route("/ui/app.css", get(dashboard::css))
        .route("/ui/app.js", get(dashboard::js))
        .route("/healthz", get(api::health::healthz))
        .route("/readyz", get(api::health::readyz))
        .route("/login", post(api::session::login))
        .route("/logout", post(api::session::logout))
        .route("/session", get(api::session::session))
        .route("/api/v1/openapi.json", get(api::openapi))
        .route("/metrics", get(metrics::metrics))
        .nest("/api/v1", api)
        .fallback(api::not_found)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(state)
}
