//! The storage interface of the queue, in five traits. [`Broker`] is a task's life, in the
//! order a task lives it (Oban's engine is the model): sent, reserved, renewed while it runs,
//! then completed, retried, snoozed, discarded or revoked. Around it, what is not a task's
//! life has a trait of its own: [`Locks`] (a leader among beats), [`RateLimits`] (slots shared
//! by every worker), [`Presence`] (which workers are alive) and [`Admin`] (what operators look
//! at and clear). A backend implements all five plus [`ResultStore`](crate::ResultStore); the
//! blanket [`Driver`](crate::Driver) names that whole.

use std::time::Duration;

use lovage_core::{TaskError, TaskId};

use crate::{DeadLetter, Delivery, Envelope, Lease, QueueStats, Result, Revoked, WorkerInfo};

/// Where tasks wait, named by a task's life. Every method is safe to call from several threads
/// and processes.
///
/// A reserved task is held by a [`Lease`]; [`complete`](Broker::complete),
/// [`retry`](Broker::retry), [`snooze`](Broker::snooze), [`discard`](Broker::discard) and
/// [`renew`](Broker::renew) act only on the delivery their lease names, so a worker whose lease
/// ran out cannot touch a task delivered again elsewhere.
pub trait Broker: Send + Sync {
    /// Sends a batch of tasks; when it returns, they survive a crash of every process.
    fn enqueue(&self, batch: &[Envelope]) -> Result<()>;

    /// Sends each envelope whose id was never sent before through `enqueue_once` (ids are
    /// remembered for [`ONCE_TTL`](crate::ONCE_TTL)); a repeat is dropped. Workflows send their
    /// next steps this way, so a step that runs twice does not start its continuation twice.
    fn enqueue_once(&self, batch: &[Envelope]) -> Result<()>;

    /// Leases up to `max` ready tasks from `queues` for `lease`, highest priority first and FIFO
    /// within a priority; tasks whose lease ran out are ready again. Waits up to `wait` when
    /// none is ready. A task queued with an [`Affinity`](crate::Affinity) is left to its
    /// worker until the affinity's steal time; [`reserve_as`](Broker::reserve_as) is how a
    /// worker takes its own at once.
    fn reserve(
        &self,
        queues: &[String],
        max: usize,
        lease: Duration,
        wait: Duration,
    ) -> Result<Vec<Delivery>> {
        self.reserve_as(None, queues, max, lease, wait)
    }

    /// [`reserve`](Broker::reserve) by the worker `worker` (its id): the ready tasks of
    /// `queues` queued for it (an [`Affinity`](crate::Affinity) naming it whose steal time has
    /// not come) first, oldest first, then the shared queues as `reserve` takes them. No
    /// worker (`None`) takes only what every worker may.
    fn reserve_as(
        &self,
        worker: Option<&str>,
        queues: &[String],
        max: usize,
        lease: Duration,
        wait: Duration,
    ) -> Result<Vec<Delivery>>;

    /// Pushes the leases' deadlines to `lease` from now while their tasks run; returns the
    /// leases that are no longer held (completed, revoked, or taken over after expiry).
    fn renew(&self, leases: &[Lease], lease: Duration) -> Result<Vec<Lease>>;

    /// Removes finished tasks (Celery's ack). A lease from an older delivery is ignored.
    fn complete(&self, leases: &[Lease]) -> Result<()>;

    /// Sends `next` as [`Broker::enqueue_once`] does, then completes `leases`: a finished
    /// workflow step and the steps it starts. SQLite does both in one transaction.
    fn complete_and_send(&self, leases: &[Lease], next: &[Envelope]) -> Result<()> {
        if !next.is_empty() {
            self.enqueue_once(next)?;
        }
        self.complete(leases)
    }

    /// Returns a task that failed to its queue, ready after `delay` (0: at once); the next
    /// delivery counts as another attempt (Celery's nack with requeue).
    fn retry(&self, lease: &Lease, delay: Duration) -> Result<()>;

    /// Puts a reserved task back until `delay` from now without counting the delivery as an
    /// attempt (a task held back by a rate limit was not tried). A stale lease does nothing.
    fn snooze(&self, lease: &Lease, delay: Duration) -> Result<()>;

    /// Moves a task that failed for the last time to the dead letters and removes it.
    fn discard(&self, lease: &Lease, envelope: &Envelope, error: &TaskError) -> Result<()>;

    /// Adds a dead letter for a task the broker no longer holds: one acknowledged when it
    /// started (`acks_late = false`) that then failed for the last time. Unlike
    /// [`discard`](Broker::discard) it takes no lease and removes nothing.
    fn bury(&self, envelope: &Envelope, error: &TaskError) -> Result<()>;

    /// Revokes a task: removes it if waiting and records it REVOKED in the same step (one
    /// operation, so a waiter never sees it PENDING for good); flags it if a worker holds it.
    /// A waiting workflow step stays, recorded REVOKED, for the worker that gets it to drop it
    /// and fail the rest of its workflow.
    fn revoke(&self, id: TaskId) -> Result<Revoked>;

    /// Which of `ids` have been revoked (a worker asks before it starts them, and for the
    /// leases it lost while they ran).
    fn revoked(&self, ids: &[TaskId]) -> Result<Vec<TaskId>>;

    /// `task-rejected` events (no worker named) for the messages this process's reserves set
    /// aside since the last call because they do not decode (dead-lettered with a FAILURE
    /// record, kind `CorruptMessage`), oldest first; a bounded number is kept. A worker that
    /// publishes events takes them after each reserve: empty, at the cost of one atomic load,
    /// when nothing was set aside. Backends that cannot hold undecodable messages keep none.
    fn take_rejected(&self) -> Vec<crate::ops::Event> {
        Vec::new()
    }
}

/// Named locks with a time to live, held by one holder at a time.
pub trait Locks: Send + Sync {
    /// Takes or renews the lock `name` for `holder` until `ttl` from now; true when `holder`
    /// holds it, false while someone else does. A lock not renewed in time lapses, so a holder
    /// that dies hands over within `ttl` (`lovage beat` elects its leader this way).
    fn lock(&self, name: &str, holder: &str, ttl: Duration) -> Result<bool>;

    /// Gives the lock `name` up if `holder` has it.
    fn unlock(&self, name: &str, holder: &str) -> Result<()>;
}

/// Rate limits shared by every worker of a broker.
pub trait RateLimits: Send + Sync {
    /// Books up to `n` runs under the rate limit `key`: one run per `interval`, none saved up
    /// while idle (Celery's bucket of one), slots no further than `horizon` ahead. Returns
    /// when each booked run may start (from now, in order) and how long until slots free up
    /// for the rest. The backends share [`gcra`](crate::gcra).
    fn acquire(
        &self,
        key: &str,
        interval: Duration,
        n: u32,
        horizon: Duration,
    ) -> Result<(Vec<Duration>, Duration)>;
}

/// Which workers are alive, from their heartbeats.
pub trait Presence: Send + Sync {
    /// Records or refreshes a worker.
    fn heartbeat(&self, worker: &WorkerInfo) -> Result<()>;

    /// Removes a worker's record (clean shutdown).
    fn unregister(&self, worker_id: &str) -> Result<()>;

    /// Workers seen within `within`.
    fn workers(&self, within: Duration) -> Result<Vec<WorkerInfo>>;
}

/// What operators look at and clear.
pub trait Admin: Send + Sync {
    /// Counts per queue, for every queue that holds a task.
    fn stats(&self) -> Result<Vec<QueueStats>>;

    /// Removes every waiting (not reserved) task of `queue`; returns how many.
    fn purge(&self, queue: &str) -> Result<u64>;

    /// The most recent dead letters, newest first.
    fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>>;
}
