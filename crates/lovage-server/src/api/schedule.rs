//! `GET /api/v1/schedule`: the periodic tasks `lovage beat` runs, as the leading beat
//! publishes them in the broker each round (the server keeps nothing of them).

use axum::extract::State;
use lovage_beat::{Published, PublishedEntry};
use lovage_broker::Timestamp;
use serde::Serialize;
use utoipa::ToSchema;

use super::{b, blocking};
use crate::error::{ApiError, Json};
use crate::ServerState;

/// One entry of a schedule.
#[derive(Debug, Serialize, ToSchema)]
pub struct ScheduleEntryView {
    /// The entry's name in the schedule file.
    pub name: String,
    /// The task it sends.
    pub task: String,
    /// The queue it sends to.
    pub queue: String,
    /// When it fires, e.g. `every 10s` or `cron 30 2 * * * (Europe/Paris)`.
    pub schedule: String,
    /// Its next run (RFC 3339), if it has one.
    pub next_run: Option<String>,
    /// Seconds until its next run (negative: due, about to be sent).
    pub next_run_in_s: Option<f64>,
    /// The last tick sent (RFC 3339), if known.
    pub last_run: Option<String>,
}

/// One schedule a beat runs.
#[derive(Debug, Serialize, ToSchema)]
pub struct ScheduleView {
    /// The schedule's fingerprint: beats running the same entries share it.
    pub id: String,
    /// The beat that leads it (its lock holder name).
    pub leader: String,
    /// When that beat last published it (RFC 3339).
    pub published: String,
    /// Seconds since then.
    pub published_age_s: f64,
    /// Not refreshed for three lock TTLs (at least 30 s): no beat runs it now, and its next
    /// runs will not happen until one starts.
    pub stale: bool,
    /// The entries, in file order.
    pub entries: Vec<ScheduleEntryView>,
    /// Entries left out of this list (a schedule publishes its first 500).
    pub more: usize,
}

fn secs_between(from: Timestamp, to: Timestamp) -> f64 {
    (to.as_millis() - from.as_millis()) as f64 / 1000.0
}

impl ScheduleView {
    fn of(p: Published, now: Timestamp) -> ScheduleView {
        let entry = |e: PublishedEntry| ScheduleEntryView {
            next_run: e.next_run.map(|t| t.to_string()),
            next_run_in_s: e.next_run.map(|t| secs_between(now, t)),
            last_run: e.last_run.map(|t| t.to_string()),
            name: e.name,
            task: e.task,
            queue: e.queue,
            schedule: e.schedule,
        };
        ScheduleView {
            stale: p.is_stale(now),
            published: p.published.to_string(),
            published_age_s: secs_between(p.published, now).max(0.0),
            entries: p.entries.into_iter().map(entry).collect(),
            id: p.id,
            leader: p.leader,
            more: p.more,
        }
    }
}

/// The schedules `lovage beat` processes publish in the broker, most recently published first;
/// empty when no beat has run against this broker.
#[utoipa::path(get, path = "/api/v1/schedule",
    responses((status = 200, body = Vec<ScheduleView>)), security(("bearer" = [])))]
pub async fn schedule(
    State(state): State<ServerState>,
) -> Result<Json<Vec<ScheduleView>>, ApiError> {
    let published = blocking(&state, |app| b(lovage_beat::read_published(app.backend()))).await?;
    let now = Timestamp::now();
    Ok(Json(
        published
            .into_iter()
            .map(|p| ScheduleView::of(p, now))
            .collect(),
    ))
}
