//! Queues (depths, purge) and dead letters (listed, grouped, retried).

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use lovage_broker::{App, DeadLetter, QueueStats, DEAD_LETTERS_KEPT};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use super::tasks::resend;
use super::{b, blocking, preview};
use crate::error::{ApiError, Json, Query};
use crate::ServerState;

/// One queue's counts.
#[derive(Debug, Serialize, ToSchema)]
pub struct QueueView {
    /// Its name.
    pub name: String,
    /// Ready to run now.
    pub ready: u64,
    /// Waiting for an ETA or a retry delay.
    pub scheduled: u64,
    /// Held by workers.
    pub reserved: u64,
    /// Dead letters of this queue (among those kept).
    pub dead: u64,
    /// Whether delivery is paused.
    pub paused: bool,
    /// Age of the oldest ready task, when the broker tells.
    pub oldest_ready_age_s: Option<f64>,
}

/// Every queue that holds a task, a dead letter or is paused, from the broker's own queue
/// details (or, on a backend without them yet, its counts and dead letters).
pub fn queue_views(app: &App) -> Result<Vec<QueueView>, ApiError> {
    match app.backend().queue_ops().queues() {
        Ok(qs) => {
            return Ok(qs
                .into_iter()
                .map(|q| QueueView {
                    name: q.name,
                    ready: q.ready,
                    scheduled: q.scheduled,
                    reserved: q.reserved,
                    dead: q.dead,
                    paused: q.paused,
                    oldest_ready_age_s: Some(q.oldest_ready_age_s),
                })
                .collect())
        }
        Err(lovage_broker::BrokerError::Unsupported { .. }) => {}
        Err(e) => return Err(e.into()),
    }
    let stats = b(app.queues())?;
    let dead = b(app.dead_letters(DEAD_LETTERS_KEPT))?;
    let mut by_queue: BTreeMap<String, QueueView> = BTreeMap::new();
    for QueueStats {
        queue,
        ready,
        scheduled,
        reserved,
    } in stats
    {
        by_queue.insert(
            queue.clone(),
            QueueView {
                name: queue,
                ready,
                scheduled,
                reserved,
                dead: 0,
                paused: false,
                oldest_ready_age_s: None,
            },
        );
    }
    for d in &dead {
        let q = &d.envelope.queue;
        by_queue
            .entry(q.clone())
            .or_insert_with(|| QueueView {
                name: q.clone(),
                ready: 0,
                scheduled: 0,
                reserved: 0,
                dead: 0,
                paused: false,
                oldest_ready_age_s: None,
            })
            .dead += 1;
    }
    Ok(by_queue.into_values().collect())
}

/// Queues with their depths.
#[utoipa::path(get, path = "/api/v1/queues", responses((status = 200, body = Vec<QueueView>)),
    security(("bearer" = [])))]
pub async fn list(State(state): State<ServerState>) -> Result<Json<Vec<QueueView>>, ApiError> {
    Ok(Json(blocking(&state, queue_views).await?))
}

/// How many tasks a purge removed.
#[derive(Debug, Serialize, ToSchema)]
pub struct Purged {
    /// The queue.
    pub queue: String,
    /// Waiting tasks removed (running ones finish).
    pub purged: u64,
}

/// Removes every waiting task of a queue.
#[utoipa::path(post, path = "/api/v1/queues/{queue}/purge", params(("queue" = String, Path)),
    responses((status = 200, body = Purged), (status = 403, body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
pub async fn purge(
    State(state): State<ServerState>,
    Path(queue): Path<String>,
) -> Result<Json<Purged>, ApiError> {
    let q = queue.clone();
    let purged = blocking(&state, move |app| b(app.purge(&q))).await?;
    Ok(Json(Purged { queue, purged }))
}

/// A queue paused or resumed.
#[derive(Debug, Serialize, ToSchema)]
pub struct Paused {
    /// The queue.
    pub queue: String,
    /// Whether delivery from it is paused now.
    pub paused: bool,
}

/// Stops delivery from a queue (tasks can still be sent to it; running ones finish).
#[utoipa::path(post, path = "/api/v1/queues/{queue}/pause", params(("queue" = String, Path)),
    responses((status = 200, body = Paused), (status = 403, body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
pub async fn pause(
    State(state): State<ServerState>,
    Path(queue): Path<String>,
) -> Result<Json<Paused>, ApiError> {
    let q = queue.clone();
    blocking(&state, move |app| b(app.backend().queue_ops().pause(&q))).await?;
    Ok(Json(Paused {
        queue,
        paused: true,
    }))
}

/// Delivers from a paused queue again.
#[utoipa::path(post, path = "/api/v1/queues/{queue}/resume", params(("queue" = String, Path)),
    responses((status = 200, body = Paused), (status = 403, body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
pub async fn resume(
    State(state): State<ServerState>,
    Path(queue): Path<String>,
) -> Result<Json<Paused>, ApiError> {
    let q = queue.clone();
    blocking(&state, move |app| b(app.backend().queue_ops().resume(&q))).await?;
    Ok(Json(Paused {
        queue,
        paused: false,
    }))
}

/// `?limit=` for a peek.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct PeekQuery {
    /// How many (default 20, at most 200).
    pub limit: Option<usize>,
}

/// A waiting task, as a peek shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct Peeked {
    /// The id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// 0-9.
    pub priority: u8,
    /// Not before (RFC 3339), for a scheduled one.
    pub eta: Option<String>,
    /// Attempts so far.
    pub attempts: u32,
    /// When it was sent.
    pub created: String,
    /// The start of its arguments.
    pub args_preview: String,
}

/// The next waiting tasks of a queue, in delivery order, without taking them.
#[utoipa::path(get, path = "/api/v1/queues/{queue}/peek",
    params(("queue" = String, Path), ("limit" = Option<usize>, Query)),
    responses((status = 200, body = Vec<Peeked>), (status = 400, body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
pub async fn peek(
    State(state): State<ServerState>,
    Path(queue): Path<String>,
    Query(q): Query<PeekQuery>,
) -> Result<Json<Vec<Peeked>>, ApiError> {
    let limit = q.limit.unwrap_or(20).min(200);
    let envs = blocking(&state, move |app| {
        b(app.backend().queue_ops().peek(&queue, limit))
    })
    .await?;
    Ok(Json(
        envs.iter()
            .map(|e| Peeked {
                id: e.id.to_string(),
                name: e.task.clone(),
                priority: e.priority,
                eta: e.eta.map(|t| t.to_string()),
                attempts: e.attempts,
                created: e.created.to_string(),
                args_preview: e
                    .codec
                    .decode::<Value>(&e.args, "task arguments")
                    .map(|v| preview(&v, 120))
                    .unwrap_or_else(|_| format!("<{} bytes>", e.args.len())),
            })
            .collect(),
    ))
}

/// `GET /dead` parameters.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct DeadQuery {
    /// `task` or `error`: groups instead of items.
    pub group_by: Option<String>,
    /// Items to return (default 100, at most 1000).
    pub limit: Option<usize>,
    /// Only this task name.
    pub task: Option<String>,
}

/// One dead letter.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeadItem {
    /// The task's id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Its queue.
    pub queue: String,
    /// Why it failed.
    pub error: super::tasks::ErrorView,
    /// When it was dead-lettered (RFC 3339).
    pub at: String,
    /// Attempts it had.
    pub attempts: u32,
    /// Its arguments, shortened.
    pub args_preview: String,
}

/// Dead letters sharing a task name or an error kind.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeadGroup {
    /// The task name or error kind.
    pub key: String,
    /// How many.
    pub count: u64,
    /// The newest one's time (RFC 3339).
    pub latest: String,
    /// The newest one's message.
    pub example: String,
}

/// Dead letters, newest first, or grouped.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeadList {
    /// Newest first (empty when grouped).
    pub items: Vec<DeadItem>,
    /// With `group_by`, the groups, largest first.
    pub groups: Vec<DeadGroup>,
    /// Dead letters kept in all.
    pub total: u64,
}

fn item(d: &DeadLetter) -> DeadItem {
    let args = d
        .envelope
        .codec
        .decode::<Value>(&d.envelope.args, "task arguments")
        .map(|v| preview(&v, 120))
        .unwrap_or_else(|_| format!("<{} bytes>", d.envelope.args.len()));
    DeadItem {
        id: d.envelope.id.to_string(),
        name: d.envelope.task.clone(),
        queue: d.envelope.queue.clone(),
        error: (&d.error).into(),
        at: d.at.to_string(),
        attempts: d.envelope.attempts,
        args_preview: args,
    }
}

/// Dead letters: `?group_by=task|error`, `?task=`, `?limit=`.
#[utoipa::path(get, path = "/api/v1/dead",
    params(("group_by" = Option<String>, Query), ("limit" = Option<usize>, Query), ("task" = Option<String>, Query)),
    responses((status = 200, body = DeadList), (status = 400, body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
pub async fn dead(
    State(state): State<ServerState>,
    Query(q): Query<DeadQuery>,
) -> Result<Json<DeadList>, ApiError> {
    let by: Option<fn(&DeadLetter) -> String> = match q.group_by.as_deref() {
        None | Some("") => None,
        Some("task") => Some(|d| d.envelope.task.clone()),
        Some("error") => Some(|d| d.error.kind.clone()),
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "group_by={other:?}: expected task or error"
            )))
        }
    };
    let limit = q.limit.unwrap_or(100).min(1000);
    let letters = blocking(&state, |app| b(app.dead_letters(DEAD_LETTERS_KEPT))).await?;
    let letters: Vec<DeadLetter> = letters
        .into_iter()
        .filter(|d| q.task.as_ref().is_none_or(|t| &d.envelope.task == t))
        .collect();
    let total = letters.len() as u64;
    let Some(key) = by else {
        return Ok(Json(DeadList {
            items: letters.iter().take(limit).map(item).collect(),
            groups: Vec::new(),
            total,
        }));
    };
    let mut groups: BTreeMap<String, DeadGroup> = BTreeMap::new();
    // Newest first, so the first of each group is its latest.
    for d in &letters {
        groups
            .entry(key(d))
            .or_insert_with(|| DeadGroup {
                key: key(d),
                count: 0,
                latest: d.at.to_string(),
                example: d.error.message.chars().take(200).collect(),
            })
            .count += 1;
    }
    let mut groups: Vec<DeadGroup> = groups.into_values().collect();
    groups.sort_by(|a, b| b.count.cmp(&a.count).then(a.key.cmp(&b.key)));
    Ok(Json(DeadList {
        items: Vec::new(),
        groups,
        total,
    }))
}

/// Which dead letters a bulk action takes: all fields given must match.
#[derive(Debug, Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeadFilter {
    /// Task name.
    pub task: Option<String>,
    /// Error kind.
    pub error: Option<String>,
    /// Task ids.
    pub ids: Option<Vec<String>>,
}

/// A bulk action on dead letters.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeadAction {
    /// Which ones; an empty filter takes them all.
    #[serde(default)]
    pub filter: DeadFilter,
}

/// What a bulk action did.
#[derive(Debug, Serialize, ToSchema)]
pub struct BulkResult {
    /// How many matched the filter.
    pub matched: u64,
    /// How many it acted on.
    pub done: u64,
    /// The ids acted on: the new tasks' for a retry, the revoked or deleted ones' otherwise.
    pub task_ids: Vec<String>,
}

/// The filter's ids, parsed (a malformed one is a 400 naming it).
fn filter_ids(f: &DeadFilter) -> Result<Option<Vec<lovage_core::TaskId>>, ApiError> {
    f.ids
        .as_ref()
        .map(|ids| ids.iter().map(|i| super::parse_id(i)).collect())
        .transpose()
}

/// The letters `f` matches, newest first.
fn matching<'a>(
    letters: &'a [DeadLetter],
    f: &DeadFilter,
    ids: Option<&[lovage_core::TaskId]>,
) -> Vec<&'a DeadLetter> {
    letters
        .iter()
        .filter(|d| f.task.as_ref().is_none_or(|t| &d.envelope.task == t))
        .filter(|d| f.error.as_ref().is_none_or(|k| &d.error.kind == k))
        .filter(|d| ids.is_none_or(|ids| ids.contains(&d.envelope.id)))
        .collect()
}

/// Runs `act` on a blocking thread with the dead letters `a`'s filter matches, newest first.
async fn on_matched_letters<T, F>(state: &ServerState, a: DeadAction, act: F) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: FnOnce(&App, &[&DeadLetter]) -> Result<T, ApiError> + Send + 'static,
{
    let f = a.filter;
    let ids = filter_ids(&f)?;
    blocking(state, move |app| {
        let letters = b(app.dead_letters(DEAD_LETTERS_KEPT))?;
        act(app, &matching(&letters, &f, ids.as_deref()))
    })
    .await
}

/// Drops the matching dead letters (every letter kept for a matched task); the tasks' result
/// records stay. `done` counts the letters dropped, `task_ids` names their tasks.
#[utoipa::path(post, path = "/api/v1/dead/discard", request_body = DeadAction,
    responses((status = 200, body = BulkResult), (status = 400, body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
pub async fn dead_discard(
    State(state): State<ServerState>,
    Json(a): Json<DeadAction>,
) -> Result<Json<BulkResult>, ApiError> {
    let result = on_matched_letters(&state, a, |app, matched| {
        let mut task_ids: Vec<lovage_core::TaskId> =
            matched.iter().map(|d| d.envelope.id).collect();
        task_ids.sort_unstable();
        task_ids.dedup();
        let done = b(app.backend().queue_ops().discard_dead(&task_ids))?;
        Ok(BulkResult {
            matched: matched.len() as u64,
            done,
            task_ids: task_ids.iter().map(|id| id.to_string()).collect(),
        })
    })
    .await?;
    Ok(Json(result))
}

/// Sends each matching dead letter again as a new task.
#[utoipa::path(post, path = "/api/v1/dead/retry", request_body = DeadAction,
    responses((status = 200, body = BulkResult), (status = 400, body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
pub async fn dead_retry(
    State(state): State<ServerState>,
    Json(a): Json<DeadAction>,
) -> Result<Json<BulkResult>, ApiError> {
    let result = on_matched_letters(&state, a, |app, matched| {
        let mut task_ids = Vec::with_capacity(matched.len());
        for d in matched {
            task_ids.push(resend(app, &d.envelope)?.to_string());
        }
        Ok(BulkResult {
            matched: matched.len() as u64,
            done: task_ids.len() as u64,
            task_ids,
        })
    })
    .await?;
    Ok(Json(result))
}
