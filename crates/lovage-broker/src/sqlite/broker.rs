//! The broker half: a task's life ([`Broker`]: enqueue, reserve, renew, complete, retry,
//! snooze, discard, revoke) and the side traits ([`Locks`], [`RateLimits`], [`Presence`],
//! [`Admin`]). Every write is one IMMEDIATE transaction, so a batch lands whole or not at all.

use std::time::{Duration, Instant};

use lovage_core::{TaskError, TaskId};
use rusqlite::{params, OptionalExtension};

use super::results::{insert_result, insert_results};
use super::rows::{dead_letter, encode_tasks, row_to_envelope_or_corrupt, TaskColumns};
use super::schema::{READY, RESERVED, SCHEDULED};
use super::tally::{Tally, LIVE_IN};
use super::SqliteBackend;
use crate::corrupt::CorruptMessage;
use crate::scope::{self as scope_dicts, ScopeFall};
use crate::{
    Admin, Broker, DeadLetter, Delivery, Driver, Envelope, Lease, Locks, Presence, QueueStats,
    RateLimits, Result, ResultRecord, Revoked, Timestamp, WorkerInfo, ONCE_TTL, WORKER_RECORD_TTL,
};

/// How long a revoked id is remembered.
pub(super) const REVOKE_MEMORY: Duration = Duration::from_secs(24 * 3600);

impl SqliteBackend {
    /// Inserts tasks in one transaction; with `once`, only ids never sent `once` before.
    fn insert_tasks(&self, op: &'static str, batch: &[Envelope], once: bool) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let encoded = encode_tasks(batch).map_err(|e| self.fail(op, e))?;
        self.write(op, |tx| {
            let mut tally = Tally::default();
            insert_encoded(tx, batch, &encoded, once, &mut tally)?;
            tally.flush(tx)
        })
    }

    /// A held task back to its queue after `delay`; `attempted` says whether this delivery
    /// counts as an attempt (a nack) or not (a deferral: the next delivery keeps its number).
    fn requeue(
        &self,
        op: &'static str,
        lease: &Lease,
        delay: Duration,
        attempted: bool,
    ) -> Result<()> {
        let (state, due) = if delay.is_zero() {
            (READY, 0)
        } else {
            (SCHEDULED, (Timestamp::now() + delay).as_millis())
        };
        self.write(op, |tx| {
            let changed = tx
                .prepare_cached(
                    "UPDATE tasks SET state = ?1, due = ?2, attempts = attempts - ?5, fence = 0 \
                     WHERE id = ?3 AND fence = ?4 AND fence != 0",
                )?
                .execute(params![
                    state,
                    due,
                    lease.id.to_string(),
                    fence_param(lease),
                    i64::from(!attempted)
                ])?;
            let tally = Tally {
                retried: i64::from(attempted) * changed as i64,
                ..Tally::default()
            };
            tally.flush(tx)
        })
    }

    /// Adds a dead letter for `envelope`: with a lease, only if that lease still holds the task,
    /// which it then removes (`discard`); without one, for a task the broker no longer holds
    /// (`bury`).
    fn dead_letter(
        &self,
        lease: Option<&Lease>,
        envelope: &Envelope,
        error: &TaskError,
    ) -> Result<()> {
        let env =
            serde_json::to_string(envelope).map_err(|e| self.fail("dead-letter", e.into()))?;
        let err = serde_json::to_string(error).map_err(|e| self.fail("dead-letter", e.into()))?;
        self.write("dead-letter", |tx| {
            // A stale lease: the task lives on elsewhere, so it is not dead.
            if let Some(lease) = lease {
                let Some(queue) = delete_held(tx, lease)? else {
                    return Ok(());
                };
                let mut tally = Tally::default();
                tally.live_in(&queue, -1);
                tally.flush(tx)?;
            }
            insert_dead_letter(
                tx,
                &envelope.id.to_string(),
                &env,
                &err,
                Timestamp::now(),
                self.dead_letters_kept(),
            )
        })
    }

    /// One attempt at reserving; also returns when the next scheduled task or lease falls due.
    fn try_reserve(
        &self,
        worker: Option<&str>,
        queues: &[String],
        max: usize,
        lease: Duration,
    ) -> Result<(Vec<Delivery>, Option<Timestamp>)> {
        let now = Timestamp::now();
        let until = (now + lease).as_millis();
        let (out, next_due, set_aside) = self.write_quietly("reserve", |tx| {
            tx.prepare_cached("UPDATE tasks SET state = 0 WHERE state != 0 AND due <= ?1")?
                .execute([now.as_millis()])?;
            let paused = paused_queues(tx)?;
            let open: Vec<&String> = queues.iter().filter(|q| !paused.contains(q)).collect();
            // The tasks queued for this worker first, oldest first (by their partial index).
            let mut mine: Vec<(i64, i64)> = Vec::new();
            if let Some(w) = worker {
                let mut pick_mine = tx.prepare_cached(
                    "SELECT priority, seq FROM tasks WHERE affinity = ?1 AND queue = ?2 AND state = 2 \
                     ORDER BY seq LIMIT ?3",
                )?;
                for q in &open {
                    let rows = pick_mine
                        .query_map(params![w, q, max as i64], |r| Ok((r.get(0)?, r.get(1)?)))?;
                    for row in rows {
                        mine.push(row?);
                    }
                }
                mine.sort_by_key(|c| c.1);
                mine.truncate(max);
            }
            // Per queue, the best candidates by index; then the best of them all.
            let mut candidates: Vec<(i64, i64)> = Vec::new();
            let mut pick = tx.prepare_cached(
                "SELECT priority, seq FROM tasks WHERE state = 0 AND queue = ?1 ORDER BY priority DESC, seq LIMIT ?2",
            )?;
            for q in &open {
                let rows = pick.query_map(params![q, max as i64], |r| Ok((r.get(0)?, r.get(1)?)))?;
                for row in rows {
                    candidates.push(row?);
                }
            }
            candidates.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
            candidates.truncate(max - mine.len());
            mine.append(&mut candidates);
            let candidates = mine;
            let mut fence = if candidates.is_empty() {
                0
            } else {
                draw_fences(tx, candidates.len() as i64)?
            };
            let mut take = tx.prepare_cached(
                "UPDATE tasks SET state = 1, due = ?1, attempts = attempts + 1, fence = ?3, received = ?4, affinity = NULL \
                 WHERE seq = ?2 AND state != 1 \
                 RETURNING id, queue, priority, attempts, task, codec, args, options, eta, expires, created, flow",
            )?;
            let mut out = Vec::with_capacity(candidates.len());
            let mut set_aside = Vec::new();
            for (_, seq) in candidates {
                fence += 1;
                // `state != 1`: a candidate listed twice (a queue named twice) is taken once.
                let Some(decoded) = take
                    .query_row(params![until, seq, fence, now.as_millis()], row_to_envelope_or_corrupt)
                    .optional()?
                else {
                    continue;
                };
                // Decoded row by row: one that does not decode is dead-lettered here, in the
                // same transaction, and the others are delivered.
                let envelope = match decoded {
                    Ok(envelope) => envelope,
                    Err(bad) => {
                        let mut tally = Tally::default();
                        discard_corrupt(tx, seq, &bad, self.dead_letters_kept(), &mut tally)?;
                        tally.flush(tx)?;
                        set_aside.push(bad);
                        continue;
                    }
                };
                out.push(Delivery {
                    lease: Lease {
                        id: envelope.id,
                        fence: fence as u64,
                    },
                    envelope,
                });
            }
            let next_due: Option<i64> = tx
                .prepare_cached("SELECT min(due) FROM tasks WHERE state != 0")?
                .query_row([], |r| r.get(0))?;
            Ok((out, next_due.map(Timestamp::from_millis), set_aside))
        })?;
        // Told of once the transaction that set them aside committed.
        for bad in &set_aside {
            self.rejected.note(bad);
        }
        Ok((out, next_due))
    }
}

impl Driver for SqliteBackend {
    /// One write transaction: the records and the deletes commit together.
    fn store_and_complete(&self, records: &[ResultRecord], leases: &[Lease]) -> Result<()> {
        if records.is_empty() && leases.is_empty() {
            return Ok(());
        }
        let errors = self.encode_errors(records)?;
        self.write("store results and complete", |tx| {
            let mut tally = Tally::default();
            insert_results(tx, records, &errors, &mut tally)?;
            delete_acked(tx, leases, &mut tally)?;
            tally.flush(tx)
        })
    }

    /// The same transaction, with the events appended as one row.
    fn store_complete_publish(
        &self,
        records: &[ResultRecord],
        leases: &[Lease],
        events: &[crate::ops::Event],
    ) -> Result<()> {
        if events.is_empty() {
            return self.store_and_complete(records, leases);
        }
        let errors = self.encode_errors(records)?;
        let body = crate::ops::event_codec::encode_batch(events)
            .map_err(|e| self.fail("publish events", e.into()))?;
        self.write("store results, complete and publish", |tx| {
            let mut tally = Tally::default();
            insert_results(tx, records, &errors, &mut tally)?;
            delete_acked(tx, leases, &mut tally)?;
            tally.flush(tx)?;
            super::ops::append_events(tx, &body, events.len())
        })
    }

    /// One write transaction: the members are counted, put in the open set and sent
    /// together, so no rise is ever left half done (`repair` only resends a pending one).
    fn enqueue_in_scope(
        &self,
        scope: TaskId,
        batch: &[Envelope],
        repair: bool,
    ) -> Result<Vec<bool>> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let encoded = encode_tasks(batch).map_err(|e| self.fail("enqueue in scope", e))?;
        self.write("enqueue in scope", |tx| {
            rise_and_insert(tx, scope, batch, &encoded, repair)
        })
    }

    /// One write transaction: records, falls, completions and events commit together.
    fn store_fall_complete(
        &self,
        records: &[ResultRecord],
        falls: &[ScopeFall],
        leases: &[Lease],
        events: &[crate::ops::Event],
    ) -> Result<()> {
        self.spawn_store_fall_complete(&[], records, falls, leases, events)
    }

    /// One write transaction: the children's rises and sends, then the records, falls,
    /// completions and events — a page of a crawl and the links it found commit together.
    /// One write transaction for the lot.
    fn scope_fall(&self, falls: &[ScopeFall]) -> Result<()> {
        if falls.is_empty() {
            return Ok(());
        }
        self.write("leave scopes", |tx| fall(tx, falls))
    }

    fn scope_open(&self, scope: TaskId) -> Result<u64> {
        let n: Option<i64> = self
            .conn()
            .query_row(
                "SELECT value FROM counters WHERE key = ?1",
                [open_count_key(scope)],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.err("count a scope's open members", e))?;
        Ok(n.unwrap_or(0).max(0) as u64)
    }

    fn scope_forget(&self, scope: TaskId) -> Result<()> {
        self.write("forget a scope", |tx| {
            tx.execute(
                "DELETE FROM shared_dicts WHERE name = ?1",
                [scope_dicts::dict_all(scope)],
            )?;
            tx.execute(
                "DELETE FROM counters WHERE key = ?1",
                [open_count_key(scope)],
            )?;
            Ok(())
        })
    }

    fn spawn_store_fall_complete(
        &self,
        spawns: &[crate::ScopeSpawn],
        records: &[ResultRecord],
        falls: &[ScopeFall],
        leases: &[Lease],
        events: &[crate::ops::Event],
    ) -> Result<()> {
        if falls.is_empty() && spawns.is_empty() {
            return self.store_complete_publish(records, leases, events);
        }
        let errors = self.encode_errors(records)?;
        let body = crate::ops::event_codec::encode_batch(events)
            .map_err(|e| self.fail("publish events", e.into()))?;
        let encoded = spawns
            .iter()
            .map(|sp| encode_tasks(&sp.children))
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| self.fail("enqueue in scope", e))?;
        self.write("spawn, store results, fall, complete", |tx| {
            for (sp, cols) in spawns.iter().zip(&encoded) {
                rise_and_insert(tx, sp.scope, &sp.children, cols, sp.repair)?;
            }
            let mut tally = Tally::default();
            insert_results(tx, records, &errors, &mut tally)?;
            fall(tx, falls)?;
            delete_acked(tx, leases, &mut tally)?;
            tally.flush(tx)?;
            if events.is_empty() {
                return Ok(());
            }
            super::ops::append_events(tx, &body, events.len())
        })
    }
}

/// The `counters` row holding how many members of `scope` are open (risen, not fallen).
fn open_count_key(scope: TaskId) -> String {
    format!("lovage:scope:{scope}:open")
}

/// Counts each of `batch` in `scope` (its rise) and sends those it counted; for each, true
/// when it was sent (see [`Driver::enqueue_in_scope`]).
///
/// A member's rise and send share this transaction, so a member found pending was sent: with
/// `repair` it is reported sent (a repeat the queue would drop) and nothing is written. So
/// neither the open count's entry nor `enqueue_once`'s mark is needed to send it once.
fn rise_and_insert(
    tx: &rusqlite::Transaction<'_>,
    scope: TaskId,
    batch: &[Envelope],
    encoded: &[TaskColumns],
    repair: bool,
) -> rusqlite::Result<Vec<bool>> {
    let all = scope_dicts::dict_all(scope);
    let mut rise = tx.prepare_cached(
        "INSERT INTO shared_dicts (name, key, value) VALUES (?1, ?2, ?3) \
         ON CONFLICT(name, key) DO NOTHING",
    )?;
    let mut state =
        tx.prepare_cached("SELECT value FROM shared_dicts WHERE name = ?1 AND key = ?2")?;
    let mut sent = Vec::with_capacity(batch.len());
    let (mut envs, mut cols) = (Vec::new(), Vec::new());
    for (e, c) in batch.iter().zip(encoded) {
        let key = scope_dicts::member_key(e.id);
        if rise.execute(params![all, &key[..], scope_dicts::PENDING])? == 1 {
            envs.push(e.clone());
            cols.push(c.clone());
            sent.push(true);
            continue;
        }
        sent.push(
            repair
                && state
                    .query_row(params![all, &key[..]], |r| r.get::<_, Vec<u8>>(0))
                    .optional()?
                    .as_deref()
                    == Some(scope_dicts::PENDING),
        );
    }
    if !envs.is_empty() {
        add_open(tx, scope, envs.len() as i64)?;
    }
    let mut tally = Tally::default();
    insert_encoded(tx, &envs, &cols, false, &mut tally)?;
    tally.flush(tx)?;
    Ok(sent)
}

/// Adds `n` (negative: takes) to the open count of `scope`.
fn add_open(tx: &rusqlite::Transaction<'_>, scope: TaskId, n: i64) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT INTO counters (key, value) VALUES (?1, ?2) \
         ON CONFLICT(key) DO UPDATE SET value = value + excluded.value",
    )?
    .execute(params![open_count_key(scope), n])?;
    Ok(())
}

/// Each member of `falls` is marked done or failed and leaves its scope's open count, once.
fn fall(tx: &rusqlite::Transaction<'_>, falls: &[ScopeFall]) -> rusqlite::Result<()> {
    let mut settle = tx.prepare_cached(
        "UPDATE shared_dicts SET value = ?3 WHERE name = ?1 AND key = ?2 AND value = ?4",
    )?;
    for f in falls {
        let key = scope_dicts::member_key(f.member);
        let state = if f.ok {
            scope_dicts::DONE
        } else {
            scope_dicts::FAILED
        };
        let fell = settle.execute(params![
            scope_dicts::dict_all(f.scope),
            &key[..],
            state,
            scope_dicts::PENDING
        ])?;
        if fell == 1 {
            add_open(tx, f.scope, -1)?;
        }
    }
    Ok(())
}

impl Broker for SqliteBackend {
    fn enqueue(&self, batch: &[Envelope]) -> Result<()> {
        self.insert_tasks("enqueue", batch, false)
    }

    fn enqueue_once(&self, batch: &[Envelope]) -> Result<()> {
        self.insert_tasks("enqueue once", batch, true)
    }

    fn reserve_as(
        &self,
        worker: Option<&str>,
        queues: &[String],
        max: usize,
        lease: Duration,
        wait: Duration,
    ) -> Result<Vec<Delivery>> {
        let deadline = Instant::now() + wait;
        loop {
            let marker = self.change_marker()?;
            let (got, next_due) = self.try_reserve(worker, queues, max, lease)?;
            if !got.is_empty() || Instant::now() >= deadline {
                return Ok(got);
            }
            let until = match next_due {
                Some(t) => deadline.min(Instant::now() + t.until().max(Duration::from_millis(1))),
                None => deadline,
            };
            self.wait_for_change(until, marker)?;
        }
    }

    fn renew(&self, leases: &[Lease], lease: Duration) -> Result<Vec<Lease>> {
        let until = (Timestamp::now() + lease).as_millis();
        self.write("extend lease", |tx| {
            let mut upd = tx.prepare_cached(
                "UPDATE tasks SET due = ?1 WHERE id = ?2 AND fence = ?3 AND fence != 0 AND state = 1 \
                 AND NOT EXISTS (SELECT 1 FROM revoked WHERE id = ?2)",
            )?;
            let mut lost = Vec::new();
            for l in leases {
                if upd.execute(params![until, l.id.to_string(), fence_param(l)])? == 0 {
                    lost.push(*l);
                }
            }
            Ok(lost)
        })
    }

    fn complete(&self, leases: &[Lease]) -> Result<()> {
        self.write("complete", |tx| {
            let mut tally = Tally::default();
            delete_acked(tx, leases, &mut tally)?;
            tally.flush(tx)
        })
    }

    fn complete_and_send(&self, leases: &[Lease], next: &[Envelope]) -> Result<()> {
        let encoded = encode_tasks(next).map_err(|e| self.fail("ack and send", e))?;
        self.write("ack and send", |tx| {
            let mut tally = Tally::default();
            insert_encoded(tx, next, &encoded, true, &mut tally)?;
            delete_acked(tx, leases, &mut tally)?;
            tally.flush(tx)
        })
    }

    fn retry(&self, lease: &Lease, delay: Duration) -> Result<()> {
        self.requeue("retry", lease, delay, true)
    }

    fn snooze(&self, lease: &Lease, delay: Duration) -> Result<()> {
        self.requeue("snooze", lease, delay, false)
    }

    fn discard(&self, lease: &Lease, envelope: &Envelope, error: &TaskError) -> Result<()> {
        self.dead_letter(Some(lease), envelope, error)
    }

    fn bury(&self, envelope: &Envelope, error: &TaskError) -> Result<()> {
        self.dead_letter(None, envelope, error)
    }

    fn revoke(&self, id: TaskId) -> Result<Revoked> {
        let now = Timestamp::now();
        let forget_before = now.as_millis() - REVOKE_MEMORY.as_millis() as i64;
        self.write("revoke", |tx| {
            // A few of the oldest at a time, by index: never a scan under the write lock
            // (`purge_expired` forgets the rest).
            tx.prepare_cached(
                "DELETE FROM revoked WHERE id IN \
                 (SELECT id FROM revoked WHERE at < ?1 ORDER BY at LIMIT 100)",
            )?
            .execute([forget_before])?;
            tx.execute(
                "INSERT OR REPLACE INTO revoked (id, at) VALUES (?1, ?2)",
                params![id.to_string(), now.as_millis()],
            )?;
            let found: Option<(i64, bool, String, i64)> = tx
                .query_row(
                    "SELECT state, flow IS NULL, task, attempts FROM tasks WHERE id = ?1",
                    [id.to_string()],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
                )
                .optional()?;
            let Some((state, plain, task, attempts)) = found else {
                return Ok(Revoked::NotFound);
            };
            if state == RESERVED {
                return Ok(Revoked::Running);
            }
            // A workflow step stays, to be delivered and dropped by a worker, which then fails
            // the rest of its workflow.
            let mut tally = Tally::default();
            if plain {
                let gone: Option<String> = tx
                    .prepare_cached("DELETE FROM tasks WHERE id = ?1 RETURNING queue")?
                    .query_row([id.to_string()], |r| r.get(0))
                    .optional()?;
                if let Some(queue) = gone {
                    tally.live_in(&queue, -1);
                }
            }
            // Recorded in the same transaction: a waiter never sees it PENDING for good.
            let record = ResultRecord::revoked_waiting(id, task, attempts.max(0) as u32);
            let error = record
                .error
                .as_ref()
                .map(serde_json::to_string)
                .transpose()
                .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
            insert_result(tx, &record, error.as_deref(), &mut tally)?;
            tally.flush(tx)?;
            Ok(Revoked::Pending)
        })
    }

    fn take_rejected(&self) -> Vec<crate::ops::Event> {
        self.rejected.take()
    }

    fn revoked(&self, ids: &[TaskId]) -> Result<Vec<TaskId>> {
        let conn = self.conn();
        let mut q = conn
            .prepare_cached("SELECT 1 FROM revoked WHERE id = ?1")
            .map_err(|e| self.err("revoked", e))?;
        let mut out = Vec::new();
        for id in ids {
            if q.exists([id.to_string()])
                .map_err(|e| self.err("revoked", e))?
            {
                out.push(*id);
            }
        }
        Ok(out)
    }
}

impl Locks for SqliteBackend {
    fn lock(&self, name: &str, holder: &str, ttl: Duration) -> Result<bool> {
        let now = Timestamp::now();
        let until = (now + ttl).as_millis();
        self.write("lock", |tx| {
            // Taken when free, lapsed, or already ours.
            let changed = tx
                .prepare_cached(
                    "INSERT INTO locks (name, holder, until) VALUES (?1, ?2, ?3) \
                     ON CONFLICT(name) DO UPDATE SET holder = excluded.holder, until = excluded.until \
                     WHERE locks.holder = excluded.holder OR locks.until <= ?4",
                )?
                .execute(params![name, holder, until, now.as_millis()])?;
            Ok(changed == 1)
        })
    }

    fn unlock(&self, name: &str, holder: &str) -> Result<()> {
        self.write("unlock", |tx| {
            tx.prepare_cached("DELETE FROM locks WHERE name = ?1 AND holder = ?2")?
                .execute(params![name, holder])?;
            Ok(())
        })
    }
}

impl RateLimits for SqliteBackend {
    fn acquire(
        &self,
        key: &str,
        interval: Duration,
        n: u32,
        horizon: Duration,
    ) -> Result<(Vec<Duration>, Duration)> {
        let (slots, next) = self.write("rate limit", |tx| {
            let tat: Option<i64> = tx
                .prepare_cached("SELECT tat FROM rate_limits WHERE key = ?1")?
                .query_row([key], |r| r.get(0))
                .optional()?;
            let (slots, next, tat) = crate::gcra(
                tat,
                crate::now_micros(),
                interval.as_micros() as i64,
                n,
                horizon.as_micros() as i64,
            );
            tx.prepare_cached("INSERT OR REPLACE INTO rate_limits (key, tat) VALUES (?1, ?2)")?
                .execute(params![key, tat])?;
            Ok((slots, next))
        })?;
        Ok(crate::slots_from_micros(&slots, next))
    }
}

impl Presence for SqliteBackend {
    fn heartbeat(&self, worker: &WorkerInfo) -> Result<()> {
        let info = serde_json::to_string(worker).map_err(|e| self.fail("heartbeat", e.into()))?;
        self.write("heartbeat", |tx| {
            tx.prepare_cached(
                "INSERT OR REPLACE INTO workers (id, info, heartbeat) VALUES (?1, ?2, ?3)",
            )?
            .execute(params![worker.id, info, worker.heartbeat.as_millis()])?;
            // Records of workers gone without unregistering (killed with -9).
            tx.prepare_cached("DELETE FROM workers WHERE heartbeat < ?1")?
                .execute([Timestamp::now().as_millis() - WORKER_RECORD_TTL.as_millis() as i64])?;
            Ok(())
        })
    }

    fn unregister(&self, worker_id: &str) -> Result<()> {
        self.write("unregister", |tx| {
            tx.execute("DELETE FROM workers WHERE id = ?1", [worker_id])?;
            Ok(())
        })
    }

    fn workers(&self, within: Duration) -> Result<Vec<WorkerInfo>> {
        let since = Timestamp::now().as_millis() - within.as_millis() as i64;
        let conn = self.conn();
        let mut q = conn
            .prepare("SELECT info FROM workers WHERE heartbeat >= ?1 ORDER BY id")
            .map_err(|e| self.err("workers", e))?;
        let rows = q
            .query_map([since], |r| r.get::<_, String>(0))
            .map_err(|e| self.err("workers", e))?;
        let mut out = Vec::new();
        for row in rows {
            let info = row.map_err(|e| self.err("workers", e))?;
            out.extend(WorkerInfo::decode_or_skip(&info));
        }
        Ok(out)
    }
}

impl Admin for SqliteBackend {
    fn stats(&self) -> Result<Vec<QueueStats>> {
        // Rows per queue from the counters the writes keep; the scheduled and reserved ones
        // (few beside the ready ones) counted through their partial index; ready is the rest.
        // Counting every row was a full scan: ~0.9 s per call at a million waiting tasks.
        let conn = self.conn();
        let err = |e| self.err("stats", e);
        let mut by: std::collections::BTreeMap<String, QueueStats> = Default::default();
        let mut live = conn
            .prepare_cached(
                "SELECT substr(key, ?1), value FROM counters WHERE key >= ?2 AND key < ?3 AND value > 0",
            )
            .map_err(err)?;
        let upper = format!("{};", LIVE_IN.trim_end_matches(':'));
        let rows = live
            .query_map(params![LIVE_IN.len() as i64 + 1, LIVE_IN, upper], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
            })
            .map_err(err)?;
        for row in rows {
            let (queue, n) = row.map_err(err)?;
            let s = by.entry(queue.clone()).or_insert_with(|| QueueStats {
                queue,
                ..Default::default()
            });
            s.ready = n.max(0) as u64;
        }
        let mut held = conn
            .prepare_cached(
                "SELECT queue, state, count(*) FROM tasks WHERE state != 0 GROUP BY queue, state",
            )
            .map_err(err)?;
        let rows = held
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            })
            .map_err(err)?;
        for row in rows {
            let (queue, state, n) = row.map_err(err)?;
            let s = by.entry(queue.clone()).or_insert_with(|| QueueStats {
                queue,
                ..Default::default()
            });
            count(s, state, n);
            s.ready = s.ready.saturating_sub(n.max(0) as u64);
        }
        Ok(by
            .into_values()
            .filter(|s| s.ready + s.scheduled + s.reserved > 0)
            .collect())
    }

    fn purge(&self, queue: &str) -> Result<u64> {
        self.write("purge", |tx| {
            let gone = tx.execute("DELETE FROM tasks WHERE queue = ?1 AND state != 1", [queue])?;
            let mut tally = Tally::default();
            tally.live_in(queue, -(gone as i64));
            tally.flush(tx)?;
            Ok(gone as u64)
        })
    }

    fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>> {
        let conn = self.conn();
        let mut q = conn
            .prepare("SELECT envelope, error, at FROM dead_letters ORDER BY seq DESC LIMIT ?1")
            .map_err(|e| self.err("dead letters", e))?;
        let rows = q
            .query_map([limit as i64], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            })
            .map_err(|e| self.err("dead letters", e))?;
        let mut out = Vec::new();
        for row in rows {
            let (env, err, at) = row.map_err(|e| self.err("dead letters", e))?;
            out.push(dead_letter(&env, &err, at)?);
        }
        Ok(out)
    }
}

/// Inserts encoded tasks in `tx`; with `once`, only ids never sent `once` before.
fn insert_encoded(
    tx: &rusqlite::Transaction<'_>,
    batch: &[Envelope],
    encoded: &[TaskColumns],
    once: bool,
    tally: &mut Tally,
) -> rusqlite::Result<()> {
    let now = Timestamp::now();
    let mut ins = tx.prepare_cached(
        "INSERT OR REPLACE INTO tasks (id, queue, priority, state, due, attempts, task, codec, args, options, eta, expires, created, flow, affinity) \
         SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15 \
         WHERE ?14 IS NOT NULL OR NOT EXISTS (SELECT 1 FROM revoked WHERE id = ?1)",
    )?;
    let mut mark =
        tx.prepare_cached("INSERT OR IGNORE INTO sent_once (id, until) VALUES (?1, ?2)")?;
    let until = (now + ONCE_TTL).as_millis();
    for (e, (options, flow)) in batch.iter().zip(encoded) {
        if once && mark.execute(params![e.id.to_string(), until])? == 0 {
            continue;
        }
        // A task queued for a worker waits as a scheduled row due at its steal time; that
        // worker's reserve takes it before then by its `affinity`.
        let affine = e.affinity_at(now);
        let (state, due) = match (e.eta, affine) {
            (Some(t), _) if t > now => (SCHEDULED, t.as_millis()),
            (_, Some(a)) => (SCHEDULED, a.until.as_millis()),
            _ => (READY, 0),
        };
        let added = ins.execute(params![
            e.id.to_string(),
            e.queue,
            e.priority as i64,
            state,
            due,
            e.attempts as i64,
            e.task,
            e.codec.as_str(),
            e.args,
            options,
            e.eta.map(Timestamp::as_millis),
            e.expires.map(Timestamp::as_millis),
            e.created.as_millis(),
            flow,
            affine.map(|a| a.worker.as_str()),
        ])? as i64;
        tally.sent += added;
        tally.live_in(&e.queue, added);
    }
    Ok(())
}

/// Deletes the tasks `leases` still hold: their delivery is the last one, even if its lease ran
/// out, as long as nobody took the task since.
fn delete_acked(
    tx: &rusqlite::Transaction<'_>,
    leases: &[Lease],
    tally: &mut Tally,
) -> rusqlite::Result<()> {
    for l in leases {
        if let Some(queue) = delete_held(tx, l)? {
            tally.live_in(&queue, -1);
        }
    }
    Ok(())
}

/// The paused queues (a short table, read once per reserve).
fn paused_queues(tx: &rusqlite::Transaction<'_>) -> rusqlite::Result<Vec<String>> {
    let mut q = tx.prepare_cached("SELECT queue FROM paused")?;
    let rows = q.query_map([], |r| r.get(0))?;
    rows.collect()
}

/// Deletes the task `lease` still holds; its queue if it did, `None` for a stale lease.
fn delete_held(tx: &rusqlite::Transaction<'_>, lease: &Lease) -> rusqlite::Result<Option<String>> {
    tx.prepare_cached(
        "DELETE FROM tasks WHERE id = ?1 AND fence = ?2 AND fence != 0 RETURNING queue",
    )?
    .query_row(params![lease.id.to_string(), fence_param(lease)], |r| {
        r.get(0)
    })
    .optional()
}

/// Draws `n` fencing tokens; returns the one before the first (tokens are that + 1 ..= + n).
fn draw_fences(tx: &rusqlite::Transaction<'_>, n: i64) -> rusqlite::Result<i64> {
    let last: i64 = tx
        .prepare_cached(
            "INSERT INTO meta (key, value) VALUES ('fence', ?1) \
             ON CONFLICT (key) DO UPDATE SET value = value + ?1 RETURNING value",
        )?
        .query_row([n], |r| r.get(0))?;
    Ok(last - n)
}

/// A lease's token as SQLite stores it (tokens stay far below `i64::MAX`).
fn fence_param(lease: &Lease) -> i64 {
    i64::try_from(lease.fence).unwrap_or(-1)
}

/// Adds `n` tasks in `state` to a queue's counts.
fn count(s: &mut QueueStats, state: i64, n: i64) {
    match state {
        READY => s.ready += n as u64,
        RESERVED => s.reserved += n as u64,
        _ => s.scheduled += n as u64,
    }
}

/// Takes a task whose row does not decode out of its queue (row `seq`), into the dead letters
/// with the decode error, and records FAILURE for its id where the id is readable.
fn discard_corrupt(
    tx: &rusqlite::Transaction<'_>,
    seq: i64,
    bad: &CorruptMessage,
    kept: usize,
    tally: &mut Tally,
) -> rusqlite::Result<()> {
    bad.log();
    let dead = bad.dead_letter();
    let json = |v: serde_json::Result<String>| {
        v.map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))
    };
    let error = json(serde_json::to_string(&dead.error))?;
    let queue: Option<String> = tx
        .prepare_cached("DELETE FROM tasks WHERE seq = ?1 RETURNING queue")?
        .query_row([seq], |r| r.get(0))
        .optional()?;
    if let Some(queue) = queue {
        tally.live_in(&queue, -1);
    }
    insert_dead_letter(
        tx,
        &bad.raw_id,
        &json(serde_json::to_string(&dead.envelope))?,
        &error,
        dead.at,
        kept,
    )?;
    if let Some(r) = bad.record() {
        insert_result(tx, &r, Some(&error), tally)?;
    }
    Ok(())
}

/// Adds a dead letter and drops the oldest past the newest `kept` (by `seq`, which only
/// grows: a range of the primary key, never a scan).
fn insert_dead_letter(
    tx: &rusqlite::Transaction<'_>,
    id: &str,
    envelope: &str,
    error: &str,
    at: Timestamp,
    kept: usize,
) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT INTO dead_letters (id, envelope, error, at) VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![id, envelope, error, at.as_millis()])?;
    let newest = tx.last_insert_rowid();
    tx.prepare_cached("DELETE FROM dead_letters WHERE seq <= ?1")?
        .execute([newest.saturating_sub(i64::try_from(kept).unwrap_or(i64::MAX))])?;
    Ok(())
}
