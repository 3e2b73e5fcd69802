//! `GET /api/v1/events`: the broker's event stream as Server-Sent Events, and the charts'
//! ring buffers.
//!
//! A client that reconnects with `Last-Event-ID` first reads what it missed from the broker's
//! bounded stream, then follows the live fan-out; if the broker dropped some of what it missed,
//! it gets a `resync` event (reload state, then go on). A client slower than the fan-out's ring
//! ([`CLIENT_BUFFER`](crate::hub::CLIENT_BUFFER) events) gets `lagged` and skips ahead: it never
//! slows the server or other clients.

use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::IntoResponse;
use lovage_broker::ops::{Event, EventKind};
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, mpsc};
use utoipa::ToSchema;

use crate::error::{ApiError, Json, Query};
use crate::hub::{Hub, Point};
use crate::ServerState;

/// `GET /events` filters.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    /// Comma-separated types, e.g. `task-succeeded,task-failed`.
    pub types: Option<String>,
    /// Only this task's events.
    pub task: Option<String>,
    /// Only this queue's events.
    pub queue: Option<String>,
    /// Resume after this seq (as the `Last-Event-ID` header does, for clients that cannot set it).
    pub last_event_id: Option<u64>,
}

struct Filter {
    types: Option<Vec<EventKind>>,
    task: Option<lovage_core::TaskId>,
    queue: Option<String>,
}

impl Filter {
    fn wants(&self, e: &Event) -> bool {
        self.types.as_ref().is_none_or(|t| t.contains(&e.kind))
            && self.task.is_none_or(|t| e.task_id == Some(t))
            && self
                .queue
                .as_ref()
                .is_none_or(|q| e.queue.as_ref() == Some(q))
    }
}

/// Counts a connected client; uncounts it when its task ends.
struct ClientGuard(Arc<Hub>);

impl Drop for ClientGuard {
    fn drop(&mut self) {
        self.0.sse_clients.fetch_sub(1, Ordering::AcqRel);
    }
}

fn sse(e: &Event) -> SseEvent {
    let data = serde_json::to_string(e).unwrap_or_else(|_| "{}".into());
    SseEvent::default()
        .id(e.seq.to_string())
        .event(e.kind.as_str())
        .data(data)
}

/// Server-Sent Events: every event as `id: seq`, `event: type`, `data: {seq,ts,type,...}`;
/// `resync` when events were lost before a resume, `lagged` when this client fell behind.
#[utoipa::path(get, path = "/api/v1/events",
    params(("types" = Option<String>, Query), ("task" = Option<String>, Query),
        ("queue" = Option<String>, Query), ("last_event_id" = Option<u64>, Query),
        ("Last-Event-ID" = Option<u64>, Header)),
    responses((status = 200, description = "text/event-stream"),
        (status = 400, body = crate::error::ErrorBody),
        (status = 501, body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
pub async fn events(
    State(state): State<ServerState>,
    headers: HeaderMap,
    Query(q): Query<EventsQuery>,
) -> Result<impl IntoResponse, ApiError> {
    let types = q
        .types
        .as_deref()
        .filter(|t| !t.is_empty())
        .map(|t| {
            t.split(',')
                .map(|k| {
                    EventKind::parse(k.trim()).ok_or_else(|| {
                        ApiError::bad_request(format!("types: unknown event type {k:?}"))
                    })
                })
                .collect::<Result<Vec<_>, _>>()
        })
        .transpose()?;
    let task = q
        .task
        .as_deref()
        .filter(|t| !t.is_empty())
        .map(super::parse_id)
        .transpose()?;
    let last = match headers.get("last-event-id").and_then(|v| v.to_str().ok()) {
        Some(v) => Some(v.trim().parse::<u64>().map_err(|_| {
            ApiError::bad_request(format!("Last-Event-ID {v:?}: expected an event seq"))
        })?),
        None => q.last_event_id,
    };
    let hub = state.hub.clone();
    if !hub.events_supported.load(Ordering::Acquire) {
        return Err(ApiError::new(
            axum::http::StatusCode::NOT_IMPLEMENTED,
            "unsupported",
            "this broker has no event stream yet",
        ));
    }
    let filter = Filter {
        types,
        task,
        queue: q.queue.filter(|q| !q.is_empty()),
    };
    // Subscribe before reading the backlog, so nothing falls between the two.
    let live = hub.subscribe();
    hub.sse_clients.fetch_add(1, Ordering::AcqRel);
    let guard = ClientGuard(hub.clone());
    let (tx, rx) = mpsc::channel::<SseEvent>(64);
    tokio::spawn(feed(state, guard, live, last, filter, tx));
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|e| (Ok::<_, Infallible>(e), rx))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

/// One client's task: its backlog from the broker, then the live fan-out.
async fn feed(
    state: ServerState,
    guard: ClientGuard,
    mut live: broadcast::Receiver<Arc<Event>>,
    last: Option<u64>,
    filter: Filter,
    tx: mpsc::Sender<SseEvent>,
) {
    let hub = guard.0.clone();
    // Subscribed already; once the poller runs, every event after `upto` reaches `live`.
    hub.wait_polling().await;
    let upto = hub.last_seq.load(Ordering::Acquire);
    let mut sent = upto;
    if let Some(after) = last {
        // The backlog up to where the live fan-out took over.
        let mut from = after;
        while from < upto {
            let app = state.app.clone();
            let read =
                tokio::task::spawn_blocking(move || app.backend().events().read_events(from, 1000))
                    .await;
            let Ok(Ok(batch)) = read else { return };
            if batch.missed(from) {
                let data = format!(
                    r#"{{"oldest_seq":{},"last_seq":{}}}"#,
                    batch.oldest_seq, batch.last_seq
                );
                if tx
                    .send(SseEvent::default().event("resync").data(data))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            if batch.events.is_empty() {
                break;
            }
            for e in batch.events.iter().filter(|e| e.seq <= upto) {
                from = e.seq;
                if filter.wants(e) && tx.send(sse(e)).await.is_err() {
                    return;
                }
            }
            if batch.events.last().is_some_and(|e| e.seq >= upto) {
                break;
            }
        }
        sent = upto.max(after);
    }
    loop {
        match live.recv().await {
            Ok(e) => {
                if e.seq <= sent {
                    continue;
                }
                sent = e.seq;
                if filter.wants(&e) && tx.send(sse(&e)).await.is_err() {
                    return;
                }
            }
            Err(broadcast::error::RecvError::Lagged(n)) => {
                hub.lagged_total.fetch_add(1, Ordering::AcqRel);
                let data = format!(r#"{{"missed":{n}}}"#);
                if tx
                    .send(SseEvent::default().event("lagged").data(data))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// `?range=` for the charts.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ChartQuery {
    /// `15m` (default), `1h` or `24h`.
    pub range: Option<String>,
}

/// Finished tasks per step over a range, from the server's ring buffers (they start empty
/// when the server starts).
#[derive(Debug, Serialize, ToSchema)]
pub struct Chart {
    /// The range.
    pub range: String,
    /// Seconds per point.
    pub step_s: u64,
    /// Oldest first.
    pub points: Vec<Point>,
}

/// Throughput and failures for the dashboard's charts.
#[utoipa::path(get, path = "/api/v1/charts", params(("range" = Option<String>, Query)),
    responses((status = 200, body = Chart), (status = 400, body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
pub async fn charts(
    State(state): State<ServerState>,
    Query(q): Query<ChartQuery>,
) -> Result<Json<Chart>, ApiError> {
    let range = q.range.unwrap_or_else(|| "15m".into());
    let (step, points) = state.hub.chart(&range).ok_or_else(|| {
        ApiError::bad_request(format!("range={range:?}: expected 15m, 1h or 24h"))
    })?;
    Ok(Json(Chart {
        range,
        step_s: step.as_secs(),
        points,
    }))
}
