//! Tasks that submit tasks (Dask's `get_client()` inside a task): [`current()`] gives the
//! running task's [`TaskCtx`] when a `lovage worker` runs it on a thread pool.
//!
//! `ctx.spawn(sig)` sends a task whose `parent_id` is this task and whose `root_id` is this
//! task's root; inside a scope ([`App::scope`]) the child joins the same scope, so the scope
//! waits for it too. Children's ids are derived from the parent's id and their spawn number
//! (or a key), so a parent delivered again after a crash spawns the same ids, which
//! `enqueue_once` and the scope's count take once.
//!
//! Children spawned into a scope are held back and sent with the task's outcome, in the same
//! write as its record and its own fall out of the scope (one SQLite transaction; see
//! [`Driver::spawn_store_fall_complete`](crate::Driver::spawn_store_fall_complete)): a crawled
//! page and the links it found commit together, and a page killed before it settles sends
//! nothing (its next delivery spawns the same ids). They go earlier whenever the task might
//! wait for them: before any blocking wait, and when it reaches the broker itself through
//! [`TaskCtx::client`] or [`TaskCtx::app`].
//!
//! Waiting inside a task never holds a slot: a blocking wait on a future
//! (`TaskFuture::result`, `wait`, …) gives the task's slot back to the worker and a stand-in
//! thread takes its place in the pool until the wait is over (an implicit
//! `secede`/`rejoin`), so a tree of parents waiting on their children cannot deadlock.

use std::any::Any;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use lovage_core::context::{Host, TaskInfo};
use lovage_core::{TaskId, TypedSignature};
use serde::de::DeserializeOwned;

use crate::scope::{spawned_frame, ScopeSpawn};
use crate::{App, Client, Result, TaskFuture};

/// What a worker lends the tasks it runs: its broker, one futures client for all of them
/// (started on first use), and the children each task spawned into its scope and holds back
/// to send with its outcome.
pub struct TaskHost {
    app: App,
    client: Mutex<Option<Client>>,
    held: Mutex<HashMap<TaskId, ScopeSpawn>>,
}

impl TaskHost {
    /// The host of a worker on `app`'s broker.
    pub fn shared(app: App) -> Arc<TaskHost> {
        Arc::new(TaskHost {
            app,
            client: Mutex::new(None),
            held: Mutex::new(HashMap::new()),
        })
    }

    fn held(&self) -> std::sync::MutexGuard<'_, HashMap<TaskId, ScopeSpawn>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The children `task` spawned into its scope and has not sent yet, for the worker to send
    /// with its outcome ([`Driver::spawn_store_fall_complete`](crate::Driver::spawn_store_fall_complete)).
    pub fn take_held(&self, task: TaskId) -> Option<ScopeSpawn> {
        self.held().remove(&task)
    }

    fn hold(&self, task: TaskId, scope: TaskId, repair: bool, children: Vec<crate::Envelope>) {
        self.held()
            .entry(task)
            .or_insert_with(|| ScopeSpawn {
                scope,
                children: Vec::new(),
                repair,
            })
            .children
            .extend(children);
    }

    /// Sends what `task` holds back now (before it waits, or reaches the broker itself); kept
    /// to go with the outcome if the broker refuses.
    fn send_held(&self, task: TaskId) -> Result<()> {
        let Some(sp) = self.take_held(task) else {
            return Ok(());
        };
        let driver = self.app.backend().driver();
        match driver.enqueue_in_scope(sp.scope, &sp.children, sp.repair) {
            Ok(_) => Ok(()),
            Err(e) => {
                self.hold(task, sp.scope, sp.repair, sp.children);
                Err(e)
            }
        }
    }
}

impl Host for TaskHost {
    fn before_wait(&self, task: &TaskInfo) {
        if let Err(e) = self.send_held(task.id) {
            tracing::warn!(task_id = %task.id, error = %e, "children not sent before a wait; they go with the outcome");
        }
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// The running task, seen from inside (see the module docs).
#[derive(Clone)]
pub struct TaskCtx {
    info: Arc<TaskInfo>,
    host: Arc<dyn Host>,
}

impl std::fmt::Debug for TaskCtx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskCtx").field("info", &self.info).finish()
    }
}

/// The task this thread runs for a `lovage worker` (on a thread pool), or `None` elsewhere: on
/// a local pool, in a process pool's child, outside any task.
pub fn current() -> Option<TaskCtx> {
    let info = lovage_core::context::current()?;
    let host = info.host.clone()?;
    host.as_any().downcast_ref::<TaskHost>()?;
    Some(TaskCtx { info, host })
}

impl TaskCtx {
    fn host(&self) -> &TaskHost {
        // `current` only builds a context whose host is a `TaskHost`.
        self.host
            .as_any()
            .downcast_ref::<TaskHost>()
            .unwrap_or_else(|| unreachable!("a TaskCtx is built over a TaskHost"))
    }

    /// This task's id.
    pub fn id(&self) -> TaskId {
        self.info.id
    }

    /// The task that spawned this one, if a task did.
    pub fn parent_id(&self) -> Option<TaskId> {
        self.info.parent
    }

    /// The first task of this task's tree (its own id when nobody spawned it).
    pub fn root_id(&self) -> TaskId {
        self.info.root
    }

    /// The scope this task counts in, if any.
    pub fn scope_id(&self) -> Option<TaskId> {
        self.info.scope
    }

    /// The worker's app (its broker). The children this task holds back are sent first, as
    /// whatever it does through the app may wait for them.
    pub fn app(&self) -> &App {
        if let Err(e) = self.host().send_held(self.info.id) {
            tracing::warn!(task_id = %self.info.id, error = %e, "children not sent yet; they go with the outcome");
        }
        &self.host().app
    }

    /// The worker's futures client (Dask's `get_client()`), shared by its tasks and started
    /// on first use. The children this task holds back are sent first.
    pub fn client(&self) -> Result<Client> {
        self.host().send_held(self.info.id)?;
        let mut slot = self.host().client.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        let c = self.host().app.client()?;
        *slot = Some(c.clone());
        Ok(c)
    }

    /// Sends `sig` as a child of this task (in this task's scope, if it has one); returns its
    /// id. Its id is derived from this task's and the number of children spawned before it.
    pub fn spawn<R: DeserializeOwned>(&self, sig: TypedSignature<R>) -> Result<TaskId> {
        self.send(self.next_child_id(), sig)
    }

    /// The id of the next child spawned without a key.
    fn next_child_id(&self) -> TaskId {
        let n = self.info.spawned.fetch_add(1, Ordering::Relaxed);
        let me = self.info.id.as_uuid().as_bytes().to_vec();
        crate::futures::derived_id(&[b"lovage-spawn:", &me, &n.to_le_bytes()])
    }

    /// Sends `sig` as a child of this task under `key`: its id is derived from the scope (or,
    /// outside a scope, the root) and the key, so every task that spawns the same key —
    /// a page found from two others, say — spawns one task, run and counted once.
    pub fn spawn_keyed<R: DeserializeOwned>(
        &self,
        key: &str,
        sig: TypedSignature<R>,
    ) -> Result<TaskId> {
        Ok(self.spawn_keyed_many([(key, sig)])?[0])
    }

    /// [`spawn_keyed`](Self::spawn_keyed) for many children at once: in a scope, a few broker
    /// calls for the lot instead of a few per child.
    pub fn spawn_keyed_many<'k, R: DeserializeOwned>(
        &self,
        children: impl IntoIterator<Item = (&'k str, TypedSignature<R>)>,
    ) -> Result<Vec<TaskId>> {
        let mut ids = Vec::new();
        let mut envs = Vec::new();
        for (key, sig) in children {
            let id = match self.info.scope {
                Some(scope) => crate::scope::keyed_id(scope, key),
                None => {
                    let root = self.info.root.as_uuid().as_bytes().to_vec();
                    crate::futures::derived_id(&[b"lovage-root-key:", &root, key.as_bytes()])
                }
            };
            ids.push(id);
            envs.push(self.envelope(id, sig)?);
        }
        self.send_all(envs)?;
        Ok(ids)
    }

    /// [`spawn`](Self::spawn), returning a future on the child's result (from the worker's
    /// [`client`](Self::client)); waiting on it gives this task's slot back meanwhile. The
    /// future can be another call's argument (`submit_after`), as a client's can, and holds
    /// the child's result as a client's does.
    pub fn submit<R>(&self, sig: TypedSignature<R>) -> Result<TaskFuture<R>>
    where
        R: DeserializeOwned + Send + 'static,
    {
        let id = self.next_child_id();
        let env = crate::futures::awaited(self.envelope(id, sig)?);
        // Watched before it is sent, as a client's future is.
        let client = self.client()?;
        let future = client.sent_future(id);
        if let Err(e) = self.send_all(vec![env]) {
            client.unwatch(id);
            return Err(e);
        }
        Ok(future)
    }

    fn send<R: DeserializeOwned>(&self, id: TaskId, sig: TypedSignature<R>) -> Result<TaskId> {
        let env = self.envelope(id, sig)?;
        self.send_all(vec![env])?;
        Ok(id)
    }

    fn envelope<R: DeserializeOwned>(
        &self,
        id: TaskId,
        sig: TypedSignature<R>,
    ) -> Result<crate::Envelope> {
        sig.check()?;
        let mut env = self.host().app.envelope(sig.into_signature());
        env.id = id;
        env.flow = vec![spawned_frame(
            Some(self.info.id),
            self.info.root,
            self.info.scope,
        )];
        Ok(env)
    }

    /// In a scope, holds the children back to be counted and sent with this task's outcome
    /// (see the module docs); outside one, sends them now, each id once.
    fn send_all(&self, mut envs: Vec<crate::Envelope>) -> Result<()> {
        // Two keys spawned twice in one call are one task.
        let mut seen = std::collections::HashSet::new();
        envs.retain(|e| seen.insert(e.id));
        if envs.is_empty() {
            return Ok(());
        }
        match self.info.scope {
            Some(scope) => {
                self.host()
                    .hold(self.info.id, scope, self.info.attempt > 1, envs);
                Ok(())
            }
            None => self.host().app.backend().driver().enqueue_once(&envs),
        }
    }
}
