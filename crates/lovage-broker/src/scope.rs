//! Scope joins across hosts (the seeds' `queue.join()`): `app.scope(|s| s.spawn(..))` returns
//! when every task spawned inside it — by the caller, or by those tasks through
//! [`ctx().spawn`](crate::ctx::TaskCtx::spawn), transitively — has finished, with counts and
//! failures.
//!
//! The count lives in the broker, as two shared dicts per scope: `all` maps each member to its
//! state (`p` pending, `d` done, `f` failed) and `open` holds the members not finished. A
//! member **rises** before it is enqueued: `all[m]` goes from absent to `p` (compare-and-set),
//! then `m` enters `open`, then the member is sent with `enqueue_once`. It **falls** when its
//! task settles for good, before the task's lease is completed: `all[m]` goes from `p` to `d`
//! or `f` (compare-and-set), then `m` leaves `open`. Both are idempotent per member, so a
//! redelivered task, or a parent that runs again and spawns the same (derived) ids, never
//! counts twice: the chord joins' discipline. The join is done when `open` is empty, which
//! cannot happen early: a member's children rise while it runs, so it is still open then.
//!
//! SQLite keeps the open set as a number (a `counters` row per scope, read by
//! [`Driver::scope_open`](crate::Driver::scope_open)) rather than a dict: a rise there is
//! always sent in its own transaction, so it needs no `open` entry to repair, and each entry
//! cost a page crawled two writes at random places of a large table (docs/benchmarks.md). Its
//! rise also skips `enqueue_once`'s mark: the `all` entry, written with the send, already
//! makes a member's send happen once.
//!
//! SQLite and Redis do a rise with its send in one transaction (one script):
//! [`Driver::enqueue_in_scope`](crate::Driver::enqueue_in_scope); and a fall with its task's
//! record and completion in one: [`Driver::store_fall_complete`](crate::Driver::store_fall_complete).
//! Elsewhere (the memory broker, and the defaults of those two methods) each step is one
//! atomic call of [`SharedState`], in the order above, and a spawner delivered again repairs
//! a rise its earlier run left half done.

use std::time::{Duration, Instant};

use lovage_core::canvas::Frame;
use lovage_core::{TaskError, TaskId, TypedSignature};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::shared::SharedState;
use crate::{App, Backend, Broker, BrokerError, Envelope, Result};

/// A member's state in `all`: pending (counted, not finished).
pub(crate) const PENDING: &[u8] = b"p";
/// A member's state in `all`: succeeded.
pub(crate) const DONE: &[u8] = b"d";
/// A member's state in `all`: failed for good (or revoked).
pub(crate) const FAILED: &[u8] = b"f";

/// The shared dict of every member of `scope` and its state.
pub(crate) fn dict_all(scope: TaskId) -> String {
    format!("lovage.scope.{scope}.all")
}

/// The shared dict of the members of `scope` not finished.
pub(crate) fn dict_open(scope: TaskId) -> String {
    format!("lovage.scope.{scope}.open")
}

/// A member's key in both dicts: its id's 16 bytes.
pub(crate) fn member_key(member: TaskId) -> [u8; 16] {
    *member.as_uuid().as_bytes()
}

/// A member of a scope that settled for good: its count falls with its task's record and
/// completion ([`Driver::store_fall_complete`](crate::Driver::store_fall_complete)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScopeFall {
    /// The scope it counts in.
    pub scope: TaskId,
    /// The member (its task id).
    pub member: TaskId,
    /// True when it succeeded; false when it failed for good or was revoked.
    pub ok: bool,
}

/// Children a task spawned into its scope and held back to send with its outcome
/// ([`Driver::spawn_store_fall_complete`](crate::Driver::spawn_store_fall_complete)): they rise
/// in the scope's count and are sent in the same write as their parent's record and fall.
#[derive(Debug, Clone)]
pub struct ScopeSpawn {
    /// The scope they count in.
    pub scope: TaskId,
    /// The children, in spawn order.
    pub children: Vec<crate::Envelope>,
    /// Whether the parent is a delivery after the first, which mends a rise its earlier run
    /// may have left half done (see [`Driver::enqueue_in_scope`](crate::Driver::enqueue_in_scope)).
    pub repair: bool,
}

/// What [`rise`] found for a member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rose {
    /// It is counted and pending: send it (with `enqueue_once`, as a repeat may have sent it).
    Send,
    /// It was counted before (by another spawner, which sends it) or has finished: send
    /// nothing.
    Finished,
}

/// Counts `members` in `scope` before they are enqueued (three calls for the lot: insert the
/// absent ones as pending, put those in `open`, then, with `repair`, look at the rest).
///
/// A member already counted was counted by whoever spawned it first, and that spawner is still
/// open until it has sent it, so it is skipped — unless `repair` is set: a spawner running
/// again after its worker died (or a client) may have counted a member and died before it
/// reached `open` or the queue, so it puts a still-pending member in `open` again and sends
/// it again (`enqueue_once` drops a repeat).
pub(crate) fn rise_many<S: SharedState + ?Sized>(
    shared: &S,
    scope: TaskId,
    members: &[TaskId],
    repair: bool,
) -> Result<Vec<Rose>> {
    let (all, open) = (dict_all(scope), dict_open(scope));
    let entries: Vec<(Vec<u8>, Vec<u8>)> = members
        .iter()
        .map(|m| (m.as_uuid().as_bytes().to_vec(), PENDING.to_vec()))
        .collect();
    let inserted = shared.dict_insert_absent(&all, &entries)?;
    let fresh: Vec<(Vec<u8>, Vec<u8>)> = entries
        .iter()
        .zip(&inserted)
        .filter(|(_, new)| **new)
        .map(|((k, _), _)| (k.clone(), Vec::new()))
        .collect();
    if !fresh.is_empty() {
        shared.dict_set(&open, &fresh)?;
    }
    let mut out = Vec::with_capacity(members.len());
    for ((key, _), new) in entries.iter().zip(inserted) {
        out.push(if new {
            Rose::Send
        } else if repair {
            repair_one(shared, &all, &open, key)?
        } else {
            Rose::Finished
        });
    }
    Ok(out)
}

/// A member counted before by a spawner that may have died before `open`: put it there again
/// if it is still pending, then look once more, since it may have fallen meanwhile (its fall
/// writes `all` before it clears `open`, so one of the two of us clears it).
fn repair_one<S: SharedState + ?Sized>(
    shared: &S,
    all: &str,
    open: &str,
    key: &[u8],
) -> Result<Rose> {
    if shared.dict_get(all, key)?.as_deref() != Some(PENDING) {
        return Ok(Rose::Finished);
    }
    shared.dict_set(open, &[(key.to_vec(), Vec::new())])?;
    if shared.dict_get(all, key)?.as_deref() != Some(PENDING) {
        shared.dict_remove(open, key)?;
        return Ok(Rose::Finished);
    }
    Ok(Rose::Send)
}

/// Counts `batch` in `scope` and sends what was counted, step by step (three shared-dict
/// calls, then one `enqueue_once`): the default of
/// [`Driver::enqueue_in_scope`](crate::Driver::enqueue_in_scope). For each envelope, true
/// when it was sent.
pub fn rise_and_send<D: SharedState + Broker + ?Sized>(
    driver: &D,
    scope: TaskId,
    batch: &[Envelope],
    repair: bool,
) -> Result<Vec<bool>> {
    let ids: Vec<TaskId> = batch.iter().map(|e| e.id).collect();
    let rose = rise_many(driver, scope, &ids, repair)?;
    let sent: Vec<bool> = rose.iter().map(|r| *r == Rose::Send).collect();
    let send: Vec<Envelope> = batch
        .iter()
        .zip(&sent)
        .filter(|(_, s)| **s)
        .map(|(e, _)| e.clone())
        .collect();
    if !send.is_empty() {
        driver.enqueue_once(&send)?;
    }
    Ok(sent)
}

/// `member` of `scope` settled for good (`ok`: it succeeded): it no longer counts. Idempotent.
pub fn fall(backend: &Backend, scope: TaskId, member: TaskId, ok: bool) -> Result<()> {
    backend
        .driver()
        .scope_fall(&[ScopeFall { scope, member, ok }])
}

/// [`fall`] on any shared state (two calls: `all` first, then `open`).
pub fn fall_in<S: SharedState + ?Sized>(shared: &S, f: &ScopeFall) -> Result<()> {
    let key = member_key(f.member);
    let state = if f.ok { DONE } else { FAILED };
    shared.dict_compare_and_set(&dict_all(f.scope), &key, Some(PENDING), Some(state))?;
    shared.dict_remove(&dict_open(f.scope), &key)?;
    Ok(())
}

/// The frame a spawned task carries: who spawned it, its tree's root, its scope.
pub(crate) fn spawned_frame(parent: Option<TaskId>, root: TaskId, scope: Option<TaskId>) -> Frame {
    Frame::Spawned {
        parent,
        root,
        scope,
    }
}

/// The id of the task spawned under `key` in `scope` (by the scope or by a task inside it),
/// the same in every process: to read its record or wait on it.
pub fn keyed_id(scope: TaskId, key: &str) -> TaskId {
    let scope = scope.as_uuid().as_bytes().to_vec();
    crate::futures::derived_id(&[b"lovage-scope-key:", &scope, key.as_bytes()])
}

/// How a scope ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScopeReport<R> {
    /// The scope's id.
    pub id: TaskId,
    /// What the scope's closure returned.
    pub value: R,
    /// Tasks counted in the scope (each once, however often it was spawned or delivered).
    pub spawned: u64,
    /// Those that succeeded.
    pub succeeded: u64,
    /// Those that failed for good (or were revoked), with their errors where the result store
    /// still holds them.
    pub failed: Vec<(TaskId, Option<TaskError>)>,
}

/// Sends tasks into a scope: see [`App::scope`].
#[derive(Debug)]
pub struct Scope<'a> {
    app: &'a App,
    id: TaskId,
}

impl Scope<'_> {
    /// The scope's id (tasks inside see it as `ctx().scope_id()`).
    pub fn id(&self) -> TaskId {
        self.id
    }

    /// Sends `sig` into the scope; returns its task id.
    pub fn spawn<R: DeserializeOwned>(&self, sig: TypedSignature<R>) -> Result<TaskId> {
        let id = TaskId::new();
        self.send(id, sig)
    }

    /// Sends `sig` into the scope under `key`: its id is derived from the scope and the key, so
    /// a second spawn of the same key in this scope (by anyone) is the same task, counted and
    /// run once.
    pub fn spawn_keyed<R: DeserializeOwned>(
        &self,
        key: &str,
        sig: TypedSignature<R>,
    ) -> Result<TaskId> {
        self.send(keyed_id(self.id, key), sig)
    }

    fn send<R: DeserializeOwned>(&self, id: TaskId, sig: TypedSignature<R>) -> Result<TaskId> {
        sig.check()?;
        let mut env = self.app.envelope(sig.into_signature());
        env.id = id;
        env.flow = vec![spawned_frame(None, id, Some(self.id))];
        // `repair`: a client that spawns the same key again may be retrying a rise that died
        // half done.
        self.app
            .backend()
            .driver()
            .enqueue_in_scope(self.id, &[env], true)?;
        Ok(id)
    }
}

impl App {
    /// Runs `f` with a [`Scope`], then waits until every task spawned in it — by `f`, or by
    /// those tasks through `ctx().spawn`, transitively — has finished, and reports the counts
    /// and failures (the seeds' `queue.join()`, across hosts). Waits without a limit; see
    /// [`App::scope_timeout`].
    pub fn scope<R>(&self, f: impl FnOnce(&Scope<'_>) -> R) -> Result<ScopeReport<R>> {
        self.scope_timeout(None, f)
    }

    /// [`App::scope`] that gives up after `timeout` (`None`: never) with
    /// [`BrokerError::Timeout`]; the tasks go on.
    pub fn scope_timeout<R>(
        &self,
        timeout: Option<Duration>,
        f: impl FnOnce(&Scope<'_>) -> R,
    ) -> Result<ScopeReport<R>> {
        let scope = Scope {
            app: self,
            id: TaskId::new(),
        };
        let value = f(&scope);
        join(self.backend(), scope.id, timeout)?;
        let report = report(self, scope.id, value)?;
        // The counts are read; the scope's dicts go (a repeat of a finished member finds
        // nothing to change).
        self.backend().driver().scope_forget(scope.id)?;
        Ok(report)
    }
}

/// Waits until no member of `scope` is open (polling, 1 to 20 ms apart).
fn join(backend: &Backend, scope: TaskId, timeout: Option<Duration>) -> Result<()> {
    let started = Instant::now();
    let mut pause = Duration::from_millis(1);
    loop {
        let open = backend.driver().scope_open(scope)?;
        if open == 0 {
            return Ok(());
        }
        if let Some(t) = timeout {
            if started.elapsed() >= t {
                return Err(BrokerError::Timeout(format!(
                    "scope {scope}: {open} tasks still open after {t:?}"
                )));
            }
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

fn report<R>(app: &App, scope: TaskId, value: R) -> Result<ScopeReport<R>> {
    let entries = app.backend().shared().dict_entries(&dict_all(scope))?;
    let mut out = ScopeReport {
        id: scope,
        value,
        spawned: entries.len() as u64,
        succeeded: 0,
        failed: Vec::new(),
    };
    let mut failed_ids = Vec::new();
    for (key, state) in &entries {
        let id = uuid::Uuid::from_slice(key)
            .map(TaskId::from_uuid)
            .map_err(|e| BrokerError::Corrupt(format!("scope {scope}: a member key: {e}")))?;
        match state.as_slice() {
            DONE => out.succeeded += 1,
            FAILED => failed_ids.push(id),
            other => {
                return Err(BrokerError::Corrupt(format!(
                    "scope {scope}: member {id} in state {other:?} after the join"
                )))
            }
        }
    }
    let records = app.backend().results().get_many(&failed_ids)?;
    out.failed = failed_ids
        .into_iter()
        .zip(records)
        .map(|(id, r)| (id, r.and_then(|r| r.error)))
        .collect();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::MemoryBackend;
    use lovage_core::{Codec, Signature};

    fn envelope() -> Envelope {
        let mut sig = Signature::new("scope.task", &[1], Codec::Json).unwrap();
        sig.options.queue = Some("scoped".into());
        Envelope::from_signature(sig)
    }

    /// The step-by-step rise (the default of `enqueue_in_scope`, the memory broker's): a
    /// spawner that died after counting a member in `all` but before `open` and the queue
    /// leaves it pending and not open; delivered again (`repair`), it opens and sends it.
    #[test]
    fn a_repair_mends_a_rise_left_half_done() {
        let b = MemoryBackend::new();
        let scope = TaskId::new();
        let m = envelope();
        let key = member_key(m.id).to_vec();
        assert_eq!(
            b.dict_insert_absent(&dict_all(scope), &[(key.clone(), PENDING.to_vec())])
                .unwrap(),
            vec![true]
        );
        assert_eq!(
            crate::Driver::scope_open(&*b, scope).unwrap(),
            0,
            "half done"
        );
        assert_eq!(
            rise_and_send(&*b, scope, std::slice::from_ref(&m), false).unwrap(),
            vec![false]
        );
        assert_eq!(
            rise_and_send(&*b, scope, std::slice::from_ref(&m), true).unwrap(),
            vec![true]
        );
        assert_eq!(crate::Driver::scope_open(&*b, scope).unwrap(), 1);
        let got = b
            .reserve(
                &["scoped".to_owned()],
                10,
                Duration::from_secs(60),
                Duration::ZERO,
            )
            .unwrap();
        assert_eq!(got.len(), 1, "sent by the repair");
        crate::Driver::scope_fall(
            &*b,
            &[ScopeFall {
                scope,
                member: m.id,
                ok: true,
            }],
        )
        .unwrap();
        assert_eq!(crate::Driver::scope_open(&*b, scope).unwrap(), 0);
        assert_eq!(
            b.dict_get(&dict_all(scope), &key).unwrap().as_deref(),
            Some(DONE)
        );
    }
}
