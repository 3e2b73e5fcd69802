//! The cluster at a glance: workers, queue totals, dead letters.

use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;

use super::blocking;
use super::queues::{queue_views, QueueView};
use super::workers::worker_views;
use crate::error::{ApiError, Json};
use crate::ServerState;

/// Workers by state.
#[derive(Debug, Serialize, ToSchema)]
pub struct WorkerCounts {
    /// Heard from within 30 s.
    pub online: u64,
    /// Known but silent.
    pub offline: u64,
}

/// Task counts over every queue.
#[derive(Debug, Serialize, ToSchema)]
pub struct Totals {
    /// Ready to run.
    pub ready: u64,
    /// Waiting for an ETA or retry delay.
    pub scheduled: u64,
    /// Held by workers.
    pub reserved: u64,
    /// Dead letters kept.
    pub dead: u64,
    /// Tasks running now (the workers' own count).
    pub active: u64,
    /// Tasks finished by the workers now known (their own counters).
    pub tasks_done: u64,
}

/// Counts by state from the broker's counters (null on a backend without them yet).
#[derive(Debug, Serialize, ToSchema)]
pub struct Counts {
    /// Waiting and ready now.
    pub pending: u64,
    /// Waiting for an ETA or a retry delay now.
    pub scheduled: u64,
    /// Held by workers now.
    pub reserved: u64,
    /// Sent, ever.
    pub sent: u64,
    /// SUCCESS, ever.
    pub succeeded: u64,
    /// FAILURE, ever.
    pub failed: u64,
    /// Retried, ever.
    pub retried: u64,
    /// Revoked, ever.
    pub revoked: u64,
}

/// `GET /api/v1/overview`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Overview {
    /// Workers online and offline.
    pub workers: WorkerCounts,
    /// Totals over the queues.
    pub totals: Totals,
    /// Counts by state, from the broker's counters.
    pub counts: Option<Counts>,
    /// Each queue.
    pub queues: Vec<QueueView>,
    /// The server's version.
    pub version: String,
    /// Seconds since the server started.
    pub uptime_s: u64,
}

/// Workers, queue totals and dead letters in one answer.
#[utoipa::path(get, path = "/api/v1/overview", responses((status = 200, body = Overview)),
    security(("bearer" = [])))]
pub async fn overview(State(state): State<ServerState>) -> Result<Json<Overview>, ApiError> {
    let (workers, queues, counts) = blocking(&state, |app| {
        let counts = match app.backend().inspect().task_counts() {
            Ok(c) => Some(Counts {
                pending: c.pending,
                scheduled: c.scheduled,
                reserved: c.reserved,
                sent: c.sent,
                succeeded: c.succeeded,
                failed: c.failed,
                retried: c.retried,
                revoked: c.revoked,
            }),
            Err(lovage_broker::BrokerError::Unsupported { .. }) => None,
            Err(e) => return Err(e.into()),
        };
        Ok((worker_views(app)?, queue_views(app)?, counts))
    })
    .await?;
    let online = workers.iter().filter(|w| w.online).count() as u64;
    let sum = |f: fn(&QueueView) -> u64| queues.iter().map(f).sum::<u64>();
    let totals = Totals {
        ready: sum(|q| q.ready),
        scheduled: sum(|q| q.scheduled),
        reserved: sum(|q| q.reserved),
        dead: sum(|q| q.dead),
        active: workers.iter().filter(|w| w.online).map(|w| w.active).sum(),
        tasks_done: workers.iter().map(|w| w.tasks_done).sum(),
    };
    Ok(Json(Overview {
        workers: WorkerCounts {
            online,
            offline: workers.len() as u64 - online,
        },
        totals,
        counts,
        queues,
        version: env!("CARGO_PKG_VERSION").to_owned(),
        uptime_s: state.started.elapsed().as_secs(),
    }))
}
