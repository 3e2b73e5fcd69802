//! A futures client over the broker (Dask's `Client`): `submit`, `map`, `gather`,
//! `as_completed`, `wait`, `cancel`, `fire_and_forget`.
//!
//! ```
//! # #[lovage_macros::task(crate = lovage_core)] fn square(x: i64) -> i64 { x * x }
//! use std::time::Duration;
//! let app = lovage_broker::App::connect("memory://futures-doc").unwrap();
//! let client = app.client().unwrap();
//! let futures = client.map(square::s, 0..10).unwrap();
//! assert_eq!(client.pending(), 10);
//! # // Nothing consumes the queue in this example, so only the submit side is shown.
//! for f in futures { client.cancel(&f).unwrap(); }
//! ```
//!
//! A future is a [`TaskHandle`] (the pools' future: `result`, `done`, `.await`, done
//! callbacks) plus the task's id. One watcher thread per client completes every future from
//! the result store (see `watcher.rs`); dropping a future does not cancel its task.
//!
//! A task's result is released when no future needs it (Dask's semantics): once the task has
//! finished and the last future on it (clones count) is dropped, the client forgets its record
//! — unless a call sent with `submit_after` still waits for it, or the future was handed to
//! [`Client::fire_and_forget`]. The record's time to live stays the backstop (see
//! `release.rs`).

mod release;
mod scatter;
mod waiting;
mod watcher;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use lovage_core::canvas::Frame;
use lovage_core::{
    kinds, AfterArg, IntoAfterArg, Keep, Signature, TaskError, TaskId, TypedSignature,
};
use lovage_pool::TaskHandle;
use serde::de::DeserializeOwned;

pub use lovage_pool::ReturnWhen;
pub use scatter::{Broadcast, Scattered, SCATTER_TASK};
pub use waiting::{AsCompleted, Waited};

use crate::{App, BrokerError, Result, ResultRecord};
use release::Hold;
use watcher::{Fetched, Typed, Watch};

/// How many calls [`Client::map`] sends in one broker write.
const MAP_BATCH: usize = 1000;

/// Sends tasks and hands back futures that one watcher thread completes (Dask's `Client`).
///
/// Made by [`App::client`]. Clones share the watcher; when the last clone is dropped, the
/// watcher stops and futures still pending fail with `Cancelled` (their tasks still run).
#[derive(Clone)]
pub struct Client {
    app: App,
    inner: Arc<ClientInner>,
}

struct ClientInner {
    watch: Arc<Watch>,
}

impl Drop for ClientInner {
    fn drop(&mut self) {
        self.watch.close(TaskError::new(
            kinds::CANCELLED,
            "the client was dropped before the task finished (the task itself goes on)",
        ));
    }
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("backend", self.app.backend())
            .field("pending", &self.pending())
            .finish()
    }
}

impl App {
    /// A futures client on this app's broker: [`Client::submit`], [`Client::map`] and friends.
    /// Fails only if its watcher thread cannot be started.
    pub fn client(&self) -> Result<Client> {
        let watch = Watch::new();
        let thread_watch = watch.clone();
        let backend = self.backend().clone();
        std::thread::Builder::new()
            .name("lovage-client-watch".into())
            .spawn(move || thread_watch.run(backend))
            .map_err(|e| BrokerError::Backend {
                backend: "client",
                location: self.backend().url().to_owned(),
                op: "start the result watcher thread",
                source: Box::new(e),
            })?;
        Ok(Client {
            app: self.clone(),
            inner: Arc::new(ClientInner { watch }),
        })
    }
}

impl Client {
    /// The app this client sends through.
    pub fn app(&self) -> &App {
        &self.app
    }

    /// How many futures the watcher still waits on.
    pub fn pending(&self) -> usize {
        self.inner.watch.len()
    }

    /// Sends one call; per-call options (`priority`, `queue`, `retry`, `countdown`…) are the
    /// signature's own.
    pub fn submit<R>(&self, sig: TypedSignature<R>) -> Result<TaskFuture<R>>
    where
        R: DeserializeOwned + Send + 'static,
    {
        sig.check()?;
        let env = awaited(self.app.envelope(sig.into_signature()));
        let future = self.watch(env.id);
        if let Err(e) = self
            .app
            .backend()
            .broker()
            .enqueue(std::slice::from_ref(&env))
        {
            self.inner.watch.remove(env.id);
            return Err(e);
        }
        Ok(future)
    }

    /// Sends `sig` under `key` (Dask's `key=`): the task's id is derived from the key, so
    /// while a task with this key is pending in this client, or its record is still held by
    /// the result store (from any client), the existing task's future is returned and
    /// nothing is sent. Once the record has expired, the key runs again. A task queued by
    /// another client that has not started yet is not seen (it would run twice, under the
    /// same id). Plain [`submit`](Self::submit) never deduplicates (Dask's `pure=False`).
    /// The record is released with the key's last future in any client that holds it (a
    /// client that found another's task registers in its holders dict: see `release.rs`):
    /// after that, the key runs again.
    pub fn submit_keyed<R>(&self, key: &str, sig: TypedSignature<R>) -> Result<TaskFuture<R>>
    where
        R: DeserializeOwned + Send + 'static,
    {
        sig.check()?;
        let id = key_id(key);
        let future = {
            // The hold is taken before the record is read, and the release of a record this
            // client dropped cannot come in between (see `release.rs`).
            let watch = &self.inner.watch;
            let _forgetting = watch.forgetting.lock().unwrap_or_else(|p| p.into_inner());
            let known = watch.contains(id);
            let results = self.app.backend().results();
            if watch.hold_kind(id).is_some() {
                // This client sent it, or shares it already: the new hold joins its count.
                let future = self.watch(id);
                if known || results.get(id)?.is_some() {
                    return Ok(future);
                }
                future
            } else {
                // Maybe another client's task: this client registers as its holder before it
                // reads the record, so the sender's release (atomic with its check of the
                // holders) keeps a record found here.
                let holders = crate::holders_dict(id);
                let shared = self.app.backend().shared();
                shared.dict_set(&holders, &[(watch.token.clone(), Vec::new())])?;
                let future = self.watch_with(id, watcher::decode_value::<R>, Holds::Shared);
                if known || results.get(id)?.is_some() {
                    return Ok(future);
                }
                // Not there: this client sends it, and holds it as its sender.
                watch.hold_as_sender(id);
                shared.dict_remove(&holders, &watch.token)?;
                future
            }
        };
        self.send_keyed(id, sig, future)
    }

    /// Sends `sig` under the key's `id`, for `future` (made already).
    fn send_keyed<R>(
        &self,
        id: TaskId,
        sig: TypedSignature<R>,
        future: TaskFuture<R>,
    ) -> Result<TaskFuture<R>>
    where
        R: DeserializeOwned + Send + 'static,
    {
        let mut env = awaited(self.app.envelope(sig.into_signature()));
        env.id = id;
        if let Err(e) = self
            .app
            .backend()
            .broker()
            .enqueue(std::slice::from_ref(&env))
        {
            self.inner.watch.remove(id);
            return Err(e);
        }
        Ok(future)
    }

    /// [`submit_keyed`](Self::submit_keyed) under the call's own key, `task-<hash of the
    /// task name, codec and encoded arguments>` (Dask's `pure=True`): identical calls share
    /// one task while it is pending or its result is held. Use it for deterministic tasks
    /// only; [`submit`](Self::submit) is the opt-out (a fresh task every call).
    pub fn submit_pure<R>(&self, sig: TypedSignature<R>) -> Result<TaskFuture<R>>
    where
        R: DeserializeOwned + Send + 'static,
    {
        sig.check()?;
        let key = pure_key(sig.signature());
        self.submit_keyed(&key, sig)
    }

    /// Sends `f(item)` for every item, in broker writes of up to 1,000 calls, and returns
    /// their futures in order.
    pub fn map<A, R, F>(
        &self,
        mut f: F,
        items: impl IntoIterator<Item = A>,
    ) -> Result<Vec<TaskFuture<R>>>
    where
        F: FnMut(A) -> TypedSignature<R>,
        R: DeserializeOwned + Send + 'static,
    {
        let mut out = Vec::new();
        let mut batch = Vec::with_capacity(MAP_BATCH);
        let mut items = items.into_iter().peekable();
        while items.peek().is_some() {
            batch.clear();
            for item in items.by_ref().take(MAP_BATCH) {
                let sig = f(item);
                sig.check()?;
                batch.push(awaited(self.app.envelope(sig.into_signature())));
            }
            let first = out.len();
            out.extend(batch.iter().map(|env| self.watch(env.id)));
            if let Err(e) = self.app.backend().broker().enqueue(&batch) {
                for fut in out.drain(first..) {
                    self.inner.watch.remove(fut.id);
                }
                return Err(e);
            }
        }
        Ok(out)
    }

    /// Every future's value, in order; the first error (in order) if any failed.
    pub fn gather<R: Send + 'static>(
        &self,
        futures: impl IntoIterator<Item = TaskFuture<R>>,
    ) -> std::result::Result<Vec<R>, TaskError> {
        futures.into_iter().map(TaskFuture::result).collect()
    }

    /// Futures in the order their tasks finish (see [`AsCompleted`]); more can be
    /// [added](AsCompleted::add) while iterating.
    pub fn as_completed<R: Send + 'static>(
        &self,
        futures: impl IntoIterator<Item = TaskFuture<R>>,
    ) -> AsCompleted<R> {
        AsCompleted::new(futures)
    }

    /// Waits until `when` holds or `timeout` passes; splits the futures into done and not done.
    pub fn wait<R: Send + 'static>(
        &self,
        futures: impl IntoIterator<Item = TaskFuture<R>>,
        when: ReturnWhen,
        timeout: Option<Duration>,
    ) -> Waited<R> {
        waiting::wait(futures.into_iter().collect(), when, timeout)
    }

    /// Revokes the future's task (a waiting one never runs; a running one's result is
    /// discarded) and cancels the future. The REVOKED record is kept for its time to live,
    /// for whoever else looks at the task (it is not released with the futures).
    pub fn cancel<R: Send + 'static>(&self, future: &TaskFuture<R>) -> Result<()> {
        let revoked = future.cancel_with(&self.app);
        if self.inner.watch.unhold_all(future.id) {
            leave_holders(self.app.backend(), future.id, &self.inner.watch.token);
        }
        revoked
    }

    /// Lets the task run to its end with nobody watching it: the client stops tracking it
    /// and its result stays in the store for its usual expiry (it is not released when the
    /// client's futures on it are dropped).
    pub fn fire_and_forget<R: Send + 'static>(&self, future: TaskFuture<R>) {
        self.inner.watch.remove(future.id);
        if self.inner.watch.unhold_all(future.id) {
            leave_holders(self.app.backend(), future.id, &self.inner.watch.token);
        }
    }

    /// Sends calls whose arguments are already encoded, in one broker write; each future gives
    /// its result as stored, in the call's codec (for schedulers built on a client, such as a
    /// graph's `Broker` scheduler).
    pub fn submit_raw_many(&self, sigs: Vec<Signature>) -> Result<Vec<TaskFuture<Vec<u8>>>> {
        let envs: Vec<_> = sigs.into_iter().map(|s| self.app.envelope(s)).collect();
        let futures: Vec<TaskFuture<Vec<u8>>> = envs
            .iter()
            .map(|env| self.watch_with(env.id, watcher::raw_value, Holds::Sent))
            .collect();
        if let Err(e) = self.app.backend().broker().enqueue(&envs) {
            for f in &futures {
                self.inner.watch.remove(f.id);
            }
            return Err(e);
        }
        Ok(futures)
    }

    /// A future on a task sent some other way (a graph's node the workers send, a task
    /// another process sent): it completes when the task's record is final. It holds the
    /// task's result only if this client sent the task and still has a future on it (the
    /// result of a task sent elsewhere is not this client's to release).
    pub fn future<R: DeserializeOwned + Send + 'static>(&self, id: TaskId) -> TaskFuture<R> {
        self.watch_with(id, watcher::decode_value::<R>, Holds::IfHeld)
    }

    /// Like [`future`](Self::future), giving the value as stored (in the task's codec).
    pub fn future_raw(&self, id: TaskId) -> TaskFuture<Vec<u8>> {
        self.watch_with(id, watcher::raw_value, Holds::IfHeld)
    }

    /// A future on a task this client sends itself by other means (`submit_after` in
    /// lovage-flow, `ctx.submit`), made before the task is sent: it holds the task's result
    /// as [`submit`](Self::submit)'s futures do. The task must carry the `Awaited` marker
    /// for the future to be another call's input.
    pub fn sent_future<R: DeserializeOwned + Send + 'static>(&self, id: TaskId) -> TaskFuture<R> {
        self.watch(id)
    }

    /// True while a future of this client holds `id`'s result: this client (or a task of
    /// this worker, through `ctx.submit`) sent the task, so it carries the marker that lets
    /// the workers release the calls waiting for it.
    pub fn holds(&self, id: TaskId) -> bool {
        self.inner.watch.holds(id)
    }

    /// Calls `f` on this client's watcher thread once `id`'s record is final (at once if it
    /// is already), with the record and the broker; nothing if the client is dropped first.
    /// How `submit_after` releases a call waiting for a task sent without the marker
    /// (`app.send`, a graph's node) while the client lives.
    pub fn on_final(
        &self,
        id: TaskId,
        f: impl FnOnce(&ResultRecord, &crate::Backend) + Send + 'static,
    ) {
        self.inner
            .watch
            .add(id, Box::new(watcher::OnFinal(Box::new(f))));
    }

    /// Stops watching `id` (its send failed).
    pub(crate) fn unwatch(&self, id: TaskId) {
        self.inner.watch.remove(id);
    }

    fn watch<R: DeserializeOwned + Send + 'static>(&self, id: TaskId) -> TaskFuture<R> {
        self.watch_with(id, watcher::decode_value::<R>, Holds::Sent)
    }

    fn watch_with<R: Send + 'static>(
        &self,
        id: TaskId,
        decode: watcher::Decode<R>,
        holds: Holds,
    ) -> TaskFuture<R> {
        let watch = &self.inner.watch;
        let (completer, handle) = TaskHandle::promise();
        let pending = Box::new(Typed::new(completer, decode));
        let hold = watch.add_holding(id, pending, holds);
        TaskFuture {
            id,
            handle,
            decode,
            watch: watch.clone(),
            hold,
        }
    }
}

/// Whether a new future holds its task's result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Holds {
    /// The client sent the task: the future holds it.
    Sent,
    /// Another client sent it (a keyed submit found its record): the future holds it with
    /// that client, through the task's [holders dict](crate::holders_dict).
    Shared,
    /// Only if the client holds it already.
    IfHeld,
}

/// The shared dict listing the calls sent with `submit_after` that wait for task `id` (key:
/// graph, node, input index); a released result is kept while it is not empty.
pub fn waiting_dict(id: TaskId) -> String {
    format!("lovage.after.{id}")
}

/// Removes this client's entry (`token`) from `id`'s holders dict without forgetting anything:
/// a shared future handed to `fire_and_forget` or cancelled, whose record lives out its time
/// to live.
fn leave_holders(backend: &crate::Backend, id: TaskId, token: &[u8]) {
    if let Err(e) = backend
        .shared()
        .dict_remove(&crate::holders_dict(id), token)
    {
        tracing::warn!(error = %e, %id, "could not remove this client from a task's holders");
    }
}

/// Marks a task whose future may become another call's argument: the worker that finishes
/// it releases the calls waiting for it (`Client::submit_after` in lovage-flow). Costs the
/// worker one read of the (usually empty) waiting list per task.
pub(crate) fn awaited(mut env: crate::Envelope) -> crate::Envelope {
    if !env.flow.contains(&Frame::Awaited) {
        env.flow.push(Frame::Awaited);
    }
    env
}

/// FNV-1a over 128 bits: stable across processes and releases.
fn fnv128(parts: &[&[u8]]) -> u128 {
    let mut h: u128 = 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d;
    for part in parts {
        for &b in *part {
            h ^= u128::from(b);
            h = h.wrapping_mul(0x0000_0000_0100_0000_0000_0000_0000_013b);
        }
        // A separator, so ("ab", "c") and ("a", "bc") differ.
        h ^= 0xff;
        h = h.wrapping_mul(0x0000_0000_0100_0000_0000_0000_0000_013b);
    }
    h
}

/// A task id derived from `parts` (the same in every process): a spawned task's, from its
/// parent's id and its spawn number or key, so a parent that runs again spawns the same ids.
pub(crate) fn derived_id(parts: &[&[u8]]) -> TaskId {
    TaskId::from_uuid(uuid::Uuid::from_u128(fnv128(parts)))
}

/// The task id a user key stands for (the same in every process).
fn key_id(key: &str) -> TaskId {
    TaskId::from_uuid(uuid::Uuid::from_u128(fnv128(&[
        b"lovage-key:",
        key.as_bytes(),
    ])))
}

/// A call's pure key: its task name and a hash of its codec and encoded arguments.
fn pure_key(sig: &Signature) -> String {
    let codec = format!("{:?}", sig.codec);
    let h = fnv128(&[sig.task.as_bytes(), codec.as_bytes(), &sig.args]);
    format!("{}-{:032x}", sig.task, h)
}

/// A task sent by a [`Client`]: its id and a [`TaskHandle`] the client's watcher completes.
///
/// Holds the task's result while it (or a clone) lives: once the last one is dropped and the
/// task has finished, the client forgets the result (see the module docs).
#[must_use = "a future is how you get the result; use Client::fire_and_forget to drop it on purpose"]
pub struct TaskFuture<R> {
    id: TaskId,
    /// A value its worker kept is fetched when asked for, not when the task finishes.
    handle: TaskHandle<Fetched<R>>,
    decode: watcher::Decode<R>,
    watch: Arc<Watch>,
    /// None for a future on a task sent elsewhere.
    hold: Option<Arc<Hold>>,
}

/// Another future on the same task, holding its result with this one; it completes from the
/// result store as the first did (at once, when the task has finished).
impl<R: Send + 'static> Clone for TaskFuture<R> {
    fn clone(&self) -> Self {
        let (completer, handle) = TaskHandle::promise();
        self.watch
            .add(self.id, Box::new(Typed::new(completer, self.decode)));
        TaskFuture {
            id: self.id,
            handle,
            decode: self.decode,
            watch: self.watch.clone(),
            hold: self.hold.clone(),
        }
    }
}

impl<R> std::fmt::Debug for TaskFuture<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskFuture").field("id", &self.id).finish()
    }
}

impl<R: Send + 'static> TaskFuture<R> {
    /// The task's id (for `lovage status ID`, the result store, a revoke from elsewhere).
    pub fn id(&self) -> TaskId {
        self.id
    }

    /// Blocks until the task finishes; its value or its error. A value its worker kept (the
    /// data plane) is fetched now, not before.
    pub fn result(self) -> std::result::Result<R, TaskError> {
        self.handle.result().and_then(Fetched::take)
    }

    /// Like [`result`](Self::result), giving up after `timeout` with a `Timeout` error (the
    /// future stays usable).
    pub fn result_timeout(&self, timeout: Duration) -> std::result::Result<R, TaskError> {
        self.handle.result_timeout(timeout).and_then(Fetched::take)
    }

    /// True once the task finished (or the future was cancelled).
    pub fn done(&self) -> bool {
        self.handle.done()
    }

    /// True once a worker was seen running the task.
    pub fn running(&self) -> bool {
        self.handle.running()
    }

    /// True if the future was cancelled.
    pub fn cancelled(&self) -> bool {
        self.handle.cancelled()
    }

    /// Lets go of the task's result (Dask's `release`): the same as dropping the future.
    pub fn release(self) {}

    /// What keeps the task's result while a call built with this future is sent.
    fn keep(&self) -> Option<Keep> {
        self.hold
            .clone()
            .map(|h| Keep(h as Arc<dyn std::any::Any + Send + Sync>))
    }

    /// Calls `f` with the outcome when the task finishes (on the client's watcher thread). A
    /// value its worker kept is fetched for the call (and again by a later `result()`).
    pub fn add_done_callback<F>(&self, f: F)
    where
        F: FnOnce(&std::result::Result<R, TaskError>) + Send + 'static,
    {
        self.handle.add_done_callback(move |r| match r {
            Ok(fetched) => fetched.peek(f),
            Err(e) => f(&Err(e.clone())),
        });
    }

    /// Calls `f` once the task finished, with whether it failed (not cancelled), fetching
    /// nothing: for `wait` and `as_completed`.
    pub(crate) fn on_done(&self, f: impl FnOnce(bool) + Send + 'static) {
        self.handle.add_done_callback(move |r| {
            f(match r {
                Ok(fetched) => fetched.failed(),
                Err(e) => e.kind != kinds::CANCELLED,
            })
        });
    }

    /// A pool handle on the same outcome: for [`lovage_pool::as_completed`] and friends. A
    /// value its worker kept is fetched when the task finishes (on the watcher thread).
    pub fn into_handle(self) -> TaskHandle<R> {
        let (completer, handle) = TaskHandle::promise();
        self.handle.add_done_callback(move |r| {
            completer.finish(match r {
                Ok(fetched) => fetched.take_shared(),
                Err(e) => Err(e.clone()),
            })
        });
        handle
    }

    fn cancel_with(&self, app: &App) -> Result<()> {
        // The future ends first: the revoke stores a REVOKED record, and the watcher, reading
        // it before this thread went on, would end the future as Revoked instead of Cancelled.
        // When the revoke fails, the future has still ended and the error says the task may run.
        self.handle.cancel();
        app.revoke(self.id).map(|_| ())
    }
}

/// An argument that keeps `keep` (a future's hold on its task's result) until it is sent.
fn kept(arg: AfterArg, keep: Option<Keep>) -> AfterArg {
    match keep {
        Some(k) => AfterArg::Kept(Box::new(arg), k),
        None => arg,
    }
}

/// A future where a call takes a `T` (`task::after(&future, …)`): the call waits for its task.
impl<R: Send + 'static> IntoAfterArg<R> for &TaskFuture<R> {
    fn into_after_arg(self) -> AfterArg {
        kept(AfterArg::Future(self.id), self.keep())
    }
}

/// A future given away to a call (`task::after(future, …)`): the call still waits for its
/// task, and holds its result until it is sent.
impl<R: Send + 'static> IntoAfterArg<R> for TaskFuture<R> {
    fn into_after_arg(self) -> AfterArg {
        kept(AfterArg::Future(self.id), self.keep())
    }
}

/// Futures given together where a call takes a `Vec<T>` (Dask's `client.submit(sum, futures)`):
/// made by [`all`]. Holds the futures' results until the call is sent.
#[derive(Debug, Clone)]
pub struct AllOf<T> {
    ids: Vec<TaskId>,
    holds: Vec<Keep>,
    _t: std::marker::PhantomData<fn() -> T>,
}

/// The list of these futures' values, in order, as one argument of a call that takes a
/// `Vec<T>`: `total::after(all(&futures))` waits for every one of them.
pub fn all<T: Send + 'static>(futures: &[TaskFuture<T>]) -> AllOf<T> {
    AllOf {
        ids: futures.iter().map(|f| f.id).collect(),
        holds: futures.iter().filter_map(TaskFuture::keep).collect(),
        _t: std::marker::PhantomData,
    }
}

impl<T> IntoAfterArg<Vec<T>> for AllOf<T> {
    fn into_after_arg(self) -> AfterArg {
        let keep = (!self.holds.is_empty()).then(|| Keep(Arc::new(self.holds)));
        kept(AfterArg::Futures(self.ids), keep)
    }
}

impl<R: Send + 'static> Future for TaskFuture<R> {
    type Output = std::result::Result<R, TaskError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.get_mut().handle)
            .poll(cx)
            .map(|r| r.and_then(Fetched::take))
    }
}
