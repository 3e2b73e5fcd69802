//! Workers, from the records their heartbeats keep in the broker (never from a broadcast reply,
//! so a busy worker is never "unknown").

use std::time::Duration;

use axum::extract::{Path, State};
use lovage_broker::{App, Timestamp, WorkerInfo, WORKER_RECORD_TTL};
use serde::Serialize;
use utoipa::ToSchema;

use super::{b, blocking};
use crate::error::{ApiError, Json};
use crate::ServerState;

/// A worker not heard from for this long is offline.
pub const ONLINE_WITHIN: Duration = Duration::from_secs(30);

/// One worker.
#[derive(Debug, Serialize, ToSchema)]
pub struct WorkerView {
    /// `name@host.pid`.
    pub id: String,
    /// Host name.
    pub host: String,
    /// Process id.
    pub pid: u32,
    /// Queues it consumes.
    pub queues: Vec<String>,
    /// Pool kind and size.
    pub pool: String,
    /// When it started (RFC 3339).
    pub started: String,
    /// Its last heartbeat (RFC 3339).
    pub heartbeat: String,
    /// Seconds since the last heartbeat.
    pub heartbeat_age_s: f64,
    /// Heard from within the last 30 s.
    pub online: bool,
    /// Tasks finished so far.
    pub tasks_done: u64,
    /// Tasks running now.
    pub active: u64,
    /// The resources it was started with (`--resources gpu=2,mem=0.5`), by name: whole
    /// units as integers, fractional ones as numbers with at most 3 decimals; empty for none.
    #[schema(value_type = std::collections::BTreeMap<String, f64>)]
    pub resources: lovage_core::Resources,
}

impl From<&WorkerInfo> for WorkerView {
    fn from(w: &WorkerInfo) -> Self {
        let age_ms = (Timestamp::now().as_millis() - w.heartbeat.as_millis()).max(0);
        WorkerView {
            id: w.id.clone(),
            host: w.host.clone(),
            pid: w.pid,
            queues: w.queues.clone(),
            pool: w.pool.clone(),
            started: w.started.to_string(),
            heartbeat: w.heartbeat.to_string(),
            heartbeat_age_s: age_ms as f64 / 1000.0,
            online: (age_ms as u128) < ONLINE_WITHIN.as_millis(),
            tasks_done: w.tasks_done,
            active: w.active,
            resources: w.resources.clone(),
        }
    }
}

/// Every worker whose record is still kept, online ones first.
pub fn worker_views(app: &App) -> Result<Vec<WorkerView>, ApiError> {
    let mut ws: Vec<WorkerView> = b(app.workers(WORKER_RECORD_TTL))?
        .iter()
        .map(WorkerView::from)
        .collect();
    ws.sort_by(|a, b| b.online.cmp(&a.online).then(a.id.cmp(&b.id)));
    Ok(ws)
}

/// Workers, online first.
#[utoipa::path(get, path = "/api/v1/workers", responses((status = 200, body = Vec<WorkerView>)),
    security(("bearer" = [])))]
pub async fn list(State(state): State<ServerState>) -> Result<Json<Vec<WorkerView>>, ApiError> {
    Ok(Json(blocking(&state, worker_views).await?))
}

/// One worker; 404 when the broker keeps no record of it.
#[utoipa::path(get, path = "/api/v1/workers/{id}", params(("id" = String, Path)),
    responses((status = 200, body = WorkerView), (status = 404, body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
pub async fn get_worker(
    State(state): State<ServerState>,
    Path(id): Path<String>,
) -> Result<Json<WorkerView>, ApiError> {
    let ws = blocking(&state, worker_views).await?;
    ws.into_iter()
        .find(|w| w.id == id)
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("no worker {id:?} is known to the broker")))
}
