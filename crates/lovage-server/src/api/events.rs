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

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::Response;
use lovage_broker::ops::{Event, EventKind};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::sync::{broadcast, mpsc};
use utoipa::ToSchema;

use crate::error::{ApiError, Json, Query};
use crate::hub::{sse_frame, Fanned, Hub, Point};
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

/// How often an idle stream gets a comment, so proxies keep it open.
const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// The most bytes one write to a client gathers (many frames per write when it is behind).
const WRITE_BYTES: usize = 16 * 1024;
/// Writes queued for one client before its task waits for it: with [`WRITE_BYTES`], what a
/// stalled client holds beside the shared ring.
const QUEUED_WRITES: usize = 8;

fn lagged(missed: u64) -> Bytes {
    Bytes::from(format!("event: lagged\ndata: {{\"missed\":{missed}}}\n\n"))
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
) -> Result<Response, ApiError> {
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
            StatusCode::NOT_IMPLEMENTED,
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
    let (tx, rx) = mpsc::channel::<Bytes>(QUEUED_WRITES);
    tokio::spawn(feed(state, guard, live, last, filter, tx));
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, Infallible>(b), rx))
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::from_stream(stream))
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))
}

/// One client's task: its backlog from the broker, then the live fan-out. Frames are encoded
/// once by the poller; a client that is behind gets many in one write.
async fn feed(
    state: ServerState,
    guard: ClientGuard,
    mut live: broadcast::Receiver<Arc<Fanned>>,
    last: Option<u64>,
    filter: Filter,
    tx: mpsc::Sender<Bytes>,
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
            let mut out = Vec::new();
            if batch.missed(from) {
                out.extend_from_slice(
                    format!(
                        "event: resync\ndata: {{\"oldest_seq\":{},\"last_seq\":{}}}\n\n",
                        batch.oldest_seq, batch.last_seq
                    )
                    .as_bytes(),
                );
            }
            for e in batch.events.iter().filter(|e| e.seq <= upto) {
                from = e.seq;
                if filter.wants(e) {
                    out.extend_from_slice(&sse_frame(e));
                }
            }
            if !out.is_empty() && tx.send(Bytes::from(out)).await.is_err() {
                return;
            }
            if batch.events.is_empty() || batch.events.last().is_some_and(|e| e.seq >= upto) {
                break;
            }
        }
        sent = upto.max(after);
    }
    loop {
        let first = match tokio::time::timeout(KEEP_ALIVE, live.recv()).await {
            Ok(r) => r,
            Err(_) => {
                if tx.send(Bytes::from_static(b":\n\n")).await.is_err() {
                    return;
                }
                continue;
            }
        };
        let mut out = Vec::new();
        let mut next = Some(first);
        while let Some(r) = next.take() {
            match r {
                Ok(f) => {
                    if f.event.seq > sent {
                        sent = f.event.seq;
                        if filter.wants(&f.event) {
                            out.extend_from_slice(&f.frame);
                        }
                    }
                }
                Err(RecvError::Lagged(n)) => {
                    hub.lagged_total.fetch_add(1, Ordering::AcqRel);
                    out.extend_from_slice(&lagged(n));
                }
                Err(RecvError::Closed) => {
                    let _ = tx.send(Bytes::from(out)).await;
                    return;
                }
            }
            // What else is ready goes in the same write.
            if out.len() < WRITE_BYTES {
                next = match live.try_recv() {
                    Ok(f) => Some(Ok(f)),
                    Err(TryRecvError::Lagged(n)) => Some(Err(RecvError::Lagged(n))),
                    Err(TryRecvError::Closed) => Some(Err(RecvError::Closed)),
                    Err(TryRecvError::Empty) => None,
                };
            }
        }
        if !out.is_empty() && tx.send(Bytes::from(out)).await.is_err() {
            return;
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
