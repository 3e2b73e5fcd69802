//! What a running task knows about itself: its id, the task that spawned it, the root of its
//! tree and the scope it belongs to — set by the worker around the task's body (Dask's
//! `get_worker()` / `get_client()` start here).
//!
//! The worker also leaves a [`SlotGate`] in the context: a blocking wait inside the task gives
//! its slot back to the worker for the length of the wait and retakes it after (Dask's
//! `secede`/`rejoin`, done implicitly), so a tree of parents waiting on their children cannot
//! take every slot and deadlock.

use std::any::Any;
use std::cell::RefCell;
use std::sync::atomic::AtomicU32;
use std::sync::Arc;

use crate::TaskId;

/// Where a worker's slots are counted: a task that blocks gives its slot back, then retakes it.
pub trait SlotGate: Send + Sync {
    /// The task stops counting against the worker's concurrency (it is about to block).
    fn give_back(&self);
    /// The task counts again (its wait is over). Never blocks: the worker may run one task
    /// over its concurrency for a moment and reserves nothing new until it is back under.
    fn retake(&self);
}

/// What a runner lends the tasks it runs (a worker: its broker), for the layer that knows its
/// type to take back out ([`as_any`](Host::as_any)), and told before a task blocks.
pub trait Host: Any + Send + Sync {
    /// On the task's thread, before a blocking wait: what the task has held back to send with
    /// its outcome (the children it spawned) goes now, since the wait may be for them.
    fn before_wait(&self, task: &TaskInfo);
    /// The host as `Any`, to downcast to the runner's type.
    fn as_any(&self) -> &dyn Any;
}

/// The running task's identity and what the worker running it lends it.
pub struct TaskInfo {
    /// The task's id.
    pub id: TaskId,
    /// The task that spawned it, if a task did.
    pub parent: Option<TaskId>,
    /// The first task of its tree (its own id for a task nobody spawned).
    pub root: TaskId,
    /// The scope whose join waits for it, if any.
    pub scope: Option<TaskId>,
    /// Which delivery of the task this is (1 for the first): a task delivered again may find
    /// what its earlier run half did.
    pub attempt: u32,
    /// The worker's slot counter, if it lends one.
    pub slots: Option<Arc<dyn SlotGate>>,
    /// Whatever the runner shares with the task (a worker: its broker), for the layer that
    /// knows its type to take back out.
    pub host: Option<Arc<dyn Host>>,
    /// Children spawned so far: the next child's number, which fixes its id, so a task that
    /// runs again spawns the same ids.
    pub spawned: AtomicU32,
}

impl std::fmt::Debug for TaskInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskInfo")
            .field("id", &self.id)
            .field("parent", &self.parent)
            .field("root", &self.root)
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}

thread_local! {
    static CURRENT: RefCell<Option<Arc<TaskInfo>>> = const { RefCell::new(None) };
}

/// Runs `f` with `info` as this thread's current task (restored after, even on a panic).
pub fn with_task<R>(info: Arc<TaskInfo>, f: impl FnOnce() -> R) -> R {
    struct Restore(Option<Arc<TaskInfo>>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let prev = self.0.take();
            CURRENT.with(|c| *c.borrow_mut() = prev);
        }
    }
    let prev = CURRENT.with(|c| c.borrow_mut().replace(info));
    let _restore = Restore(prev);
    f()
}

/// The task running on this thread, when a worker runs it.
pub fn current() -> Option<Arc<TaskInfo>> {
    CURRENT.with(|c| c.borrow().clone())
}

/// Runs `f`, a blocking wait, with the current task's slot given back to its worker for the
/// length of the wait (nothing to give back outside a worker's task), after telling the
/// task's [`Host`] (it sends the children the task held back).
pub fn seceded<R>(f: impl FnOnce() -> R) -> R {
    struct Rejoin(Arc<dyn SlotGate>);
    impl Drop for Rejoin {
        fn drop(&mut self) {
            self.0.retake();
        }
    }
    let task = current();
    if let Some(t) = &task {
        if let Some(h) = &t.host {
            h.before_wait(t);
        }
    }
    let gate = task.and_then(|t| t.slots.clone());
    let _rejoin = gate.map(|g| {
        g.give_back();
        Rejoin(g)
    });
    f()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicI64, Ordering};

    struct Count(AtomicI64);
    impl SlotGate for Count {
        fn give_back(&self) {
            self.0.fetch_sub(1, Ordering::SeqCst);
        }
        fn retake(&self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn a_wait_gives_the_slot_back_for_its_length() {
        assert!(current().is_none());
        let slots = Arc::new(Count(AtomicI64::new(1)));
        let id = TaskId::new();
        let info = Arc::new(TaskInfo {
            id,
            parent: None,
            root: id,
            scope: None,
            attempt: 1,
            slots: Some(slots.clone()),
            host: None,
            spawned: AtomicU32::new(0),
        });
        with_task(info, || {
            assert_eq!(current().map(|t| t.id), Some(id));
            let inside = seceded(|| slots.0.load(Ordering::SeqCst));
            assert_eq!(inside, 0, "given back while waiting");
            assert_eq!(slots.0.load(Ordering::SeqCst), 1, "retaken after");
        });
        assert!(current().is_none(), "restored after the task");
        assert_eq!(seceded(|| 7), 7, "nothing to give back outside a task");
    }
}
