//! `POST /api/v1/tasks/bulk`: revoke, retry or delete every task a filter matches, read from
//! the broker's task index in bounded pages.

use axum::extract::State;
use lovage_broker::ops::TaskQuery;
use lovage_core::{TaskId, TaskState};
use serde::Deserialize;
use utoipa::ToSchema;

use super::queues::BulkResult;
use super::tasks::{find_envelope, resend};
use super::{b, blocking, parse_id};
use crate::error::{ApiError, Json};
use crate::ServerState;

/// The most tasks one bulk request acts on; ask again for the rest.
pub const BULK_MAX: usize = 10_000;

/// How many tasks one broker step deletes.
const DELETE_CHUNK: usize = 500;

#[derive(Clone, Copy)]
enum Action {
    Retry,
    Revoke,
    Delete,
}

/// Which tasks: all fields given must match.
#[derive(Debug, Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskFilter {
    /// A state, e.g. FAILURE.
    pub state: Option<String>,
    /// Task name.
    pub name: Option<String>,
    /// Queue.
    pub queue: Option<String>,
    /// Worker id.
    pub worker: Option<String>,
    /// These ids only (then the other fields are ignored).
    pub ids: Option<Vec<String>>,
}

/// A bulk action.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BulkRequest {
    /// `retry` (a new task per match, from its dead letter), `revoke`, or `delete` (a waiting
    /// task leaves its queue; a finished one's result and index entry go; a running one is
    /// left alone and not counted as done).
    pub action: String,
    /// Which tasks; an empty filter is refused (name at least one field).
    pub filter: TaskFilter,
}

/// Revokes, retries or deletes the tasks a filter matches (at most 10,000 per request).
#[utoipa::path(post, path = "/api/v1/tasks/bulk", request_body = BulkRequest,
    responses((status = 200, body = BulkResult), (status = 400, body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
pub async fn bulk(
    State(state): State<ServerState>,
    Json(req): Json<BulkRequest>,
) -> Result<Json<BulkResult>, ApiError> {
    let action = match req.action.as_str() {
        "retry" => Action::Retry,
        "revoke" => Action::Revoke,
        "delete" => Action::Delete,
        other => {
            return Err(ApiError::bad_request(format!(
                "action {other:?}: expected retry, revoke or delete"
            )))
        }
    };
    let f = req.filter;
    let ids: Option<Vec<TaskId>> = f
        .ids
        .as_ref()
        .map(|ids| ids.iter().map(|i| parse_id(i)).collect())
        .transpose()?;
    let st = f
        .state
        .as_deref()
        .map(|s| s.to_ascii_uppercase().parse::<TaskState>())
        .transpose()
        .map_err(|e| ApiError::bad_request(format!("filter.state: {e}")))?;
    if ids.is_none() && st.is_none() && f.name.is_none() && f.queue.is_none() && f.worker.is_none()
    {
        return Err(ApiError::bad_request(
            "filter: empty; name at least one of state, name, queue, worker, ids",
        ));
    }
    let query = TaskQuery {
        state: st,
        name: f.name,
        queue: f.queue,
        worker: f.worker,
        limit: lovage_broker::ops::MAX_PAGE,
        ..Default::default()
    };
    let result = blocking(&state, move |app| {
        let targets = match ids {
            Some(ids) => ids,
            None => {
                let mut found = Vec::new();
                let mut q = query;
                loop {
                    let page = b(app.backend().inspect().list_tasks(&q))?;
                    found.extend(page.items.iter().map(|s| s.id));
                    match page.next_cursor {
                        Some(c) if found.len() < BULK_MAX => q.cursor = Some(c),
                        _ => break,
                    }
                }
                found.truncate(BULK_MAX);
                found
            }
        };
        let mut done = Vec::new();
        match action {
            // A chunk per broker step: one transaction or script each, none unbounded.
            Action::Delete => {
                for chunk in targets.chunks(DELETE_CHUNK) {
                    let gone = b(app.backend().queue_ops().delete_tasks(chunk))?;
                    done.extend(gone.iter().map(TaskId::to_string));
                }
            }
            Action::Retry => {
                for id in &targets {
                    if let Some(env) = find_envelope(app, *id)? {
                        done.push(resend(app, &env)?.to_string());
                    }
                }
            }
            Action::Revoke => {
                for id in &targets {
                    if b(app.revoke(*id))? != lovage_broker::Revoked::NotFound {
                        done.push(id.to_string());
                    }
                }
            }
        }
        Ok(BulkResult {
            matched: targets.len() as u64,
            done: done.len() as u64,
            task_ids: done,
        })
    })
    .await?;
    Ok(Json(result))
}
