//! Where outcomes are kept: result records, workflow joins, blobs and counters.

use std::time::Duration;

use lovage_core::TaskId;

use crate::{JoinEntry, Result, ResultRecord};

/// Where outcomes are kept.
pub trait ResultStore: Send + Sync {
    /// Stores a batch of records, replacing earlier ones for the same ids where they
    /// [supersede](ResultRecord::supersedes) them: a record from an older attempt, or an
    /// unfinished one over a finished one, is dropped (a stale run's outcome). Only stored final
    /// records wake waiters.
    fn store(&self, records: &[ResultRecord]) -> Result<()>;

    /// The record for `id`, if any (an unknown id is PENDING to a client).
    fn get(&self, id: TaskId) -> Result<Option<ResultRecord>>;

    /// The records for many ids at once, in order (one round trip where the backend allows).
    fn get_many(&self, ids: &[TaskId]) -> Result<Vec<Option<ResultRecord>>> {
        ids.iter().map(|id| self.get(*id)).collect()
    }

    /// Waits until `id` reaches a final state or `timeout` passes; returns what is known then.
    fn wait(&self, id: TaskId, timeout: Duration) -> Result<Option<ResultRecord>>;

    /// Waits until at least one of `ids` has a final record or `timeout` passes, and returns
    /// every id's record as last read, in order: how one thread watches many tasks (a
    /// [`Client`](crate::Client)'s futures) instead of a thread per task. This default polls
    /// [`get_many`](Self::get_many) with a growing pause (1 to 20 ms); backends that can
    /// block on a change do.
    fn wait_any(&self, ids: &[TaskId], timeout: Duration) -> Result<Vec<Option<ResultRecord>>> {
        let deadline = std::time::Instant::now() + timeout;
        let mut pause = Duration::from_millis(1);
        loop {
            let recs = self.get_many(ids)?;
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if any_final(&recs) || left.is_zero() {
                return Ok(recs);
            }
            std::thread::sleep(pause.min(left));
            pause = (pause * 2).min(Duration::from_millis(20));
        }
    }

    /// Records each entry's `value` as member `index` of the join `id` of `size` members
    /// (recording the same index again replaces it), in one step where the backend allows.
    /// For each entry, in order: once all `size` members of its join are in, every value in
    /// index order — on that call and any later one — else `None`. Joins are kept for
    /// [`ONCE_TTL`](crate::ONCE_TTL).
    fn join(&self, entries: &[JoinEntry<'_>]) -> Result<Vec<Option<Vec<Vec<u8>>>>>;

    /// Keeps `bytes` under `key` for [`ONCE_TTL`](crate::ONCE_TTL) (a workflow's long chain, stored once instead
    /// of in every step's message). Writing the same key again replaces it.
    fn put_blob(&self, key: TaskId, bytes: &[u8]) -> Result<()>;

    /// What [`ResultStore::put_blob`] kept under `key`, if it is still there.
    fn get_blob(&self, key: TaskId) -> Result<Option<Vec<u8>>>;

    /// Adds `by` to the counter `key` atomically and returns the new value.
    fn incr(&self, key: &str, by: i64) -> Result<i64>;

    /// Deletes the records of `ids` now (Celery's `AsyncResult.forget()`), with the join and
    /// the blob kept under the same ids (a group's or a workflow's, which its record stands
    /// for); returns how many records went. An unknown id is skipped. A task still running
    /// stores its record again when it finishes.
    fn forget(&self, ids: &[TaskId]) -> Result<u64>;

    /// The release of the client that sent `ids` (see `futures/release.rs`): in one atomic
    /// step, [forgets](Self::forget) the ids whose [holders dict](holders_dict) has no holder
    /// entry, and marks the others with [`SENDER_RELEASED`] so that their last holder forgets
    /// them ([`unshare`](Self::unshare)). Returns the ids kept because another client holds
    /// them. No default: a forget between the check and the mark would free a held result.
    fn forget_unshared(&self, ids: &[TaskId]) -> Result<Vec<TaskId>>;

    /// A client that shared `id` (it found another client's record) lets go of it: in one
    /// atomic step, removes its entry `holder` from the [holders dict](holders_dict), and when
    /// only [`SENDER_RELEASED`] is left (the sender released the task, and this was its last
    /// other holder), forgets the record and clears the dict. Returns whether it forgot.
    fn unshare(&self, id: TaskId, holder: &[u8]) -> Result<bool>;

    /// Deletes records past their expiry; returns how many (0 for a backend whose keys expire
    /// by themselves, or when another process on the same storage purges for now, as on
    /// SQLite). An expired record is never returned by `get`, purged or not.
    fn purge_expired(&self) -> Result<u64>;
}

/// The shared dict of the clients that share task `id`'s record without having sent it (key:
/// a per-client token), plus [`SENDER_RELEASED`] once the sender has released it. Written
/// only when a keyed submit finds another client's task: the common path never touches it.
pub fn holders_dict(id: TaskId) -> String {
    format!("lovage.holders.{id}")
}

/// The entry of a [holders dict](holders_dict) that says the task's sender released it (not a
/// client token: those are 36-character ids).
pub const SENDER_RELEASED: &[u8] = b"sender-released";

/// True if a holders dict's keys name a holder (not only [`SENDER_RELEASED`]).
pub(crate) fn any_holder<'a>(mut keys: impl Iterator<Item = &'a [u8]>) -> bool {
    keys.any(|k| k != SENDER_RELEASED)
}

/// True if any of `recs` is a final record.
pub(crate) fn any_final(recs: &[Option<ResultRecord>]) -> bool {
    recs.iter().flatten().any(|r| r.state.is_final())
}
