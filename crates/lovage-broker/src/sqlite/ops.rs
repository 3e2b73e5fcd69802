//! What operators read and ask of an SQLite broker: the task index (columns of `tasks` and
//! `results`), the counts (`counters`), paused queues, the event stream (a row per batch) and
//! the control mailbox.

use lovage_core::{TaskId, TaskState};
use rusqlite::types::ToSql;
use rusqlite::{params, OptionalExtension};

use super::rows::{dead_letter, row_to_envelope, row_to_result};
use super::schema::RESERVED;
use super::tally;
use super::SqliteBackend;
use crate::ops::{
    self, Control, ControlReply, ControlRequest, Event, EventBatch, Events, Inspect, Kept, Live,
    QueueInfo, QueueOps, QueueTable, StateCounts, TaskInfo, TaskPage, TaskQuery, TaskSummary,
    EVENTS_KEPT,
};
use crate::{Admin, Envelope, Result, ResultRecord, Timestamp};

/// The ring drops its oldest rows only when a batch's numbers cross a multiple of this, so
/// most batches delete nothing: a delete in every batch's transaction rewrote the table's
/// first pages each time. The ring so holds up to this many events more than [`EVENTS_KEPT`].
pub(super) const TRIM_EVERY: i64 = 4096;

/// Appends an encoded batch of `n` events as one row numbered after the last, and now and then
/// drops rows older than the newest [`EVENTS_KEPT`] events (a range of the primary key).
///
/// The last number is the newest row's `last` (the rowid: one seek to the page this insert
/// writes anyway), not a counter row, which cost every batch's transaction one more page.
/// The trim never drops the newest row, so the numbering never goes back.
pub(super) fn append_events(
    tx: &rusqlite::Transaction<'_>,
    body: &[u8],
    n: usize,
) -> rusqlite::Result<()> {
    let prev: i64 = tx
        .prepare_cached("SELECT coalesce(max(last), 0) FROM events")?
        .query_row([], |r| r.get(0))?;
    let last = prev + n as i64;
    tx.prepare_cached("INSERT INTO events (last, first, body) VALUES (?1, ?2, ?3)")?
        .execute(params![last, prev + 1, body])?;
    if prev / TRIM_EVERY != last / TRIM_EVERY {
        tx.prepare_cached("DELETE FROM events WHERE last <= ?1")?
            .execute([last - EVENTS_KEPT as i64])?;
    }
    Ok(())
}

/// The columns [`row_to_envelope`] reads.
const ENVELOPE_COLUMNS: &str =
    "id, queue, priority, attempts, task, codec, args, options, eta, expires, created, flow";

impl SqliteBackend {
    /// Candidate ids for a listing: newest first from `tasks` and `results`, each narrowed by
    /// the filters its columns and indexes serve.
    fn candidates(
        &self,
        q: &TaskQuery,
        below: Option<&str>,
        floor: Option<&str>,
        n: usize,
    ) -> Result<Vec<TaskId>> {
        let live_states = match q.state {
            None => Some(""),
            Some(TaskState::Pending | TaskState::Retry) => Some(" AND state != 1"),
            Some(TaskState::Received | TaskState::Started) => Some(" AND state = 1"),
            Some(_) => None,
        };
        let record_state = match q.state {
            Some(TaskState::Pending | TaskState::Received) => None,
            s => Some(s),
        };
        let mut ids: Vec<String> = Vec::new();
        let conn = self.conn();
        let mut run = |table: &str, extra: String, more: Vec<&dyn ToSql>| -> Result<()> {
            let mut sql = format!("SELECT id FROM {table} WHERE 1{extra}");
            let mut args: Vec<&dyn ToSql> = more;
            if let Some(b) = &below {
                sql.push_str(" AND id < ?");
                args.push(b);
            }
            if let Some(f) = &floor {
                sql.push_str(" AND id >= ?");
                args.push(f);
            }
            sql.push_str(&format!(" ORDER BY id DESC LIMIT {n}"));
            let mut stmt = conn
                .prepare_cached(&sql)
                .map_err(|e| self.err("list tasks", e))?;
            let rows = stmt
                .query_map(args.as_slice(), |r| r.get::<_, String>(0))
                .map_err(|e| self.err("list tasks", e))?;
            for row in rows {
                ids.push(row.map_err(|e| self.err("list tasks", e))?);
            }
            Ok(())
        };
        if let (Some(states), None) = (live_states, &q.worker) {
            let mut extra = states.to_owned();
            let mut args: Vec<&dyn ToSql> = Vec::new();
            if let Some(name) = &q.name {
                extra.push_str(" AND task = ?");
                args.push(name);
            }
            if let Some(queue) = &q.queue {
                extra.push_str(" AND queue = ?");
                args.push(queue);
            }
            run("tasks", extra, args)?;
        }
        if let Some(state) = record_state {
            let state_text = state.map(TaskState::as_str);
            let mut extra = String::new();
            let mut args: Vec<&dyn ToSql> = Vec::new();
            if let Some(s) = &state_text {
                // The literal term lets SQLite use the partial index of non-SUCCESS records.
                extra.push_str(" AND state = ? AND state != 'SUCCESS'");
                if *s == "SUCCESS" {
                    extra.truncate(extra.len() - " AND state != 'SUCCESS'".len());
                }
                args.push(s);
            }
            if let Some(name) = &q.name {
                extra.push_str(" AND task = ?");
                args.push(name);
            }
            if let Some(queue) = &q.queue {
                extra.push_str(" AND queue = ?");
                args.push(queue);
            }
            if let Some(worker) = &q.worker {
                extra.push_str(" AND worker = ?");
                args.push(worker);
            }
            run("results", extra, args)?;
        }
        drop(conn);
        ids.sort_unstable_by(|a, b| b.cmp(a));
        ids.dedup();
        ids.truncate(n);
        ids.iter()
            .map(|id| {
                id.parse::<TaskId>()
                    .map_err(|e| crate::BrokerError::Corrupt(format!("task id {id:?}: {e}")))
            })
            .collect()
    }

    /// A task's row as the index sees it, if the broker holds it.
    fn live(&self, id: &str) -> Result<Option<Live>> {
        self.conn()
            .prepare_cached(
                "SELECT task, queue, state, attempts, created, received, substr(args, 1, ?2) \
                 FROM tasks WHERE id = ?1",
            )
            .and_then(|mut q| {
                q.query_row(params![id, ops::ARGS_PREVIEW_BYTES as i64], |r| {
                    Ok(Live {
                        name: r.get(0)?,
                        queue: r.get(1)?,
                        reserved: r.get::<_, i64>(2)? == RESERVED,
                        attempts: r.get::<_, i64>(3)?.max(0) as u32,
                        sent: Timestamp::from_millis(r.get(4)?),
                        received: r.get::<_, Option<i64>>(5)?.map(Timestamp::from_millis),
                        preview: r
                            .get::<_, Option<Vec<u8>>>(6)?
                            .map(|b| ops::args_preview(&b)),
                    })
                })
                .optional()
            })
            .map_err(|e| self.err("task index", e))
    }

    /// A task's unexpired record (without its value) and the index's columns beside it.
    fn kept(&self, id: &str, with_value: bool) -> Result<Option<(ResultRecord, Kept)>> {
        let value = if with_value { "value" } else { "NULL" };
        let sql = format!(
            "SELECT id, task, state, {value}, codec, error, attempts, worker, started, updated, expires, \
             queue, preview, received FROM results WHERE id = ?1 AND (expires IS NULL OR expires > ?2)"
        );
        self.conn()
            .prepare_cached(&sql)
            .and_then(|mut q| {
                q.query_row(params![id, Timestamp::now().as_millis()], |r| {
                    let record = row_to_result(r)?;
                    let kept = Kept {
                        queue: r.get(11)?,
                        preview: r
                            .get::<_, Option<Vec<u8>>>(12)?
                            .map(|b| ops::args_preview(&b)),
                        received: r.get::<_, Option<i64>>(13)?.map(Timestamp::from_millis),
                    };
                    Ok((record, kept))
                })
                .optional()
            })
            .map_err(|e| self.err("task index", e))
    }

    fn summary(&self, id: TaskId) -> Result<Option<TaskSummary>> {
        let text = id.to_string();
        let live = self.live(&text)?;
        let (record, kept) = match self.kept(&text, false)? {
            Some((r, k)) => (Some(r), k),
            None => (None, Kept::default()),
        };
        Ok(ops::summarize(id, live, record.as_ref(), kept))
    }

    fn count(&self, key: &str) -> Result<u64> {
        self.conn()
            .prepare_cached("SELECT value FROM counters WHERE key = ?1")
            .and_then(|mut q| q.query_row([key], |r| r.get::<_, i64>(0)).optional())
            .map(|v| v.unwrap_or(0).max(0) as u64)
            .map_err(|e| self.err("task counts", e))
    }
}

impl Inspect for SqliteBackend {
    fn list_tasks(&self, query: &TaskQuery) -> Result<TaskPage> {
        ops::page(
            query,
            &mut |below, floor, n| self.candidates(query, below, floor, n),
            &mut |ids| ids.iter().map(|id| self.summary(*id)).collect(),
        )
    }

    fn task_counts(&self) -> Result<StateCounts> {
        // Scheduled and reserved tasks are few beside the ready ones and have their own index
        // (`tasks_due`); the ready ones are what is left of the live count.
        let (scheduled, reserved) = {
            let conn = self.conn();
            let mut q = conn
                .prepare_cached("SELECT state, count(*) FROM tasks WHERE state != 0 GROUP BY state")
                .map_err(|e| self.err("task counts", e))?;
            let rows = q
                .query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)))
                .map_err(|e| self.err("task counts", e))?;
            let (mut s, mut r) = (0, 0);
            for row in rows {
                match row.map_err(|e| self.err("task counts", e))? {
                    (RESERVED, n) => r += n.max(0) as u64,
                    (_, n) => s += n.max(0) as u64,
                }
            }
            (s, r)
        };
        let live = self.count(tally::LIVE)?;
        Ok(StateCounts {
            pending: live.saturating_sub(scheduled + reserved),
            scheduled,
            reserved,
            sent: self.count(tally::SENT)?,
            succeeded: self.count(tally::SUCCEEDED)?,
            failed: self.count(tally::FAILED)?,
            retried: self.count(tally::RETRIED)?,
            revoked: self.count(tally::REVOKED)?,
        })
    }

    fn task_info(&self, id: TaskId) -> Result<Option<TaskInfo>> {
        let text = id.to_string();
        let live = self.live(&text)?;
        let kept = self.kept(&text, true)?;
        let (record, kept) = match kept {
            Some((r, k)) => (Some(r), k),
            None => (None, Kept::default()),
        };
        let Some(summary) = ops::summarize(id, live, record.as_ref(), kept) else {
            return Ok(None);
        };
        let conn = self.conn();
        let envelope = conn
            .prepare_cached(&format!(
                "SELECT {ENVELOPE_COLUMNS} FROM tasks WHERE id = ?1"
            ))
            .and_then(|mut q| q.query_row([&text], row_to_envelope).optional())
            .map_err(|e| self.err("task info", e))?;
        let dead = conn
            .prepare_cached(
                "SELECT envelope, error, at FROM dead_letters WHERE id = ?1 ORDER BY seq DESC LIMIT 1",
            )
            .and_then(|mut q| {
                q.query_row([&text], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get(2)?))
                })
                .optional()
            })
            .map_err(|e| self.err("task info", e))?;
        drop(conn);
        let dead_letter = dead
            .map(|(e, err, at)| dead_letter(&e, &err, at))
            .transpose()?;
        Ok(Some(TaskInfo {
            summary,
            envelope,
            record,
            dead_letter,
        }))
    }
}

impl QueueOps for SqliteBackend {
    fn pause(&self, queue: &str) -> Result<()> {
        self.write("pause", |tx| {
            tx.execute("INSERT OR IGNORE INTO paused (queue) VALUES (?1)", [queue])?;
            Ok(())
        })
    }

    fn resume(&self, queue: &str) -> Result<()> {
        self.write("resume", |tx| {
            tx.execute("DELETE FROM paused WHERE queue = ?1", [queue])?;
            Ok(())
        })
    }

    fn discard_dead(&self, ids: &[TaskId]) -> Result<u64> {
        self.write("discard dead letters", |tx| {
            let mut del = tx.prepare_cached("DELETE FROM dead_letters WHERE id = ?1")?;
            let mut gone = 0;
            for id in ids {
                gone += del.execute([id.to_string()])? as u64;
            }
            Ok(gone)
        })
    }

    fn delete_tasks(&self, ids: &[TaskId]) -> Result<Vec<TaskId>> {
        self.write("delete tasks", |tx| {
            let mut tally = tally::Tally::default();
            let mut gone = Vec::new();
            {
                let mut held =
                    tx.prepare_cached("SELECT 1 FROM tasks WHERE id = ?1 AND state = 1")?;
                let mut unqueue =
                    tx.prepare_cached("DELETE FROM tasks WHERE id = ?1 RETURNING queue")?;
                let mut forget = tx.prepare_cached("DELETE FROM results WHERE id = ?1")?;
                for id in ids {
                    let text = id.to_string();
                    if held.exists([&text])? {
                        continue;
                    }
                    let queue: Option<String> =
                        unqueue.query_row([&text], |r| r.get(0)).optional()?;
                    if let Some(queue) = &queue {
                        tally.live_in(queue, -1);
                    }
                    let record = forget.execute([&text])? > 0;
                    if queue.is_some() || record {
                        gone.push(*id);
                    }
                }
            }
            tally.flush(tx)?;
            Ok(gone)
        })
    }

    fn paused(&self) -> Result<Vec<String>> {
        let conn = self.conn();
        let mut q = conn
            .prepare_cached("SELECT queue FROM paused ORDER BY queue")
            .map_err(|e| self.err("paused", e))?;
        let rows = q
            .query_map([], |r| r.get(0))
            .map_err(|e| self.err("paused", e))?;
        rows.collect::<rusqlite::Result<Vec<String>>>()
            .map_err(|e| self.err("paused", e))
    }

    fn peek(&self, queue: &str, limit: usize) -> Result<Vec<Envelope>> {
        let conn = self.conn();
        let mut out = Vec::new();
        for order in [
            "state = 0 ORDER BY priority DESC, seq",
            "state = 2 ORDER BY due",
        ] {
            let left = limit.saturating_sub(out.len());
            if left == 0 {
                break;
            }
            let sql = format!(
                "SELECT {ENVELOPE_COLUMNS} FROM tasks WHERE queue = ?1 AND {order} LIMIT ?2"
            );
            let mut q = conn.prepare_cached(&sql).map_err(|e| self.err("peek", e))?;
            let rows = q
                .query_map(params![queue, left as i64], row_to_envelope)
                .map_err(|e| self.err("peek", e))?;
            for row in rows {
                out.push(row.map_err(|e| self.err("peek", e))?);
            }
        }
        Ok(out)
    }

    fn queues(&self) -> Result<Vec<QueueInfo>> {
        let stats = self.stats()?;
        let paused = self.paused()?;
        let now = Timestamp::now();
        let conn = self.conn();
        let mut dead_by: std::collections::HashMap<String, u64> = Default::default();
        {
            let mut q = conn
                .prepare_cached(
                    "SELECT json_extract(envelope, '$.queue'), count(*) FROM dead_letters GROUP BY 1",
                )
                .map_err(|e| self.err("queues", e))?;
            let rows = q
                .query_map([], |r| {
                    Ok((r.get::<_, Option<String>>(0)?, r.get::<_, i64>(1)?))
                })
                .map_err(|e| self.err("queues", e))?;
            for row in rows {
                let (queue, n) = row.map_err(|e| self.err("queues", e))?;
                dead_by.insert(queue.unwrap_or_default(), n.max(0) as u64);
            }
        }
        // The first task of each priority lane (index seeks on `tasks_ready`, at most one per
        // priority in use), not a min over every ready row: that read the whole queue.
        let mut oldest = conn
            .prepare_cached(
                "WITH RECURSIVE lanes(p) AS ( \
                   SELECT max(priority) FROM tasks WHERE state = 0 AND queue = ?1 \
                   UNION ALL \
                   SELECT (SELECT max(priority) FROM tasks \
                           WHERE state = 0 AND queue = ?1 AND priority < lanes.p) \
                   FROM lanes WHERE lanes.p IS NOT NULL) \
                 SELECT min((SELECT coalesce(eta, created) FROM tasks \
                             WHERE state = 0 AND queue = ?1 AND priority = lanes.p \
                             ORDER BY seq LIMIT 1)) \
                 FROM lanes WHERE lanes.p IS NOT NULL",
            )
            .map_err(|e| self.err("queues", e))?;
        let mut out = QueueTable::default();
        for s in &stats {
            let first: Option<i64> = oldest
                .query_row([&s.queue], |r| r.get(0))
                .map_err(|e| self.err("queues", e))?;
            let age = first.map_or(0.0, |t| (now - Timestamp::from_millis(t)).as_secs_f64());
            out.counts(s, age);
        }
        for (q, n) in dead_by {
            out.entry(&q).dead = n;
        }
        out.paused(paused);
        Ok(out.into_vec())
    }
}

impl Events for SqliteBackend {
    fn publish(&self, events: &[Event]) -> Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        let body = ops::event_codec::encode_batch(events)
            .map_err(|e| self.fail("publish events", e.into()))?;
        self.write_quietly("publish events", |tx| {
            append_events(tx, &body, events.len())
        })
    }

    fn read_events(&self, after: u64, limit: usize) -> Result<EventBatch> {
        let conn = self.conn();
        let err = |e| self.err("read events", e);
        let oldest_seq: i64 = conn
            .prepare_cached("SELECT coalesce((SELECT first FROM events ORDER BY last LIMIT 1), 0)")
            .and_then(|mut q| q.query_row([], |r| r.get(0)))
            .map_err(err)?;
        let last_seq: i64 = conn
            .prepare_cached("SELECT coalesce(max(last), 0) FROM events")
            .and_then(|mut q| q.query_row([], |r| r.get(0)))
            .map_err(err)?;
        let mut events = Vec::new();
        let mut q = conn
            .prepare_cached("SELECT first, body FROM events WHERE last > ?1 ORDER BY last LIMIT ?2")
            .map_err(err)?;
        // Each row holds at least one wanted event, so `limit` rows are enough.
        let rows = q
            .query_map(params![after as i64, limit as i64], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?))
            })
            .map_err(err)?;
        'rows: for row in rows {
            let (first, body) = row.map_err(err)?;
            let batch = ops::event_codec::decode_batch(&body)
                .map_err(|e| crate::BrokerError::Corrupt(format!("events row {first}: {e}")))?;
            for (i, mut e) in batch.into_iter().enumerate() {
                e.seq = (first + i as i64) as u64;
                if e.seq <= after {
                    continue;
                }
                if events.len() >= limit {
                    break 'rows;
                }
                events.push(e);
            }
        }
        Ok(EventBatch {
            events,
            oldest_seq: oldest_seq.max(0) as u64,
            last_seq: last_seq.max(0) as u64,
        })
    }
}

impl Control for SqliteBackend {
    fn send_control(&self, destinations: &[String], request: &ControlRequest) -> Result<()> {
        let body = serde_json::to_string(request).map_err(|e| self.fail("control", e.into()))?;
        let now = Timestamp::now().as_millis();
        self.write("send control", |tx| {
            // Requests nobody took (a worker gone for good) go once expired.
            tx.prepare_cached("DELETE FROM control WHERE expires <= ?1")?
                .execute([now])?;
            let mut ins = tx.prepare_cached(
                "INSERT INTO control (worker, body, expires) VALUES (?1, ?2, ?3)",
            )?;
            for d in destinations {
                ins.execute(params![d, body, request.expires.as_millis()])?;
            }
            Ok(())
        })
    }

    fn take_control(&self, worker: &str) -> Result<Vec<ControlRequest>> {
        // A worker polls its mailbox several times a second and it is nearly always empty:
        // look first with a read, so an empty poll never takes the write lock from the
        // workers' reserves and acks.
        let waiting: bool = {
            let conn = self.conn();
            conn.prepare_cached("SELECT EXISTS(SELECT 1 FROM control WHERE worker = ?1)")
                .and_then(|mut q| q.query_row([worker], |r| r.get(0)))
                .map_err(|e| self.err("take control", e))?
        };
        if !waiting {
            return Ok(Vec::new());
        }
        let now = Timestamp::now().as_millis();
        let mut rows: Vec<(i64, String)> = self.write_quietly("take control", |tx| {
            let mut q = tx.prepare_cached(
                "DELETE FROM control WHERE worker = ?1 RETURNING seq, body, expires",
            )?;
            let rows = q.query_map([worker], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (seq, body, expires) = row?;
                if expires > now {
                    out.push((seq, body));
                }
            }
            Ok(out)
        })?;
        rows.sort_by_key(|(seq, _)| *seq);
        rows.into_iter()
            .filter_map(|(_, body)| {
                serde_json::from_str(&body)
                    .map_err(|e| tracing::warn!(error = %e, "skipping a control request that does not decode"))
                    .ok()
            })
            .map(Ok)
            .collect()
    }

    fn reply(&self, request_id: &str, worker: &str, reply: &serde_json::Value) -> Result<()> {
        let body = serde_json::to_string(reply).map_err(|e| self.fail("reply", e.into()))?;
        let now = Timestamp::now();
        self.write("reply", |tx| {
            tx.prepare_cached("DELETE FROM control_replies WHERE expires <= ?1")?
                .execute([now.as_millis()])?;
            tx.prepare_cached(
                "INSERT INTO control_replies (request, worker, body, expires) VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![
                request_id,
                worker,
                body,
                (now + ops::CONTROL_TTL).as_millis()
            ])?;
            Ok(())
        })
    }

    fn replies(&self, request_id: &str) -> Result<Vec<ControlReply>> {
        let conn = self.conn();
        let mut q = conn
            .prepare_cached(
                "SELECT worker, body FROM control_replies WHERE request = ?1 AND expires > ?2 ORDER BY seq",
            )
            .map_err(|e| self.err("replies", e))?;
        let rows = q
            .query_map(params![request_id, Timestamp::now().as_millis()], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
            })
            .map_err(|e| self.err("replies", e))?;
        let mut out = Vec::new();
        for row in rows {
            let (worker, body) = row.map_err(|e| self.err("replies", e))?;
            let reply = serde_json::from_str(&body)
                .map_err(|e| crate::BrokerError::Corrupt(format!("control reply: {e}")))?;
            out.push(ControlReply { worker, reply });
        }
        Ok(out)
    }
}
