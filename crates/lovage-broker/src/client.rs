//! The client side: send task calls to a queue and get their results back.

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use lovage_core::{
    kinds, Dispatch, Registry, Signature, TaskError, TaskId, TaskState, TypedSignature,
};
use serde::de::DeserializeOwned;

use crate::{
    connect, Backend, BrokerError, DeadLetter, Envelope, QueueStats, Result, ResultRecord, Revoked,
    WorkerInfo, DEFAULT_URL,
};

/// A connection to a broker and result store, for sending tasks (Celery's `app`).
///
/// ```
/// # #[lovage_macros::task(crate = lovage_core)] fn add(a: i64, b: i64) -> i64 { a + b }
/// let app = lovage_broker::App::connect("memory://doc-example").unwrap();
/// let res = app.send(add::s(2, 3)).unwrap();          // or add::delay(&app, 2, 3)
/// assert_eq!(res.state().unwrap(), lovage_core::TaskState::Pending);
/// ```
#[derive(Clone, Debug)]
pub struct App {
    backend: Backend,
    /// Publish a `task-sent` event for each task sent (Celery's `task_send_sent_event`).
    sent_events: bool,
}

/// The environment variable that turns `task-sent` events on for [`App::from_env`] (and the
/// CLI's `lovage submit`): `1`, `true`, `yes` or `on`.
pub const SENT_EVENTS_ENV: &str = "LOVAGE_SEND_SENT_EVENT";

impl App {
    /// Connects to the backend at `url` (see [`connect`]).
    pub fn connect(url: &str) -> Result<App> {
        Ok(App::with_backend(connect(url)?))
    }

    /// Connects to `$LOVAGE_BROKER`, or to `sqlite://lovage.db` when it is not set; publishes
    /// `task-sent` events when `$LOVAGE_SEND_SENT_EVENT` is on ([`SENT_EVENTS_ENV`]).
    pub fn from_env() -> Result<App> {
        let url = std::env::var("LOVAGE_BROKER").unwrap_or_else(|_| DEFAULT_URL.to_owned());
        Ok(Self::connect(&url)?.sent_events(sent_events_from_env()?))
    }

    /// Wraps an opened backend.
    pub fn with_backend(backend: Backend) -> App {
        App {
            backend,
            sent_events: false,
        }
    }

    /// With `on`, every send also publishes a `task-sent` event per task to the broker's event
    /// stream (Celery's `task_send_sent_event`), one write per send or batch, after the tasks
    /// are enqueued. Off by default: a send then costs nothing more.
    pub fn sent_events(mut self, on: bool) -> App {
        self.sent_events = on;
        self
    }

    /// Whether sends publish `task-sent` events.
    pub fn sends_sent_events(&self) -> bool {
        self.sent_events
    }

    /// Publishes `task-sent` for `envs` (just enqueued) in one write when
    /// [`sent_events`](App::sent_events) is on, else does nothing; a broker that fails here
    /// loses only the events (logged): the tasks are sent, so the send succeeded. Workflows
    /// (lovage-flow) call it for the steps they send.
    pub fn publish_sent(&self, envs: &[Envelope]) {
        if !self.sent_events || envs.is_empty() {
            return;
        }
        let events: Vec<crate::ops::Event> = envs.iter().map(crate::ops::Event::sent).collect();
        if let Err(e) = self.backend.events().publish(&events) {
            tracing::warn!(error = %e, count = events.len(), "could not publish task-sent events");
        }
    }

    /// The broker and result store.
    pub fn backend(&self) -> &Backend {
        &self.backend
    }

    /// The envelope for `sig`: the call's options over the task's registered ones (when the
    /// task is registered in this process).
    pub fn envelope(&self, mut sig: Signature) -> Envelope {
        if let Ok(entry) = Registry::global().get(&sig.task) {
            sig.options = sig.options.merged_over(&(entry.options)());
        }
        Envelope::from_signature(sig)
    }

    /// Sends a call; returns a handle on its result.
    pub fn send<R: DeserializeOwned>(&self, sig: TypedSignature<R>) -> Result<AsyncResult<R>> {
        sig.check()?;
        let id = self.send_signature(sig.into_signature())?;
        Ok(self.result(id))
    }

    /// Sends an untyped call (the CLI's path); returns its id.
    pub fn send_signature(&self, sig: Signature) -> Result<TaskId> {
        let env = self.envelope(sig);
        let envs = std::slice::from_ref(&env);
        self.backend.broker().enqueue(envs)?;
        self.publish_sent(envs);
        Ok(env.id)
    }

    /// Sends many calls in one broker write; returns their ids in order.
    pub fn send_batch(&self, sigs: impl IntoIterator<Item = Signature>) -> Result<Vec<TaskId>> {
        let envs: Vec<Envelope> = sigs.into_iter().map(|s| self.envelope(s)).collect();
        self.backend.broker().enqueue(&envs)?;
        self.publish_sent(&envs);
        Ok(envs.iter().map(|e| e.id).collect())
    }

    /// A handle on the result of the task `id`, typed as `R`.
    pub fn result<R>(&self, id: TaskId) -> AsyncResult<R> {
        AsyncResult {
            id,
            backend: self.backend.clone(),
            ret: PhantomData,
        }
    }

    /// The stored record of `id` (None: nothing known yet, PENDING to a client).
    pub fn record(&self, id: TaskId) -> Result<Option<ResultRecord>> {
        self.backend.results().get(id)
    }

    /// The stored records of many ids, in order (one round trip where the backend allows).
    pub fn records(&self, ids: &[TaskId]) -> Result<Vec<Option<ResultRecord>>> {
        self.backend.results().get_many(ids)
    }

    /// Waits until `id` reaches a final state or `timeout` passes; returns what is known then.
    pub fn wait_record(&self, id: TaskId, timeout: Duration) -> Result<Option<ResultRecord>> {
        self.backend.results().wait(id, timeout)
    }

    /// Counts per queue, for every queue that holds a task (`lovage queues`).
    pub fn queues(&self) -> Result<Vec<QueueStats>> {
        self.backend.admin().stats()
    }

    /// Workers that sent a heartbeat within `within` (`lovage workers`).
    pub fn workers(&self, within: Duration) -> Result<Vec<WorkerInfo>> {
        self.backend.presence().workers(within)
    }

    /// Removes every waiting (not reserved) task of `queue`; returns how many.
    pub fn purge(&self, queue: &str) -> Result<u64> {
        self.backend.admin().purge(queue)
    }

    /// The most recent dead letters, newest first.
    pub fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>> {
        self.backend.admin().dead_letters(limit)
    }

    /// Revokes a task: a waiting one never runs (and is recorded REVOKED in the same step), a
    /// running one is cancelled by its worker.
    pub fn revoke(&self, id: TaskId) -> Result<Revoked> {
        self.backend.broker().revoke(id)
    }
}

impl Dispatch for App {
    type Handle<R: DeserializeOwned + Send + 'static> = AsyncResult<R>;
    type Error = BrokerError;

    fn dispatch<R: DeserializeOwned + Send + 'static>(
        &self,
        sig: TypedSignature<R>,
    ) -> Result<AsyncResult<R>> {
        self.send(sig)
    }
}

/// `$LOVAGE_SEND_SENT_EVENT` as a switch (unset or empty: off); another value is an error
/// naming what is accepted.
fn sent_events_from_env() -> Result<bool> {
    let Ok(v) = std::env::var(SENT_EVENTS_ENV) else {
        return Ok(false);
    };
    match v.trim().to_ascii_lowercase().as_str() {
        "" | "0" | "false" | "no" | "off" => Ok(false),
        "1" | "true" | "yes" | "on" => Ok(true),
        other => Err(BrokerError::BadRequest {
            what: SENT_EVENTS_ENV,
            reason: format!("{other:?}: expected 1/true/yes/on or 0/false/no/off"),
        }),
    }
}

fn broker_error(e: BrokerError) -> TaskError {
    TaskError::new(kinds::BROKER, e.to_string())
}

/// The result of a sent task (Celery's `AsyncResult`): its state, and its value once done.
pub struct AsyncResult<R> {
    id: TaskId,
    backend: Backend,
    ret: PhantomData<fn() -> R>,
}

impl<R> Clone for AsyncResult<R> {
    fn clone(&self) -> Self {
        AsyncResult {
            id: self.id,
            backend: self.backend.clone(),
            ret: PhantomData,
        }
    }
}

impl<R> std::fmt::Debug for AsyncResult<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncResult").field("id", &self.id).finish()
    }
}

impl<R: DeserializeOwned> AsyncResult<R> {
    /// The task's id.
    pub fn id(&self) -> TaskId {
        self.id
    }

    /// The stored record, if any.
    pub fn record(&self) -> Result<Option<ResultRecord>> {
        self.backend.results().get(self.id)
    }

    /// Where the task is; PENDING when nothing is recorded yet.
    pub fn state(&self) -> Result<TaskState> {
        Ok(self.record()?.map_or(TaskState::Pending, |r| r.state))
    }

    /// True once the task reached a final state.
    pub fn ready(&self) -> Result<bool> {
        Ok(self.state()?.is_final())
    }

    /// Waits up to `timeout` for the task to finish and returns its value, or its error: the
    /// task's own, `Revoked`, `Timeout` (still running or waiting), or `BrokerError`.
    pub fn get(&self, timeout: Duration) -> Result<R, TaskError> {
        let rec = self
            .backend
            .results()
            .wait(self.id, timeout)
            .map_err(broker_error)?;
        outcome(self.id, rec, timeout)
    }

    /// Deletes the task's record now (Celery's `forget()`) instead of at its expiry; true if
    /// there was one. A task still running stores its record again when it finishes.
    pub fn forget(&self) -> Result<bool> {
        Ok(self.backend.results().forget(&[self.id])? > 0)
    }

    /// Revokes the task.
    pub fn revoke(&self) -> Result<Revoked> {
        App::with_backend(self.backend.clone()).revoke(self.id)
    }
}

impl<R: DeserializeOwned + Send + 'static> AsyncResult<R> {
    /// Like [`get`](Self::get), as a future: the blocking wait runs on a helper thread, so an
    /// async caller's executor is never blocked.
    pub fn get_async(&self, timeout: Duration) -> GetFuture<R> {
        let shared = Arc::new(Mutex::new(FutureSlot {
            value: None,
            waker: None,
        }));
        let me = self.clone();
        let slot = shared.clone();
        std::thread::spawn(move || {
            let v = me.get(timeout);
            let mut s = slot.lock().unwrap_or_else(|p| p.into_inner());
            s.value = Some(v);
            if let Some(w) = s.waker.take() {
                w.wake();
            }
        });
        GetFuture { shared }
    }
}

/// Turns a stored record into the caller's value or error; a task not finished by now has
/// timed out.
fn outcome<R: DeserializeOwned>(
    id: TaskId,
    rec: Option<ResultRecord>,
    timeout: Duration,
) -> Result<R, TaskError> {
    rec.as_ref()
        .and_then(ResultRecord::outcome)
        .unwrap_or_else(|| {
            Err(TaskError::new(
                kinds::TIMEOUT,
                format!("task {id} did not finish within {timeout:?}"),
            ))
        })
}

struct FutureSlot<R> {
    value: Option<Result<R, TaskError>>,
    waker: Option<Waker>,
}

/// The future returned by [`AsyncResult::get_async`].
pub struct GetFuture<R> {
    shared: Arc<Mutex<FutureSlot<R>>>,
}

impl<R> Future for GetFuture<R> {
    type Output = Result<R, TaskError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut s = self.shared.lock().unwrap_or_else(|p| p.into_inner());
        match s.value.take() {
            Some(v) => Poll::Ready(v),
            None => {
                s.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}
