//! Tasks: send one, read one (state, result or error, workflow), wait for its result, revoke
//! it, retry it as a new task.

use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use lovage_broker::ops::TaskInfo;
use lovage_broker::{App, Envelope, ResultRecord, Revoked, Timestamp, DEAD_LETTERS_KEPT};
use lovage_core::{Codec, RetryPolicy, Signature, TaskError, TaskId, TaskState};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use super::{b, blocking, parse_id, OptionalJson};
use crate::error::{ApiError, Json, Query};
use crate::ServerState;

/// A task to send.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubmitTask {
    /// Registered task name, e.g. `lovage.shell`.
    pub name: String,
    /// Positional arguments (a JSON array).
    #[serde(default)]
    pub args: Option<Vec<Value>>,
    /// Arguments by name (a JSON object); not together with `args`.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub kwargs: Option<serde_json::Map<String, Value>>,
    /// Queue (default: the task's own, else `default`).
    #[serde(default)]
    pub queue: Option<String>,
    /// 0-9, higher first.
    #[serde(default)]
    pub priority: Option<u8>,
    /// Run no sooner than this many seconds from now.
    #[serde(default)]
    pub countdown: Option<f64>,
    /// Run no sooner than this time (RFC 3339 UTC).
    #[serde(default)]
    pub eta: Option<String>,
    /// Drop the task if it has not started this many seconds after sending.
    #[serde(default)]
    pub expires: Option<f64>,
    /// Retry up to this many times on failure.
    #[serde(default)]
    pub retries: Option<u32>,
}

/// The id of a task just sent.
#[derive(Debug, Serialize, ToSchema)]
pub struct Submitted {
    /// The new task's id.
    pub task_id: String,
    /// For a retry: the task it repeats.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_of: Option<String>,
}

/// A task error: its kind, message and causes (outermost first).
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorView {
    /// One of lovage's kinds (`Timeout`, `Revoked`, ...) or the task's own error type.
    pub kind: String,
    /// The message.
    pub message: String,
    /// Underlying causes, outermost first.
    pub causes: Vec<String>,
}

impl From<&TaskError> for ErrorView {
    fn from(e: &TaskError) -> Self {
        ErrorView {
            kind: e.kind.clone(),
            message: e.message.clone(),
            causes: e.causes.clone(),
        }
    }
}

/// One task as the result store knows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct TaskDetail {
    /// The id.
    pub id: String,
    /// Registered name (unknown while nothing is recorded).
    pub name: Option<String>,
    /// PENDING, RECEIVED, STARTED, RETRY, SUCCESS, FAILURE or REVOKED.
    pub state: String,
    /// True once the state is final.
    pub finished: bool,
    /// On SUCCESS, the value.
    #[schema(value_type = Option<Object>)]
    pub result: Option<Value>,
    /// On FAILURE, RETRY or REVOKED, why.
    pub error: Option<ErrorView>,
    /// Attempts so far.
    pub attempts: u32,
    /// The worker that ran it last.
    pub worker: Option<String>,
    /// When its last attempt started (RFC 3339).
    pub started: Option<String>,
    /// When it reached this state (RFC 3339).
    pub updated: Option<String>,
    /// From start to this state, for a finished task.
    pub runtime_ms: Option<i64>,
    /// For a workflow's result id: the ids of its tasks.
    pub workflow: Option<Vec<String>>,
    /// Its queue, while the broker knows it.
    pub queue: Option<String>,
    /// Its arguments (positional as an array, by name as an object), while the broker or its
    /// dead letter holds them.
    #[schema(value_type = Option<Object>)]
    pub args: Option<Value>,
    /// When it was sent (RFC 3339).
    pub sent: Option<String>,
    /// Whether a dead letter is kept for it (then it can be retried).
    pub dead_letter: bool,
}

impl TaskDetail {
    fn of(id: TaskId, rec: Option<&ResultRecord>) -> TaskDetail {
        let Some(r) = rec else {
            return TaskDetail {
                id: id.to_string(),
                name: None,
                state: TaskState::Pending.to_string(),
                finished: false,
                result: None,
                error: None,
                attempts: 0,
                worker: None,
                started: None,
                updated: None,
                runtime_ms: None,
                workflow: None,
                queue: None,
                args: None,
                sent: None,
                dead_letter: false,
            };
        };
        let result = match r.outcome::<Value>() {
            Some(Ok(v)) => Some(v),
            _ => None,
        };
        TaskDetail {
            id: id.to_string(),
            name: Some(r.task.clone()),
            state: r.state.to_string(),
            finished: r.state.is_final(),
            result,
            error: r.error.as_ref().map(ErrorView::from),
            attempts: r.attempts,
            worker: r.worker.clone(),
            started: r.started.map(|t| t.to_string()),
            updated: Some(r.updated.to_string()),
            runtime_ms: match (r.started, r.state.is_final()) {
                (Some(s), true) => Some(r.updated.as_millis() - s.as_millis()),
                _ => None,
            },
            workflow: None,
            queue: None,
            args: None,
            sent: None,
            dead_letter: false,
        }
    }

    /// Adds what the broker's index knows beyond the record: queue, arguments, sent time.
    fn add_info(&mut self, info: &TaskInfo) {
        let s = &info.summary;
        if self.name.is_none() && !s.name.is_empty() {
            self.name = Some(s.name.clone());
        }
        if info.record.is_none() {
            // No record yet: the index tells PENDING from RECEIVED.
            self.state = s.state.to_string();
        }
        self.queue = s.queue.clone();
        self.sent = s.sent.map(|t| t.to_string());
        self.dead_letter = info.dead_letter.is_some();
        let env = info
            .envelope
            .as_ref()
            .or(info.dead_letter.as_ref().map(|d| &d.envelope));
        if let Some(env) = env {
            self.queue = Some(env.queue.clone());
            self.args = env.codec.decode::<Value>(&env.args, "task arguments").ok();
        }
    }
}

fn seconds(what: &str, s: Option<f64>) -> Result<Option<Duration>, ApiError> {
    s.map(|v| {
        Duration::try_from_secs_f64(v).map_err(|_| {
            ApiError::bad_request(format!("{what}: {v} is not a number of seconds ≥ 0"))
        })
    })
    .transpose()
}

/// Sends a task; answers 202 with its id.
#[utoipa::path(post, path = "/api/v1/tasks", request_body = SubmitTask, responses(
    (status = 202, body = Submitted),
    (status = 400, body = crate::error::ErrorBody),
    (status = 401, body = crate::error::ErrorBody),
    (status = 403, body = crate::error::ErrorBody)), security(("bearer" = [])))]
pub async fn submit(
    State(state): State<ServerState>,
    Json(t): Json<SubmitTask>,
) -> Result<(StatusCode, Json<Submitted>), ApiError> {
    let name = t.name.trim();
    if name.is_empty() {
        return Err(ApiError::bad_request(
            "name: empty; give a registered task name",
        ));
    }
    if let Some(p) = t.priority.filter(|p| *p > 9) {
        return Err(ApiError::bad_request(format!("priority: {p} is not 0-9")));
    }
    if t.countdown.is_some() && t.eta.is_some() {
        return Err(ApiError::bad_request("give countdown or eta, not both"));
    }
    let args = match (t.args, t.kwargs) {
        (Some(_), Some(_)) => return Err(ApiError::bad_request("give args or kwargs, not both")),
        (Some(a), None) => Value::Array(a),
        (None, Some(k)) => Value::Object(k),
        (None, None) => Value::Array(Vec::new()),
    };
    let eta = t
        .eta
        .as_deref()
        .map(Timestamp::parse_rfc3339)
        .transpose()
        .map_err(|e| ApiError::bad_request(format!("eta: {e}")))?;
    let mut sig = Signature::new(name, &args, Codec::Json)
        .map_err(|e| ApiError::bad_request(format!("args: {e}")))?;
    let o = &mut sig.options;
    o.queue = t.queue.filter(|q| !q.is_empty());
    o.priority = t.priority;
    o.countdown = seconds("countdown", t.countdown)?;
    o.eta = eta.map(Timestamp::as_millis);
    o.expires = seconds("expires", t.expires)?;
    o.retry = t.retries.map(RetryPolicy::retries);
    let id = blocking(&state, move |app| {
        super::check_task_name(app, &sig.task)?;
        let env = app.envelope(sig);
        b(app.backend().broker().enqueue(std::slice::from_ref(&env)))?;
        // The task-sent event, after the send (an event must never tell of a task the broker
        // does not hold); a failure here loses only the event.
        let mut ev = lovage_broker::ops::Event::new(lovage_broker::ops::EventKind::TaskSent);
        ev.task_id = Some(env.id);
        ev.name = Some(env.task.clone());
        ev.queue = Some(env.queue.clone());
        ev.state = Some(TaskState::Pending);
        if let Err(e) = app.backend().events().publish(&[ev]) {
            tracing::warn!(task_id = %env.id, error = %e, "could not publish task-sent");
        }
        Ok(env.id)
    })
    .await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(Submitted {
            task_id: id.to_string(),
            retry_of: None,
        }),
    ))
}

/// A task's state, result or error, and for a workflow its tasks. An id nothing is known
/// about is PENDING (as in Celery: the broker may not have delivered it yet).
#[utoipa::path(get, path = "/api/v1/tasks/{id}", params(("id" = String, Path)), responses(
    (status = 200, body = TaskDetail),
    (status = 400, body = crate::error::ErrorBody)), security(("bearer" = [])))]
pub async fn get_task(
    State(state): State<ServerState>,
    Path(id): Path<String>,
) -> Result<Json<TaskDetail>, ApiError> {
    let id = parse_id(&id)?;
    let detail = blocking(&state, move |app| {
        let info = match app.backend().inspect().task_info(id) {
            Ok(info) => info,
            // A backend without the task index yet: the result store alone.
            Err(lovage_broker::BrokerError::Unsupported { .. }) => None,
            Err(e) => return Err(e.into()),
        };
        let rec = match &info {
            Some(i) => i.record.clone(),
            None => b(app.record(id))?,
        };
        let mut d = TaskDetail::of(id, rec.as_ref());
        if let Some(info) = &info {
            d.add_info(info);
        }
        // A workflow whose stored description does not decode is shown as a plain task.
        if let Ok(Some(canvas)) = lovage_flow::load(app, id) {
            d.workflow = Some(canvas.task_ids().iter().map(|t| t.to_string()).collect());
        }
        Ok(d)
    })
    .await?;
    Ok(Json(detail))
}

/// `?wait=`: how long to wait for the result.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct WaitQuery {
    /// e.g. `10s`, `500ms`, `2m`; at most 60 s. Without it, answers at once.
    pub wait: Option<String>,
}

/// The longest `?wait=` honoured: a client wanting longer asks again.
const MAX_WAIT: Duration = Duration::from_secs(60);

/// The task's result, waiting up to `?wait=` for it to finish (on the result store's own
/// notification, not by polling here).
#[utoipa::path(get, path = "/api/v1/tasks/{id}/result",
    params(("id" = String, Path), ("wait" = Option<String>, Query, description = "e.g. 10s, at most 60s")),
    responses((status = 200, body = TaskDetail), (status = 400, body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
pub async fn get_result(
    State(state): State<ServerState>,
    Path(id): Path<String>,
    Query(q): Query<WaitQuery>,
) -> Result<Json<TaskDetail>, ApiError> {
    let id = parse_id(&id)?;
    let wait = q
        .wait
        .as_deref()
        .map(lovage_core::parse_duration)
        .transpose()
        .map_err(|e| ApiError::bad_request(format!("wait: {e}")))?
        .map(|w| w.min(MAX_WAIT));
    let rec = blocking(&state, move |app| match wait {
        Some(w) if !w.is_zero() => b(app.wait_record(id, w)),
        _ => b(app.record(id)),
    })
    .await?;
    Ok(Json(TaskDetail::of(id, rec.as_ref())))
}

/// A revoke request.
#[derive(Debug, Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RevokeRequest {
    /// Also stop it if it runs (lovage's workers always cancel a running revoked task;
    /// accepted for Celery's API).
    #[serde(default)]
    #[allow(dead_code)] // read by serde only: the behaviour does not depend on it
    pub terminate: bool,
}

/// What a revoke found.
#[derive(Debug, Serialize, ToSchema)]
pub struct RevokeResult {
    /// The task.
    pub task_id: String,
    /// `pending` (removed, will not run), `running` (its worker cancels it) or `not_found`
    /// (finished or unknown; later deliveries are refused).
    pub found: String,
    /// Its state after the revoke.
    pub state: String,
}

/// Revokes a task: a waiting one is REVOKED at once, a running one is cancelled by its worker.
#[utoipa::path(post, path = "/api/v1/tasks/{id}/revoke", params(("id" = String, Path)),
    request_body(content = Option<RevokeRequest>), responses(
    (status = 200, body = RevokeResult),
    (status = 400, body = crate::error::ErrorBody),
    (status = 403, body = crate::error::ErrorBody)), security(("bearer" = [])))]
pub async fn revoke(
    State(state): State<ServerState>,
    Path(id): Path<String>,
    OptionalJson(_req): OptionalJson<RevokeRequest>,
) -> Result<Json<RevokeResult>, ApiError> {
    let id = parse_id(&id)?;
    let (found, rec) = blocking(&state, move |app| {
        let found = b(app.revoke(id))?;
        let mut rec = b(app.record(id))?;
        if found == Revoked::Running && !rec.as_ref().is_some_and(|r| r.state.is_final()) {
            // Its worker learns of the revoke at its next lease renewal and drops the result;
            // until then the task would read as running. Record REVOKED now (Flower's #1319).
            let r = revoked_record(id, rec.as_ref());
            b(app.backend().results().store(std::slice::from_ref(&r)))?;
            rec = b(app.record(id))?;
        }
        Ok((found, rec))
    })
    .await?;
    let found = match found {
        Revoked::Pending => "pending",
        Revoked::Running => "running",
        Revoked::NotFound => "not_found",
    };
    // A running task is REVOKED for the client from now on, whatever its worker stores next.
    let state_now = match (found, rec.as_ref().map(|r| r.state)) {
        ("running", Some(s)) if !s.is_final() => TaskState::Revoked,
        (_, Some(s)) => s,
        (_, None) => TaskState::Revoked,
    };
    Ok(Json(RevokeResult {
        task_id: id.to_string(),
        found: found.to_owned(),
        state: state_now.to_string(),
    }))
}

/// The REVOKED record for a running task: same attempt as its last record, so the worker's
/// own REVOKED record for that attempt may replace it.
fn revoked_record(id: TaskId, last: Option<&ResultRecord>) -> ResultRecord {
    ResultRecord {
        id,
        task: last.map(|r| r.task.clone()).unwrap_or_default(),
        state: TaskState::Revoked,
        value: None,
        codec: Codec::default(),
        error: Some(TaskError::new(
            lovage_core::kinds::REVOKED,
            "revoked while it ran",
        )),
        attempts: last.map_or(1, |r| r.attempts.max(1)),
        worker: last.and_then(|r| r.worker.clone()),
        started: last.and_then(|r| r.started),
        updated: Timestamp::now(),
        expires: None,
    }
}

/// The envelope a task was last sent with, while the broker still keeps it (its dead letter).
pub fn find_envelope(app: &App, id: TaskId) -> Result<Option<Envelope>, ApiError> {
    match app.backend().inspect().task_info(id) {
        Ok(Some(TaskInfo {
            dead_letter: Some(d),
            ..
        })) => return Ok(Some(d.envelope)),
        // The index knows tasks by their message or record; a letter buried without either
        // is still found among the kept letters below.
        Ok(_) => {}
        Err(lovage_broker::BrokerError::Unsupported { .. }) => {}
        Err(e) => return Err(e.into()),
    }
    let letters = b(app.dead_letters(DEAD_LETTERS_KEPT))?;
    Ok(letters
        .into_iter()
        .find(|d| d.envelope.id == id)
        .map(|d| d.envelope))
}

/// A new task with the arguments and options of `old`, sent now.
pub fn resend(app: &App, old: &Envelope) -> Result<TaskId, ApiError> {
    let mut env = old.clone();
    env.id = TaskId::new();
    env.attempts = 0;
    env.eta = None;
    env.created = Timestamp::now();
    b(app.backend().broker().enqueue(std::slice::from_ref(&env)))?;
    Ok(env.id)
}

/// Sends a new task with the same name, arguments and options as a failed one; answers 202
/// with the new id and `retry_of`. 409 when the broker no longer holds its arguments.
#[utoipa::path(post, path = "/api/v1/tasks/{id}/retry", params(("id" = String, Path)), responses(
    (status = 202, body = Submitted),
    (status = 409, body = crate::error::ErrorBody)), security(("bearer" = [])))]
pub async fn retry(
    State(state): State<ServerState>,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<Submitted>), ApiError> {
    let id = parse_id(&id)?;
    let new = blocking(&state, move |app| {
        let Some(env) = find_envelope(app, id)? else {
            return Err(ApiError::conflict(format!(
                "task {id}: the broker holds no dead letter for it, so its arguments are \
                 unknown; only a task that failed for good (or was dead-lettered) can be retried"
            )));
        };
        resend(app, &env)
    })
    .await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(Submitted {
            task_id: new.to_string(),
            retry_of: Some(id.to_string()),
        }),
    ))
}
