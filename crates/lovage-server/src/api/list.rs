//! `GET /api/v1/tasks`: keyset pages of the broker's task index, newest first.

use axum::extract::State;
use lovage_broker::ops::{TaskQuery, TaskSummary};
use lovage_broker::Timestamp;
use lovage_core::TaskState;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{b, blocking};
use crate::error::{ApiError, Json, Query};
use crate::ServerState;

/// `GET /tasks` filters; all optional, all must match.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// PENDING, RECEIVED, STARTED, RETRY, SUCCESS, FAILURE or REVOKED.
    pub state: Option<String>,
    /// Task name.
    pub name: Option<String>,
    /// Queue.
    pub queue: Option<String>,
    /// Worker id.
    pub worker: Option<String>,
    /// Sent at or after (RFC 3339).
    pub since: Option<String>,
    /// Sent before (RFC 3339).
    pub until: Option<String>,
    /// Text the arguments' preview or the name contains (checked on the page read).
    pub q: Option<String>,
    /// Items per page (default 50, at most 500).
    pub limit: Option<usize>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// One task in a list.
#[derive(Debug, Serialize, ToSchema)]
pub struct TaskItem {
    /// The id.
    pub id: String,
    /// Registered name.
    pub name: String,
    /// Its state.
    pub state: String,
    /// Its queue.
    pub queue: Option<String>,
    /// The worker that holds or ran it.
    pub worker: Option<String>,
    /// When it was sent (RFC 3339).
    pub sent: Option<String>,
    /// When a worker reserved it last.
    pub received: Option<String>,
    /// When its last attempt started.
    pub started: Option<String>,
    /// How long its last attempt ran, once finished.
    pub runtime_ms: Option<u64>,
    /// Attempts beyond the first.
    pub retries: u32,
    /// The start of its arguments.
    pub args_preview: Option<String>,
}

impl From<TaskSummary> for TaskItem {
    fn from(s: TaskSummary) -> Self {
        TaskItem {
            id: s.id.to_string(),
            name: s.name,
            state: s.state.to_string(),
            queue: s.queue,
            worker: s.worker,
            sent: s.sent.map(|t| t.to_string()),
            received: s.received.map(|t| t.to_string()),
            started: s.started.map(|t| t.to_string()),
            runtime_ms: s.runtime_ms,
            retries: s.retries,
            args_preview: s.args_preview,
        }
    }
}

/// A page of tasks.
#[derive(Debug, Serialize, ToSchema)]
pub struct TaskList {
    /// Newest first.
    pub items: Vec<TaskItem>,
    /// Pass back as `cursor` for the next page; null on the last.
    pub next_cursor: Option<String>,
}

fn time(what: &str, t: Option<&str>) -> Result<Option<Timestamp>, ApiError> {
    t.filter(|t| !t.is_empty())
        .map(Timestamp::parse_rfc3339)
        .transpose()
        .map_err(|e| ApiError::bad_request(format!("{what}: {e}")))
}

fn nonempty(s: Option<String>) -> Option<String> {
    s.filter(|s| !s.is_empty())
}

/// Tasks newest first, in keyset pages read from the broker's indexes.
#[utoipa::path(get, path = "/api/v1/tasks",
    params(("state" = Option<String>, Query), ("name" = Option<String>, Query),
        ("queue" = Option<String>, Query), ("worker" = Option<String>, Query),
        ("since" = Option<String>, Query), ("until" = Option<String>, Query),
        ("q" = Option<String>, Query), ("limit" = Option<usize>, Query),
        ("cursor" = Option<String>, Query)),
    responses((status = 200, body = TaskList), (status = 400, body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<ServerState>,
    Query(q): Query<ListQuery>,
) -> Result<Json<TaskList>, ApiError> {
    let st = match q.state.as_deref().filter(|s| !s.is_empty()) {
        None => None,
        Some(s) => Some(
            s.to_ascii_uppercase()
                .parse::<TaskState>()
                .map_err(|e| ApiError::bad_request(format!("state: {e}")))?,
        ),
    };
    let query = TaskQuery {
        state: st,
        name: nonempty(q.name),
        queue: nonempty(q.queue),
        worker: nonempty(q.worker),
        since: time("since", q.since.as_deref())?,
        until: time("until", q.until.as_deref())?,
        limit: q.limit.unwrap_or(50),
        cursor: nonempty(q.cursor),
    };
    let needle = nonempty(q.q);
    let page = blocking(&state, move |app| {
        b(app.backend().inspect().list_tasks(&query))
    })
    .await?;
    let items = page
        .items
        .into_iter()
        .filter(|s| {
            needle.as_ref().is_none_or(|n| {
                s.name.contains(n.as_str())
                    || s.args_preview
                        .as_ref()
                        .is_some_and(|a| a.contains(n.as_str()))
            })
        })
        .map(TaskItem::from)
        .collect();
    Ok(Json(TaskList {
        items,
        next_cursor: page.next_cursor,
    }))
}
