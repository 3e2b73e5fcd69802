//! The result-store half: result records, waits for them, workflow joins, blobs, counters and
//! the purge of what has expired.

use std::time::{Duration, Instant};

use lovage_core::TaskId;
use rusqlite::{params, OptionalExtension};

use super::broker::REVOKE_MEMORY;
use super::rows::row_to_result;
use super::tally::Tally;
use super::SqliteBackend;
use crate::corrupt::unreadable_result;
use crate::{JoinEntry, Locks, Result, ResultRecord, ResultStore, Timestamp, ONCE_TTL};

/// Deletes `id`'s record, join and blob in `tx`; 1 if there was a record.
fn forget_in(tx: &rusqlite::Transaction<'_>, id: TaskId) -> rusqlite::Result<u64> {
    let key = id.to_string();
    let gone = tx
        .prepare_cached("DELETE FROM results WHERE id = ?1")?
        .execute([&key])?;
    tx.prepare_cached("DELETE FROM joins WHERE id = ?1")?
        .execute([&key])?;
    tx.prepare_cached("DELETE FROM join_counts WHERE id = ?1")?
        .execute([&key])?;
    tx.prepare_cached("DELETE FROM blobs WHERE id = ?1")?
        .execute([&key])?;
    Ok(gone as u64)
}

impl ResultStore for SqliteBackend {
    fn store(&self, records: &[ResultRecord]) -> Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        let errors = self.encode_errors(records)?;
        self.write("store results", |tx| {
            let mut tally = Tally::default();
            insert_results(tx, records, &errors, &mut tally)?;
            tally.flush(tx)
        })
    }

    fn get(&self, id: TaskId) -> Result<Option<ResultRecord>> {
        let mut got = read_results(&self.conn(), &[id]).map_err(|e| self.err("get result", e))?;
        Ok(got.pop().flatten())
    }

    /// One read transaction for the lot. Each statement on its own takes and gives back
    /// SQLite's shared lock (an `fcntl` and the WAL index's lock): a client watching 100,000
    /// futures spent most of its thread's time there, in the kernel.
    fn get_many(&self, ids: &[TaskId]) -> Result<Vec<Option<ResultRecord>>> {
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Deferred)
            .map_err(|e| self.err("get results", e))?;
        let got = read_results(&tx, ids).map_err(|e| self.err("get results", e))?;
        tx.finish().map_err(|e| self.err("get results", e))?;
        Ok(got)
    }

    fn wait(&self, id: TaskId, timeout: Duration) -> Result<Option<ResultRecord>> {
        let deadline = Instant::now() + timeout;
        loop {
            let marker = self.change_marker()?;
            let rec = self.get(id)?;
            if rec.as_ref().is_some_and(|r| r.state.is_final()) || Instant::now() >= deadline {
                return Ok(rec);
            }
            self.wait_for_change(deadline, marker)?;
        }
    }

    fn wait_any(&self, ids: &[TaskId], timeout: Duration) -> Result<Vec<Option<ResultRecord>>> {
        let deadline = Instant::now() + timeout;
        loop {
            let marker = self.change_marker()?;
            let recs = self.get_many(ids)?;
            if crate::results::any_final(&recs) || Instant::now() >= deadline {
                return Ok(recs);
            }
            self.wait_for_change(deadline, marker)?;
        }
    }

    fn join(&self, entries: &[JoinEntry<'_>]) -> Result<Vec<Option<Vec<Vec<u8>>>>> {
        let until = (Timestamp::now() + ONCE_TTL).as_millis();
        self.write("join", |tx| {
            let mut update =
                tx.prepare_cached("UPDATE joins SET value = ?3 WHERE id = ?1 AND idx = ?2")?;
            let mut insert = tx.prepare_cached(
                "INSERT INTO joins (id, idx, value, until) VALUES (?1, ?2, ?3, ?4)",
            )?;
            // Every member stored pushes the join's `until` (on its count row, which the purge
            // goes by) to ONCE_TTL from now, as Redis's PEXPIRE does: a chord whose members
            // trickle in over more than ONCE_TTL is not purged midway.
            let mut bump = tx.prepare_cached(
                "INSERT INTO join_counts (id, n, until) VALUES (?1, 1, ?2) \
                 ON CONFLICT(id) DO UPDATE SET n = n + 1, until = excluded.until RETURNING n",
            )?;
            let mut read_count =
                tx.prepare_cached("UPDATE join_counts SET until = ?2 WHERE id = ?1 RETURNING n")?;
            let mut all =
                tx.prepare_cached("SELECT value FROM joins WHERE id = ?1 ORDER BY idx")?;
            let mut out = Vec::with_capacity(entries.len());
            for e in entries {
                let key = e.id.to_string();
                // A member seen before replaces its value; a new one also counts (a counter
                // row, so a join of 10,000 members never counts its rows).
                let count: i64 = if update.execute(params![key, e.index, e.value])? == 0 {
                    insert.execute(params![key, e.index, e.value, until])?;
                    bump.query_row(params![key, until], |r| r.get(0))?
                } else {
                    read_count.query_row(params![key, until], |r| r.get(0))?
                };
                if count < i64::from(e.size) {
                    out.push(None);
                    continue;
                }
                let values = all
                    .query_map([&key], |r| r.get(0))?
                    .collect::<rusqlite::Result<Vec<Vec<u8>>>>()?;
                out.push(Some(values));
            }
            Ok(out)
        })
    }

    fn put_blob(&self, key: TaskId, bytes: &[u8]) -> Result<()> {
        let until = (Timestamp::now() + ONCE_TTL).as_millis();
        self.write("put blob", |tx| {
            tx.prepare_cached(
                "INSERT OR REPLACE INTO blobs (id, value, until) VALUES (?1, ?2, ?3)",
            )?
            .execute(params![key.to_string(), bytes, until])?;
            Ok(())
        })
    }

    fn get_blob(&self, key: TaskId) -> Result<Option<Vec<u8>>> {
        let now = Timestamp::now().as_millis();
        self.conn()
            .prepare_cached("SELECT value FROM blobs WHERE id = ?1 AND until > ?2")
            .and_then(|mut q| {
                q.query_row(params![key.to_string(), now], |r| r.get(0))
                    .optional()
            })
            .map_err(|e| self.err("get blob", e))
    }

    fn incr(&self, key: &str, by: i64) -> Result<i64> {
        self.write("incr", |tx| {
            tx.prepare_cached(
                "INSERT INTO counters (key, value) VALUES (?1, ?2) \
                 ON CONFLICT(key) DO UPDATE SET value = value + excluded.value RETURNING value",
            )?
            .query_row(params![key, by], |r| r.get(0))
        })
    }

    fn forget(&self, ids: &[TaskId]) -> Result<u64> {
        if ids.is_empty() {
            return Ok(0);
        }
        self.write("forget results", |tx| {
            ids.iter().map(|id| forget_in(tx, *id)).sum()
        })
    }

    fn forget_unshared(&self, ids: &[TaskId]) -> Result<Vec<TaskId>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        self.write("forget unshared results", |tx| {
            let mut holders = tx.prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM shared_dicts WHERE name = ?1 AND key != ?2)",
            )?;
            let mut mark = tx.prepare_cached(
                "INSERT INTO shared_dicts (name, key, value) VALUES (?1, ?2, x'31') \
                 ON CONFLICT(name, key) DO NOTHING",
            )?;
            let mut clear = tx.prepare_cached("DELETE FROM shared_dicts WHERE name = ?1")?;
            let mut kept = Vec::new();
            for id in ids {
                let dict = crate::holders_dict(*id);
                let held: bool =
                    holders.query_row(params![dict, crate::SENDER_RELEASED], |r| r.get(0))?;
                if held {
                    mark.execute(params![dict, crate::SENDER_RELEASED])?;
                    kept.push(*id);
                } else {
                    clear.execute([&dict])?;
                    forget_in(tx, *id)?;
                }
            }
            Ok(kept)
        })
    }

    fn unshare(&self, id: TaskId, holder: &[u8]) -> Result<bool> {
        let dict = crate::holders_dict(id);
        self.write("unshare a result", |tx| {
            tx.prepare_cached("DELETE FROM shared_dicts WHERE name = ?1 AND key = ?2")?
                .execute(params![dict, holder])?;
            let held: bool = tx
                .prepare_cached(
                    "SELECT EXISTS (SELECT 1 FROM shared_dicts WHERE name = ?1 AND key != ?2)",
                )?
                .query_row(params![dict, crate::SENDER_RELEASED], |r| r.get(0))?;
            if held {
                return Ok(false);
            }
            // No holder left: the sender's mark (if any) goes with the dict.
            let released = tx
                .prepare_cached("DELETE FROM shared_dicts WHERE name = ?1")?
                .execute([&dict])?
                > 0;
            if released {
                forget_in(tx, id)?;
            }
            Ok(released)
        })
    }

    /// Deletes what has expired, by index, in transactions of at most `PURGE_BATCH` rows so
    /// other writers (lease renewals) wait for one short batch at most; and from one process
    /// at a time: the first to call takes the lock `lovage:purge` for `PURGE_HOLD` and
    /// renews it each time it purges, the others skip (returning 0) while it holds it.
    fn purge_expired(&self) -> Result<u64> {
        if !self.lock(PURGE_LOCK, &self.holder, PURGE_HOLD)? {
            return Ok(0);
        }
        let now = Timestamp::now().as_millis();
        let revoked_before = now - REVOKE_MEMORY.as_millis() as i64;
        self.delete_in_batches(
            "purge sent-once ids",
            "DELETE FROM sent_once WHERE id IN \
             (SELECT id FROM sent_once WHERE until <= ?1 LIMIT ?2)",
            now,
        )?;
        // A join's members go when its count row has expired (each member refreshes it), or
        // when it has none (left by a purge before schema 3). Its count row goes after them.
        self.delete_in_batches(
            "purge joins",
            "DELETE FROM joins WHERE (id, idx) IN \
             (SELECT j.id, j.idx FROM joins j LEFT JOIN join_counts c ON c.id = j.id \
              WHERE j.until <= ?1 AND (c.until IS NULL OR c.until <= ?1) LIMIT ?2)",
            now,
        )?;
        self.delete_in_batches(
            "purge join counts",
            "DELETE FROM join_counts WHERE id IN \
             (SELECT id FROM join_counts WHERE until <= ?1 LIMIT ?2)",
            now,
        )?;
        self.delete_in_batches(
            "purge blobs",
            "DELETE FROM blobs WHERE id IN (SELECT id FROM blobs WHERE until <= ?1 LIMIT ?2)",
            now,
        )?;
        self.delete_in_batches(
            "purge revoked ids",
            "DELETE FROM revoked WHERE id IN (SELECT id FROM revoked WHERE at < ?1 LIMIT ?2)",
            revoked_before,
        )?;
        self.delete_in_batches(
            "purge expired results",
            "DELETE FROM results WHERE id IN \
             (SELECT id FROM results WHERE expires IS NOT NULL AND expires <= ?1 LIMIT ?2)",
            now,
        )
    }
}

/// Most rows one transaction of `purge_expired` deletes from a table.
pub(super) const PURGE_BATCH: usize = 1000;
/// The lock whose holder purges expired rows for every process on the file.
const PURGE_LOCK: &str = "lovage:purge";
/// How long the purge lock lasts without being renewed: a worker purges every minute, so its
/// lock never lapses while it lives, and another takes over within this once it is gone.
const PURGE_HOLD: Duration = Duration::from_secs(5 * 60);

impl SqliteBackend {
    /// Runs `sql` (a DELETE of at most `?2` rows expired by `?1`) in short transactions until
    /// it deletes fewer than a batch; returns how many rows went.
    fn delete_in_batches(&self, op: &'static str, sql: &str, expired_by: i64) -> Result<u64> {
        let mut total = 0;
        loop {
            let n = self.write_quietly(op, |tx| {
                tx.prepare_cached(sql)?
                    .execute(params![expired_by, PURGE_BATCH as i64])
            })?;
            total += n as u64;
            if n < PURGE_BATCH {
                return Ok(total);
            }
        }
    }
}

/// The final states as an SQL list (a test keeps it equal to `TaskState::is_final`).
macro_rules! final_states {
    () => {
        "('SUCCESS', 'FAILURE', 'REVOKED')"
    };
}

/// Writes one record (its error already encoded as JSON), replacing the id's earlier one where
/// it supersedes it (the rule of [`ResultRecord::supersedes`], in SQL).
impl SqliteBackend {
    /// Each record's error as the JSON its row holds, encoded before the write transaction.
    pub(super) fn encode_errors(&self, records: &[ResultRecord]) -> Result<Vec<Option<String>>> {
        records
            .iter()
            .map(|r| r.error.as_ref().map(serde_json::to_string).transpose())
            .collect::<serde_json::Result<Vec<Option<String>>>>()
            .map_err(|e| self.fail("store results", e.into()))
    }
}

/// Writes `records` (with their errors from [`SqliteBackend::encode_errors`]) where each
/// supersedes the stored one, tallying the states they change.
pub(super) fn insert_results(
    tx: &rusqlite::Transaction<'_>,
    records: &[ResultRecord],
    errors: &[Option<String>],
    tally: &mut Tally,
) -> rusqlite::Result<()> {
    for (r, err) in records.iter().zip(errors) {
        insert_result(tx, r, err.as_deref(), tally)?;
    }
    Ok(())
}

/// Writes one record where it supersedes the stored one. The task index's columns (queue,
/// argument preview, when it was received) are copied from the task's row in the same
/// statement while the broker still holds it. A record equal in state and attempt to the
/// stored one (a store repeated after a lost reply) changes nothing, so it is not counted
/// twice.
pub(super) fn insert_result(
    tx: &rusqlite::Transaction<'_>,
    r: &ResultRecord,
    error_json: Option<&str>,
    tally: &mut Tally,
) -> rusqlite::Result<()> {
    let changed = tx.prepare_cached(
        concat!(
            "INSERT INTO results (id, task, state, value, codec, error, attempts, worker, started, updated, expires, \
             queue, preview, received) \
             SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, t.queue, substr(t.args, 1, ?12), t.received \
             FROM (SELECT 1) LEFT JOIN tasks t ON t.id = ?1 WHERE true \
             ON CONFLICT (id) DO UPDATE SET task = excluded.task, state = excluded.state, \
             value = excluded.value, codec = excluded.codec, error = excluded.error, \
             attempts = excluded.attempts, worker = excluded.worker, started = excluded.started, \
             updated = excluded.updated, expires = excluded.expires, \
             queue = coalesce(excluded.queue, results.queue), \
             preview = coalesce(excluded.preview, results.preview), \
             received = coalesce(excluded.received, results.received) \
             WHERE excluded.attempts >= results.attempts AND (excluded.state IN ",
            final_states!(),
            " OR results.state NOT IN ",
            final_states!(),
            ") AND NOT (excluded.state = results.state AND excluded.attempts = results.attempts)"
        ),
    )?
    .execute(params![
        r.id.to_string(),
        r.task,
        r.state.as_str(),
        r.value,
        r.codec.as_str(),
        error_json,
        r.attempts as i64,
        r.worker,
        r.started.map(Timestamp::as_millis),
        r.updated.as_millis(),
        r.expires.map(Timestamp::as_millis),
        crate::ops::ARGS_PREVIEW_BYTES as i64,
    ])?;
    if changed > 0 {
        tally.stored(r.state);
    }
    Ok(())
}

/// The records of `ids` not expired, in order.
fn read_results(
    conn: &rusqlite::Connection,
    ids: &[TaskId],
) -> rusqlite::Result<Vec<Option<ResultRecord>>> {
    let mut q = conn.prepare_cached(
        "SELECT id, task, state, value, codec, error, attempts, worker, started, updated, expires \
         FROM results WHERE id = ?1 AND (expires IS NULL OR expires > ?2)",
    )?;
    let now = Timestamp::now().as_millis();
    ids.iter()
        .map(|&id| {
            q.query_row(params![id.to_string(), now], |r| {
                Ok(row_to_result(r).unwrap_or_else(|e| unreadable_result(id, e)))
            })
            .optional()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use lovage_core::TaskState;

    #[test]
    fn the_sql_list_of_final_states_is_is_final() {
        for state in TaskState::ALL {
            let quoted = format!("'{}'", state.as_str());
            assert_eq!(
                final_states!().contains(&quoted),
                state.is_final(),
                "{state:?}"
            );
        }
    }
}
