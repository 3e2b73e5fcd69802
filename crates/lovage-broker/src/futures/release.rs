//! Releasing results nobody holds (Dask's release when the last future is gone).
//!
//! Every future on a task this client sent holds the task's record through a [`Hold`] (one per
//! future, shared by its clones), counted per task id in the watch. When the last hold of a
//! finished task goes, or a task whose holds are all gone finishes, its id is *released*; the
//! watcher thread forgets the released records in batches (once [`MIN_BATCH`] wait or the
//! oldest has waited [`LINGER`]: a read of their waiting lists, then one `forget`), off the
//! caller's thread. A released task that a call sent with
//! `submit_after` still waits for (its waiting list is not empty) keeps its record; it is
//! checked again every [`RECHECK`] for [`GIVE_UP`], then left to its time to live. Tasks handed
//! to `fire_and_forget` are not counted: their records live out their time to live.
//!
//! Holds are counted per client; a task another client sent is *shared*. A keyed submit that
//! does not hold its task already first registers the client in the task's holders dict
//! ([`holders_dict`](crate::holders_dict), keyed by a token per client), then reads the
//! record: found, the client holds it as a sharer; not found, it removes its entry and sends
//! the task itself. The sender's pass forgets with
//! [`forget_unshared`](crate::ResultStore::forget_unshared), which in one atomic step skips
//! (and marks with [`SENDER_RELEASED`](crate::SENDER_RELEASED)) every id with a holder entry;
//! a sharer's pass lets go with [`unshare`](crate::ResultStore::unshare), which removes its
//! entry and, when only the sender's mark is left, forgets the record. So the record goes
//! with the last hold in any client, and `map`, `submit` and a keyed submit of a task this
//! client sent never touch the holders dicts. A sharer's future handed to `fire_and_forget` (or
//! cancelled) only removes its entry, and a client dropped with shared futures alive leaves
//! its entry: those records live out their time to live.

use std::sync::Arc;
use std::time::{Duration, Instant};

use lovage_core::TaskId;

use super::watcher::{Watch, Watched};
use super::Holds;
use crate::Backend;

/// Most released records one pass forgets: the watcher's other work waits for one batch only.
const BATCH: usize = 4096;
/// Released records are forgotten once this many wait, or the oldest has waited [`LINGER`]:
/// a few large deletes rather than one per pass (on SQLite each is a write transaction
/// beside the workers').
const MIN_BATCH: usize = 4096;
/// See [`MIN_BATCH`].
const LINGER: Duration = Duration::from_millis(500);
/// How often a released record still waited for is checked again.
const RECHECK: Duration = Duration::from_millis(500);
/// How long a released record still waited for is checked before its time to live takes over.
const GIVE_UP: Duration = Duration::from_secs(60);

/// The live holds on one task's record, and whether the task was seen finished.
#[derive(Debug, Default)]
pub(crate) struct Held {
    count: usize,
    finished: bool,
    /// Another client sent the task: its release removes this client's holder entry
    /// ([`ResultStore::unshare`](crate::ResultStore::unshare)) instead of forgetting.
    shared: bool,
    /// Which counting this is: a hold from before a `fire_and_forget` (or `cancel`) ended the
    /// counting does not count against a later one.
    generation: u64,
}

/// Released records still waited for: when each was first found so, and when to check next.
#[derive(Debug, Default)]
pub(crate) struct Deferred {
    ids: Vec<(TaskId, Instant)>,
    next: Option<Instant>,
}

impl Deferred {
    /// When the watcher should look again, if anything is deferred.
    pub(super) fn due(&self) -> Option<Instant> {
        self.next
    }
}

/// A future's hold on its task's record (shared by the future's clones); dropping the last
/// hold of a finished task releases its record.
pub(crate) struct Hold {
    id: TaskId,
    generation: u64,
    watch: Arc<Watch>,
}

impl Drop for Hold {
    fn drop(&mut self) {
        let mut st = self.watch.lock();
        let Some(h) = st
            .held
            .get_mut(&self.id)
            .filter(|h| h.generation == self.generation)
        else {
            return; // handed to fire_and_forget
        };
        h.count -= 1;
        if h.count > 0 {
            return;
        }
        if h.finished {
            let shared = h.shared;
            st.held.remove(&self.id);
            if !st.closed {
                st.release_id(self.id, shared);
                drop(st);
                self.watch.changed.notify_one();
            }
        } else if !Watch::is_pending(&st, self.id) {
            // Cancelled, or never sent: there is nothing to wait for.
            st.held.remove(&self.id);
        }
        // Otherwise the watcher releases it when it sees the task finish.
    }
}

impl Watched {
    fn release_id(&mut self, id: TaskId, shared: bool) {
        if shared {
            self.unsharing.insert(id);
        }
        self.released.push(id);
        self.released_since.get_or_insert_with(Instant::now);
    }

    /// When the watcher next has releasing to do, if it has any.
    pub(super) fn release_due(&self) -> Option<Instant> {
        let released = self.released_since.map(|t| {
            if self.released.len() >= MIN_BATCH {
                t
            } else {
                t + LINGER
            }
        });
        match (released, self.deferred.due()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The watcher saw `id` finish: a task nobody holds any more is released now.
    pub(super) fn finished(&mut self, id: TaskId) {
        if let Some(h) = self.held.get_mut(&id) {
            if h.count == 0 {
                let shared = h.shared;
                self.held.remove(&id);
                self.release_id(id, shared);
            } else {
                h.finished = true;
            }
        }
    }
}

impl Watch {
    /// Starts watching `id` for a new future and gives it a hold on the task's record, in one
    /// step; with [`Holds::IfHeld`], the hold only when the client holds the record already (a
    /// future on a task sent elsewhere holds nothing). A new count of holds is shared with
    /// [`Holds::Shared`]; a hold joins an existing count as it is.
    pub(super) fn add_holding(
        self: &Arc<Self>,
        id: TaskId,
        pending: Box<dyn super::watcher::Pending>,
        holds: Holds,
    ) -> Option<Arc<Hold>> {
        let mut st = self.lock();
        let hold = (holds != Holds::IfHeld || st.held.contains_key(&id)).then(|| {
            st.generations += 1;
            let next = st.generations;
            let h = st.held.entry(id).or_insert_with(|| Held {
                generation: next,
                shared: holds == Holds::Shared,
                ..Held::default()
            });
            h.count += 1;
            Arc::new(Hold {
                id,
                generation: h.generation,
                watch: self.clone(),
            })
        });
        self.add_locked(st, id, pending);
        hold
    }

    /// True while some future holds `id`'s result.
    pub(super) fn holds(&self, id: TaskId) -> bool {
        self.lock().held.contains_key(&id)
    }

    /// How this client holds `id`, if it does: `Some(false)` for a task it sent (held, or
    /// released and not forgotten yet), `Some(true)` for one it shares (see
    /// [`Client::submit_keyed`](super::Client::submit_keyed)). Scans the released ids: for a
    /// keyed submit only.
    pub(super) fn hold_kind(&self, id: TaskId) -> Option<bool> {
        let st = self.lock();
        if let Some(h) = st.held.get(&id) {
            return Some(h.shared);
        }
        if st.unsharing.contains(&id) {
            return Some(true);
        }
        let released = st.released.contains(&id) || st.deferred.ids.iter().any(|(i, _)| *i == id);
        released.then_some(false)
    }

    /// The shared hold on `id` becomes a sender's (its keyed submit found no record, so the
    /// client sends the task itself).
    pub(super) fn hold_as_sender(&self, id: TaskId) {
        if let Some(h) = self.lock().held.get_mut(&id) {
            h.shared = false;
        }
    }

    /// Stops counting the holds on `id` (fire-and-forget): its record lives its time to live.
    /// True if the holds were shared (the caller removes this client's holder entry).
    pub(super) fn unhold_all(&self, id: TaskId) -> bool {
        self.lock().held.remove(&id).is_some_and(|h| h.shared)
    }

    /// Forgets the released records that no call waits for and no hold came back to; those
    /// still waited for are checked again later. Runs on the watcher thread.
    pub(super) fn release(&self, backend: &Backend) {
        let now = Instant::now();
        // Each id with when it was first found still waited for (now, for a new one).
        let ids: Vec<(TaskId, Instant)> = {
            let mut st = self.lock();
            let due = st.released.len() >= MIN_BATCH
                || st
                    .released_since
                    .is_some_and(|t| now.duration_since(t) >= LINGER);
            let take = if due { st.released.len().min(BATCH) } else { 0 };
            let mut ids: Vec<_> = st.released.drain(..take).map(|id| (id, now)).collect();
            if take > 0 {
                st.released_since = (!st.released.is_empty()).then_some(now);
            }
            if st.deferred.next.is_some_and(|t| t <= now) {
                ids.append(&mut st.deferred.ids);
                st.deferred.next = None;
            }
            ids
        };
        if ids.is_empty() {
            return;
        }
        let _forgetting = self.forgetting.lock().unwrap_or_else(|p| p.into_inner());
        let dicts: Vec<String> = ids.iter().map(|&(id, _)| super::waiting_dict(id)).collect();
        let lists = match backend.shared().dict_entries_many(&dicts) {
            Ok(lists) => lists,
            Err(e) => {
                tracing::warn!(error = %e, count = ids.len(), "could not read the waiting lists of released results; they live out their time to live");
                return;
            }
        };
        let mut free = Vec::with_capacity(ids.len());
        let mut unshared = Vec::new();
        let mut given_up = Vec::new();
        let mut busy = Vec::new();
        {
            let mut st = self.lock();
            for ((id, first), list) in ids.into_iter().zip(lists) {
                if st.held.contains_key(&id) {
                    // Held again (a keyed submit found it): the new count says how.
                    st.unsharing.remove(&id);
                    continue;
                }
                let shared = st.unsharing.remove(&id);
                if list.is_empty() {
                    if shared {
                        unshared.push(id);
                    } else {
                        free.push(id);
                    }
                } else if now.duration_since(first) < GIVE_UP {
                    if shared {
                        st.unsharing.insert(id);
                    }
                    busy.push((id, first));
                } else if shared {
                    // Left to its time to live, as a sender's: only this client's entry goes.
                    given_up.push(id);
                }
            }
        }
        if !free.is_empty() {
            match backend.results().forget_unshared(&free) {
                Ok(kept) if !kept.is_empty() => {
                    tracing::debug!(
                        count = kept.len(),
                        "released results other clients share are kept for them"
                    );
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, count = free.len(), "could not forget released results; they live out their time to live");
                }
            }
        }
        for id in given_up {
            super::leave_holders(backend, id, &self.token);
        }
        for id in unshared {
            if let Err(e) = backend.results().unshare(id, &self.token) {
                tracing::warn!(error = %e, %id, "could not let go of a shared result; it lives out its time to live");
            }
        }
        if !busy.is_empty() {
            let mut st = self.lock();
            st.deferred.ids.append(&mut busy);
            st.deferred.next = Some(now + RECHECK);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::futures::watcher::{raw_value, Fetched, Typed};

    fn pending() -> Box<dyn crate::futures::watcher::Pending> {
        let (completer, _handle) = lovage_pool::TaskHandle::<Fetched<Vec<u8>>>::promise();
        Box::new(Typed::new(completer, raw_value))
    }

    /// A shared hold is let go of as shared (the pass unshares it, not forgets it), and a
    /// keyed submit before the pass joins it as shared; a sender's released id is its own.
    #[test]
    fn a_shared_hold_is_released_as_shared() {
        let w = Watch::new();
        let (shared, sent, other) = (TaskId::new(), TaskId::new(), TaskId::new());
        let s = w.add_holding(shared, pending(), Holds::Shared).unwrap();
        let o = w.add_holding(sent, pending(), Holds::Sent).unwrap();
        assert_eq!(
            (w.hold_kind(shared), w.hold_kind(sent)),
            (Some(true), Some(false))
        );
        assert_eq!(w.hold_kind(other), None);
        w.lock().finished(shared);
        w.lock().finished(sent);
        drop((s, o));
        assert_eq!(w.lock().released, vec![shared, sent]);
        assert!(w.lock().unsharing.contains(&shared));
        assert!(!w.lock().unsharing.contains(&sent));
        // Released, not forgotten yet: still this client's, as before.
        assert_eq!(
            (w.hold_kind(shared), w.hold_kind(sent)),
            (Some(true), Some(false))
        );
        // A keyed submit that finds no record sends the task: its hold becomes a sender's.
        let t = w.add_holding(other, pending(), Holds::Shared).unwrap();
        w.hold_as_sender(other);
        assert_eq!(w.hold_kind(other), Some(false));
        assert!(!w.unhold_all(other), "not shared any more");
        drop(t);
    }

    /// A hold from before `fire_and_forget` ended the counting, dropped after a new future
    /// on the same task started another, does not count against the new one.
    #[test]
    fn an_old_hold_does_not_count_against_a_new_one() {
        let w = Watch::new();
        let id = TaskId::new();
        let old = w.add_holding(id, pending(), Holds::Sent).unwrap();
        w.unhold_all(id);
        let new = w.add_holding(id, pending(), Holds::Sent).unwrap();
        w.lock().finished(id);
        drop(old);
        assert!(w.holds(id), "the new hold was counted down");
        assert!(w.lock().released.is_empty());
        drop(new);
        assert_eq!(
            w.lock().released,
            vec![id],
            "the last hold of a finished task"
        );
    }
}
