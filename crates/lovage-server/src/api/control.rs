//! Inspect and control through the workers' mailboxes in the broker, and the task types the
//! live workers report: `GET /workers/{id}/inspect/{what}`, `POST /workers/{id}/control`,
//! `GET /task-types`, `POST /task-types/{name}/rate-limit` and `/time-limit`.
//!
//! The replies are gathered until a timeout (1 s by default, at most 10 s); a worker that did
//! not answer is listed in `missing`, never reported as unknown.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::Extension;
use lovage_broker::ops::{broadcast, ControlRequest, Gathered, LIVE_WITHIN};
use lovage_broker::{App, TaskLimits};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use super::{b, blocking};
use crate::auth::Caller;
use crate::error::{ApiError, Json, Query};
use crate::hub::{Series, BUCKETS, STATE_LABELS};
use crate::ServerState;

/// The command names, shared with the worker that answers them and the CLI.
pub use lovage_broker::ops::{CONTROL_COMMANDS as CONTROL, INSPECT_COMMANDS as INSPECT};

/// Longest a request waits for replies.
const MAX_TIMEOUT_S: f64 = 10.0;

/// What a broadcast gathered.
#[derive(Debug, Serialize, ToSchema)]
pub struct Replies {
    /// Each worker's answer: `{"ok": ...}` or `{"error": "..."}`.
    #[schema(value_type = Object)]
    pub replies: BTreeMap<String, Value>,
    /// Destinations that did not answer within the timeout.
    pub missing: Vec<String>,
}

impl From<Gathered> for Replies {
    fn from(g: Gathered) -> Self {
        Replies {
            replies: g.replies,
            missing: g.missing,
        }
    }
}

/// How long to wait for replies.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct Wait {
    /// Seconds to wait for replies (default 1, at most 10).
    pub timeout: Option<f64>,
}

fn timeout(s: Option<f64>) -> Result<Duration, ApiError> {
    match s {
        None => Ok(Duration::from_secs(1)),
        Some(t) if t.is_finite() && t > 0.0 && t <= MAX_TIMEOUT_S => Ok(Duration::from_secs_f64(t)),
        Some(t) => Err(ApiError::bad_request(format!(
            "timeout: {t} is not a number of seconds in (0, {MAX_TIMEOUT_S}]"
        ))),
    }
}

/// The worker `id` as the broker knows it, or a 404.
fn known_worker(app: &App, id: &str) -> Result<(), ApiError> {
    let ws = b(app.workers(lovage_broker::WORKER_RECORD_TTL))?;
    if ws.iter().any(|w| w.id == id) {
        Ok(())
    } else {
        Err(ApiError::not_found(format!(
            "no worker {id:?} is known to the broker"
        )))
    }
}

async fn ask(
    state: &ServerState,
    to: Vec<String>,
    command: String,
    args: Value,
    by: String,
    wait: Duration,
    audit: bool,
) -> Result<Replies, ApiError> {
    blocking(state, move |app| {
        for id in &to {
            known_worker(app, id)?;
        }
        let request = ControlRequest::new(&command, args, &by);
        b(broadcast(app.backend(), &to, &request, wait, audit)).map(Replies::from)
    })
    .await
}

/// Asks one worker `what` (ping, stats, active, reserved, scheduled, registered, revoked, conf).
#[utoipa::path(get, path = "/api/v1/workers/{id}/inspect/{what}",
    params(("id" = String, Path), ("what" = String, Path), Wait),
    responses((status = 200, body = Replies), (status = 400, body = crate::error::ErrorBody),
        (status = 404, body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
pub async fn inspect(
    State(state): State<ServerState>,
    Extension(caller): Extension<Caller>,
    Path((id, what)): Path<(String, String)>,
    Query(w): Query<Wait>,
) -> Result<Json<Replies>, ApiError> {
    if !INSPECT.contains(&what.as_str()) {
        return Err(ApiError::bad_request(format!(
            "inspect {what:?}: not one of {}",
            INSPECT.join(", ")
        )));
    }
    let wait = timeout(w.timeout)?;
    let r = ask(
        &state,
        vec![id],
        what,
        Value::Null,
        caller.name,
        wait,
        false,
    )
    .await?;
    Ok(Json(r))
}

/// A control command for a worker.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ControlBody {
    /// One of revoke, rate_limit, time_limit, pool_grow, pool_shrink, autoscale, add_consumer,
    /// cancel_consumer, enable_events, disable_events, shutdown.
    pub command: String,
    /// The command's arguments, e.g. `{"queue": "q"}`, `{"task": "t", "rate": "10/s"}`,
    /// `{"task_id": "ID", "terminate": true}`.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub args: Value,
    /// Seconds to wait for the reply (default 1, at most 10).
    #[serde(default)]
    pub timeout: Option<f64>,
}

/// Tells one worker to do something; the command is recorded as a `control-issued` event
/// naming the caller.
#[utoipa::path(post, path = "/api/v1/workers/{id}/control", params(("id" = String, Path)),
    request_body = ControlBody,
    responses((status = 200, body = Replies), (status = 400, body = crate::error::ErrorBody),
        (status = 403, body = crate::error::ErrorBody), (status = 404, body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
pub async fn control(
    State(state): State<ServerState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    Json(c): Json<ControlBody>,
) -> Result<Json<Replies>, ApiError> {
    if !CONTROL.contains(&c.command.as_str()) {
        return Err(ApiError::bad_request(format!(
            "command {:?}: not one of {}",
            c.command,
            CONTROL.join(", ")
        )));
    }
    let wait = timeout(c.timeout)?;
    let r = ask(&state, vec![id], c.command, c.args, caller.name, wait, true).await?;
    Ok(Json(r))
}

/// A task type, as the live workers report it.
#[derive(Debug, Serialize, ToSchema)]
pub struct TaskType {
    /// The registered name.
    pub name: String,
    /// Live workers that can run it.
    pub workers: Vec<String>,
    /// Its limits per worker that has any (workers may differ after a control command).
    #[schema(value_type = Object)]
    pub limits: BTreeMap<String, TaskLimits>,
    /// Task events seen since the server started, by state (`sent`, `received`, `started`,
    /// `succeeded`, `failed`, `retried`, `revoked`, `rejected`) over every queue: the same
    /// bounded aggregates as `lovage_tasks_total` (a name past its cap is counted under
    /// `(other)` there, and has no counts here).
    #[schema(value_type = Object)]
    pub counts: BTreeMap<String, u64>,
    /// Median run time of the finished attempts seen since the server started, in seconds:
    /// an estimate from the buckets of `lovage_task_runtime_seconds` (interpolated within the
    /// bucket it falls in, as Prometheus' `histogram_quantile` does; 60 s at most). `None`
    /// before one finished.
    pub runtime_p50_s: Option<f64>,
    /// The 95th percentile run time, estimated from the same buckets.
    pub runtime_p95_s: Option<f64>,
}

/// Adds each task name's counts and run time percentiles from the hub's series; a name seen
/// in the events that no live worker serves is listed too (with no workers).
fn add_stats(types: &mut Vec<TaskType>, series: &[((String, String), Series)]) {
    let mut by_name: BTreeMap<&str, Series> = BTreeMap::new();
    for ((task, _), s) in series {
        if task.is_empty() || task == "(other)" {
            continue;
        }
        let m = by_name.entry(task.as_str()).or_default();
        for (a, b) in m.states.iter_mut().zip(s.states) {
            *a += b;
        }
        m.runtime.merge(&s.runtime);
    }
    for (name, s) in by_name {
        let i = match types.iter().position(|t| t.name == name) {
            Some(i) => i,
            None => {
                types.push(TaskType::named(name));
                types.len() - 1
            }
        };
        let t = &mut types[i];
        t.counts = STATE_LABELS
            .iter()
            .zip(s.states)
            .filter(|(_, n)| *n > 0)
            .map(|((_, label), n)| ((*label).to_owned(), n))
            .collect();
        t.runtime_p50_s = s.runtime.quantile(&BUCKETS, 0.5);
        t.runtime_p95_s = s.runtime.quantile(&BUCKETS, 0.95);
    }
    types.sort_by(|a, b| a.name.cmp(&b.name));
}

impl TaskType {
    fn named(name: &str) -> TaskType {
        TaskType {
            name: name.to_owned(),
            workers: Vec::new(),
            limits: BTreeMap::new(),
            counts: BTreeMap::new(),
            runtime_p50_s: None,
            runtime_p95_s: None,
        }
    }
}

/// The task names each live worker has registered, by name (empty when no live worker reports
/// its names: older workers do not).
pub fn task_types(app: &App) -> Result<Vec<TaskType>, ApiError> {
    let mut by_name: BTreeMap<String, TaskType> = BTreeMap::new();
    for w in b(app.workers(LIVE_WITHIN))? {
        for name in &w.registered {
            let t = by_name
                .entry(name.clone())
                .or_insert_with(|| TaskType::named(name));
            t.workers.push(w.id.clone());
            if let Some(l) = w.limits.get(name) {
                t.limits.insert(w.id.clone(), l.clone());
            }
        }
    }
    Ok(by_name.into_values().collect())
}

/// Every task type a live worker can run, with the workers and their limits, and per name
/// the event counts and run time percentiles since the server started.
#[utoipa::path(get, path = "/api/v1/task-types",
    responses((status = 200, body = Vec<TaskType>)), security(("bearer" = [])))]
pub async fn list_task_types(
    State(state): State<ServerState>,
) -> Result<Json<Vec<TaskType>>, ApiError> {
    state.hub.ensure_started(&state.app);
    let mut types = blocking(&state, task_types).await?;
    add_stats(&mut types, &state.hub.series());
    Ok(Json(types))
}

/// Refuses a task name no live worker has registered, when live workers report their names;
/// accepts any name when none does (a worker may start later, or be an older one).
pub fn check_task_name(app: &App, name: &str) -> Result<(), ApiError> {
    let types = task_types(app)?;
    if types.is_empty() || types.iter().any(|t| t.name == name) {
        return Ok(());
    }
    let known: Vec<&str> = types.iter().map(|t| t.name.as_str()).take(20).collect();
    Err(ApiError::bad_request(format!(
        "name: no live worker has a task named {name:?} (known: {}{})",
        known.join(", "),
        if types.len() > known.len() {
            ", ..."
        } else {
            ""
        }
    )))
}

/// A new rate limit.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RateLimitBody {
    /// `"10/s"`, `"30/m"`, `"5/h"`; empty or null removes the limit.
    #[serde(default)]
    pub rate: Option<String>,
}

/// New time limits, in seconds.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TimeLimitBody {
    /// Soft limit: the task's cancel token fires.
    #[serde(default)]
    pub soft_s: Option<f64>,
    /// Hard limit: the task is killed (process pool).
    #[serde(default)]
    pub hard_s: Option<f64>,
}

async fn to_task_workers(
    state: &ServerState,
    name: String,
    command: &str,
    args: Value,
    by: String,
) -> Result<Replies, ApiError> {
    let command = command.to_owned();
    blocking(state, move |app| {
        let to: Vec<String> = task_types(app)?
            .into_iter()
            .find(|t| t.name == name)
            .map(|t| t.workers)
            .ok_or_else(|| {
                ApiError::not_found(format!("no live worker has a task named {name:?}"))
            })?;
        let request = ControlRequest::new(&command, args, &by);
        b(broadcast(
            app.backend(),
            &to,
            &request,
            Duration::from_secs(2),
            true,
        ))
        .map(Replies::from)
    })
    .await
}

/// Sets a task type's rate limit on every live worker that runs it.
#[utoipa::path(post, path = "/api/v1/task-types/{name}/rate-limit", params(("name" = String, Path)),
    request_body = RateLimitBody,
    responses((status = 200, body = Replies), (status = 404, body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
pub async fn rate_limit(
    State(state): State<ServerState>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    Json(r): Json<RateLimitBody>,
) -> Result<Json<Replies>, ApiError> {
    if let Some(rate) = r.rate.as_deref().filter(|r| !r.is_empty()) {
        lovage_core::parse_rate(rate)
            .map_err(|e| ApiError::bad_request(format!("rate {rate:?}: {e}")))?;
    }
    let args = serde_json::json!({"task": name, "rate": r.rate.unwrap_or_default()});
    Ok(Json(
        to_task_workers(&state, name, "rate_limit", args, caller.name).await?,
    ))
}

/// Sets a task type's time limits on every live worker that runs it.
#[utoipa::path(post, path = "/api/v1/task-types/{name}/time-limit", params(("name" = String, Path)),
    request_body = TimeLimitBody,
    responses((status = 200, body = Replies), (status = 404, body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
pub async fn time_limit(
    State(state): State<ServerState>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    Json(t): Json<TimeLimitBody>,
) -> Result<Json<Replies>, ApiError> {
    let args = serde_json::json!({"task": name, "soft_s": t.soft_s, "hard_s": t.hard_s});
    Ok(Json(
        to_task_workers(&state, name, "time_limit", args, caller.name).await?,
    ))
}
