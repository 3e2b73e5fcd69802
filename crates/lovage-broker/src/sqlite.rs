//! The embedded default: broker and result store in one SQLite file (WAL mode), shared by every
//! process on the host that opens it.
//!
//! Durability: each enqueue is a committed transaction before it returns, in WAL mode with
//! `synchronous = NORMAL`, which survives the crash (`kill -9`) of every process; a power cut may
//! lose the last transactions (set `synchronous = FULL` in `open_with` for that).
//!
//! Waiting: SQLite cannot push a change to another process, so a waiting reserve or result
//! wait checks `PRAGMA data_version` (a counter in shared memory that moves when another
//! connection commits) every millisecond, backing off to 10 ms when nothing happens, and is woken
//! at once by writes from this process. It re-reads tables only when something changed.

use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use lovage_core::{Codec, TaskError, TaskId, TaskState};
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use crate::{
    Admin, Broker, BrokerError, DeadLetter, Delivery, Envelope, JoinEntry, Lease, Locks, Presence,
    QueueStats, RateLimits, Result, ResultRecord, ResultStore, Revoked, Source, Timestamp,
    WorkerInfo, ONCE_TTL,
};

/// `PRAGMA application_id` of a lovage database ("LOVA").
const APPLICATION_ID: i32 = 0x4c4f_5641;
/// Schema version in `PRAGMA user_version`.
const SCHEMA_VERSION: i32 = 2;

const READY: i64 = 0;
const RESERVED: i64 = 1;
const SCHEDULED: i64 = 2;

/// Tables added in schema version 2 (workflows); also created by the upgrade from 1.
const WORKFLOW_TABLES: &str = "
CREATE TABLE IF NOT EXISTS sent_once (id TEXT PRIMARY KEY, until INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS joins (
    id    TEXT    NOT NULL,
    idx   INTEGER NOT NULL,
    value BLOB    NOT NULL,
    until INTEGER NOT NULL,
    PRIMARY KEY (id, idx)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS join_counts (id TEXT PRIMARY KEY, n INTEGER NOT NULL, until INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS blobs (id TEXT PRIMARY KEY, value BLOB NOT NULL, until INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS locks (name TEXT PRIMARY KEY, holder TEXT NOT NULL, until INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS rate_limits (key TEXT PRIMARY KEY, tat INTEGER NOT NULL) WITHOUT ROWID;
";

const SCHEMA: &str = "
CREATE TABLE tasks (
    seq      INTEGER PRIMARY KEY AUTOINCREMENT,
    id       TEXT    NOT NULL UNIQUE,
    queue    TEXT    NOT NULL,
    priority INTEGER NOT NULL,
    state    INTEGER NOT NULL,   -- 0 ready, 1 reserved, 2 scheduled
    due      INTEGER NOT NULL,   -- ms: when a scheduled task is ready, when a lease runs out
    attempts INTEGER NOT NULL,
    task     TEXT    NOT NULL,
    codec    TEXT    NOT NULL,
    args     BLOB    NOT NULL,
    options  TEXT    NOT NULL,
    eta      INTEGER,
    expires  INTEGER,
    created  INTEGER NOT NULL,
    flow     BLOB                -- MessagePack workflow frames, NULL for a plain task
);
CREATE INDEX tasks_ready ON tasks(queue, priority DESC, seq) WHERE state = 0;
CREATE INDEX tasks_due ON tasks(due) WHERE state != 0;
CREATE TABLE results (
    id       TEXT PRIMARY KEY,
    task     TEXT    NOT NULL,
    state    TEXT    NOT NULL,
    value    BLOB,
    codec    TEXT    NOT NULL,
    error    TEXT,
    attempts INTEGER NOT NULL,
    worker   TEXT,
    started  INTEGER,
    updated  INTEGER NOT NULL,
    expires  INTEGER
) WITHOUT ROWID;
CREATE INDEX results_expires ON results(expires) WHERE expires IS NOT NULL;
CREATE TABLE counters (key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE revoked (id TEXT PRIMARY KEY, at INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE dead_letters (
    seq      INTEGER PRIMARY KEY AUTOINCREMENT,
    id       TEXT    NOT NULL,
    envelope TEXT    NOT NULL,
    error    TEXT    NOT NULL,
    at       INTEGER NOT NULL
);
CREATE TABLE workers (id TEXT PRIMARY KEY, info TEXT NOT NULL, heartbeat INTEGER NOT NULL) WITHOUT ROWID;
";

/// How long a revoked id is remembered.
const REVOKE_MEMORY: Duration = Duration::from_secs(24 * 3600);

/// Puts the database in WAL mode (a setting stored in the file). Two processes opening a new
/// file at once may collide on this switch, which does not wait for the busy timeout; retry.
fn set_wal(conn: &Connection) -> rusqlite::Result<()> {
    let mut attempt = 0;
    loop {
        let mode: rusqlite::Result<String> =
            conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0));
        match mode {
            Ok(m) if m.eq_ignore_ascii_case("wal") => return Ok(()),
            Ok(m) => {
                return Err(rusqlite::Error::InvalidParameterName(format!(
                    "the file stays in journal mode {m:?}"
                )))
            }
            Err(rusqlite::Error::SqliteFailure(e, _))
                if matches!(
                    e.code,
                    rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
                ) && attempt < 200 =>
            {
                attempt += 1;
                std::thread::sleep(Duration::from_millis(25));
            }
            Err(e) => return Err(e),
        }
    }
}

/// The SQLite backend: a broker and a result store in one file.
pub struct SqliteBackend {
    path: PathBuf,
    conn: Mutex<Connection>,
    /// Bumped on every write through this backend, so waiters in this process wake at once.
    local_writes: Mutex<u64>,
    written: Condvar,
}

impl SqliteBackend {
    /// Opens (creating if needed) the broker database at `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let open_err = |source: Source| BrokerError::Open {
            backend: "sqlite",
            location: path.display().to_string(),
            source,
        };
        let conn = Connection::open(&path).map_err(|e| open_err(e.into()))?;
        conn.busy_timeout(Duration::from_secs(10))
            .map_err(|e| open_err(e.into()))?;
        let not_lovage = |reason: String| BrokerError::NotLovage {
            location: path.display().to_string(),
            reason,
        };
        // Reading the header is the first thing that fails on a file that is not SQLite.
        let app_id: i32 = conn
            .query_row("PRAGMA application_id", [], |r| r.get(0))
            .map_err(|e| not_lovage(e.to_string()))?;
        set_wal(&conn).map_err(|e| open_err(format!("cannot switch to WAL mode: {e}").into()))?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(|e| open_err(e.into()))?;
        let backend = SqliteBackend {
            path: path.clone(),
            conn: Mutex::new(conn),
            local_writes: Mutex::new(0),
            written: Condvar::new(),
        };
        if app_id != APPLICATION_ID {
            backend.initialise(app_id)?;
        }
        let version: i32 = backend
            .lock()
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(|e| open_err(e.into()))?;
        if version > SCHEMA_VERSION {
            return Err(not_lovage(format!(
                "its schema version {version} is newer than this lovage understands ({SCHEMA_VERSION}); upgrade lovage"
            )));
        }
        if version < SCHEMA_VERSION {
            backend.upgrade()?;
        }
        Ok(backend)
    }

    /// Creates the schema in an empty file; refuses a database that holds other tables.
    fn initialise(&self, app_id: i32) -> Result<()> {
        let mut conn = self.lock();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| self.err("initialise", e))?;
        // Another process may have initialised it while we waited for the lock.
        let now_id: i32 = tx
            .query_row("PRAGMA application_id", [], |r| r.get(0))
            .map_err(|e| self.err("initialise", e))?;
        if now_id == APPLICATION_ID {
            return Ok(());
        }
        let tables: i64 = tx
            .query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))
            .map_err(|e| self.err("initialise", e))?;
        if tables > 0 || app_id != 0 {
            return Err(BrokerError::NotLovage {
                location: self.path.display().to_string(),
                reason: format!(
                    "it is an SQLite database with {tables} other objects (application id {app_id:#x}); \
                     refusing to touch it — point LOVAGE_BROKER at a new file"
                ),
            });
        }
        tx.execute_batch(SCHEMA)
            .map_err(|e| self.err("create schema", e))?;
        tx.execute_batch(WORKFLOW_TABLES)
            .map_err(|e| self.err("create schema", e))?;
        tx.pragma_update(None, "application_id", APPLICATION_ID)
            .map_err(|e| self.err("initialise", e))?;
        tx.pragma_update(None, "user_version", SCHEMA_VERSION)
            .map_err(|e| self.err("initialise", e))?;
        tx.commit().map_err(|e| self.err("initialise", e))
    }

    /// Inserts tasks in one transaction; with `once`, only ids never sent `once` before.
    fn insert_tasks(&self, op: &'static str, batch: &[Envelope], once: bool) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let encoded = self.encode_tasks(op, batch)?;
        self.write(op, |tx| insert_encoded(tx, batch, &encoded, once))
    }

    /// The columns of `batch` that need encoding: options (JSON) and workflow frames.
    fn encode_tasks(
        &self,
        op: &'static str,
        batch: &[Envelope],
    ) -> Result<Vec<(String, Option<Vec<u8>>)>> {
        let encode_err = |source: Source| BrokerError::Backend {
            backend: "sqlite",
            location: self.path.display().to_string(),
            op,
            source,
        };
        batch
            .iter()
            .map(|e| {
                let options =
                    serde_json::to_string(&e.options).map_err(|err| encode_err(err.into()))?;
                let flow = if e.flow.is_empty() {
                    None
                } else {
                    Some(rmp_serde::to_vec_named(&e.flow).map_err(|err| encode_err(err.into()))?)
                };
                Ok((options, flow))
            })
            .collect()
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
            tx.prepare_cached(
                "UPDATE tasks SET state = ?1, due = ?2, attempts = attempts - ?5 \
                 WHERE id = ?3 AND attempts = ?4 AND state = 1",
            )?
            .execute(params![
                state,
                due,
                lease.id.to_string(),
                lease.delivery as i64,
                i64::from(!attempted)
            ])?;
            Ok(())
        })
    }

    /// Brings a version 1 database (before workflows) to the current schema.
    fn upgrade(&self) -> Result<()> {
        self.write("upgrade schema", |tx| {
            let version: i32 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
            if version < 2 {
                tx.execute_batch("ALTER TABLE tasks ADD COLUMN flow BLOB;")?;
                tx.execute_batch(WORKFLOW_TABLES)?;
            }
            tx.pragma_update(None, "user_version", SCHEMA_VERSION)
        })
    }

    /// Caps the database at `pages` pages for this connection, so tests can see what a full
    /// disk does without filling one.
    #[doc(hidden)]
    pub fn limit_pages(&self, pages: u64) -> Result<()> {
        self.lock()
            .query_row(&format!("PRAGMA max_page_count = {pages}"), [], |_| Ok(()))
            .map_err(|e| self.err("max_page_count", e))
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn err(&self, op: &'static str, e: rusqlite::Error) -> BrokerError {
        BrokerError::Backend {
            backend: "sqlite",
            location: self.path.display().to_string(),
            op,
            source: Box::new(e),
        }
    }

    /// Runs `f` in an IMMEDIATE transaction (takes the write lock up front, so two processes
    /// never deadlock upgrading a read) and wakes local waiters after the commit.
    fn write<T>(
        &self,
        op: &'static str,
        f: impl FnOnce(&rusqlite::Transaction<'_>) -> rusqlite::Result<T>,
    ) -> Result<T> {
        let out = self.write_quietly(op, f)?;
        *self.local_writes.lock().unwrap_or_else(|p| p.into_inner()) += 1;
        self.written.notify_all();
        Ok(out)
    }

    /// A write that wakes no waiter in this process (a reserve: it makes nothing new to wait
    /// for, and counting it would wake its own caller).
    fn write_quietly<T>(
        &self,
        op: &'static str,
        f: impl FnOnce(&rusqlite::Transaction<'_>) -> rusqlite::Result<T>,
    ) -> Result<T> {
        let out = {
            let mut conn = self.lock();
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(|e| self.err(op, e))?;
            let out = f(&tx).map_err(|e| self.err(op, e))?;
            tx.commit().map_err(|e| self.err(op, e))?;
            out
        };
        Ok(out)
    }

    /// Where the database stands: other connections' commits and this process's writes. Taken
    /// *before* a look at the data, so a change between the look and the wait is not missed.
    fn change_marker(&self) -> Result<(i64, u64)> {
        let version = self.data_version()?;
        let local = *self.local_writes.lock().unwrap_or_else(|p| p.into_inner());
        Ok((version, local))
    }

    fn data_version(&self) -> Result<i64> {
        self.lock()
            .query_row("PRAGMA data_version", [], |r| r.get(0))
            .map_err(|e| self.err("data_version", e))
    }

    /// Blocks until another process commits, this process writes, or `until` passes.
    fn wait_for_change(&self, until: Instant, marker: (i64, u64)) -> Result<()> {
        let (start_version, start_local) = marker;
        let mut local = self.local_writes.lock().unwrap_or_else(|p| p.into_inner());
        let mut interval = Duration::from_millis(1);
        let idle_since = Instant::now();
        loop {
            let now = Instant::now();
            if now >= until {
                return Ok(());
            }
            local = self
                .written
                .wait_timeout(local, interval.min(until - now))
                .unwrap_or_else(|p| p.into_inner())
                .0;
            if *local != start_local {
                return Ok(());
            }
            drop(local);
            if self.data_version()? != start_version {
                return Ok(());
            }
            if idle_since.elapsed() > Duration::from_millis(200) {
                interval = Duration::from_millis(10);
            }
            local = self.local_writes.lock().unwrap_or_else(|p| p.into_inner());
        }
    }

    /// One attempt at reserving; also returns when the next scheduled task or lease falls due.
    fn try_reserve(
        &self,
        queues: &[String],
        max: usize,
        lease: Duration,
    ) -> Result<(Vec<Delivery>, Option<Timestamp>)> {
        let now = Timestamp::now();
        let until = (now + lease).as_millis();
        self.write_quietly("reserve", |tx| {
            tx.prepare_cached("UPDATE tasks SET state = 0 WHERE state != 0 AND due <= ?1")?
                .execute([now.as_millis()])?;
            // Per queue, the best candidates by index; then the best of them all.
            let mut candidates: Vec<(i64, i64)> = Vec::new();
            let mut pick = tx.prepare_cached(
                "SELECT priority, seq FROM tasks WHERE state = 0 AND queue = ?1 ORDER BY priority DESC, seq LIMIT ?2",
            )?;
            for q in queues {
                let rows = pick.query_map(params![q, max as i64], |r| Ok((r.get(0)?, r.get(1)?)))?;
                for row in rows {
                    candidates.push(row?);
                }
            }
            candidates.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
            candidates.truncate(max);
            let mut take = tx.prepare_cached(
                "UPDATE tasks SET state = 1, due = ?1, attempts = attempts + 1 WHERE seq = ?2 AND state = 0 \
                 RETURNING id, queue, priority, attempts, task, codec, args, options, eta, expires, created, flow",
            )?;
            let mut out = Vec::with_capacity(candidates.len());
            for (_, seq) in candidates {
                // `state = 0`: a candidate listed twice (a queue named twice) is taken once.
                let Some(envelope) = take
                    .query_row(params![until, seq], row_to_envelope)
                    .optional()?
                else {
                    continue;
                };
                out.push(Delivery {
                    lease: Lease {
                        id: envelope.id,
                        delivery: envelope.attempts,
                    },
                    envelope,
                });
            }
            let next_due: Option<i64> = tx
                .prepare_cached("SELECT min(due) FROM tasks WHERE state != 0")?
                .query_row([], |r| r.get(0))?;
            Ok((out, next_due.map(Timestamp::from_millis)))
        })
    }
}
impl Broker for SqliteBackend {
    fn enqueue(&self, batch: &[Envelope]) -> Result<()> {
        self.insert_tasks("enqueue", batch, false)
    }

    fn enqueue_once(&self, batch: &[Envelope]) -> Result<()> {
        self.insert_tasks("enqueue once", batch, true)
    }

    fn reserve(
        &self,
        queues: &[String],
        max: usize,
        lease: Duration,
        wait: Duration,
    ) -> Result<Vec<Delivery>> {
        let deadline = Instant::now() + wait;
        loop {
            let marker = self.change_marker()?;
            let (got, next_due) = self.try_reserve(queues, max, lease)?;
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
                "UPDATE tasks SET due = ?1 WHERE id = ?2 AND attempts = ?3 AND state = 1 \
                 AND NOT EXISTS (SELECT 1 FROM revoked WHERE id = ?2)",
            )?;
            let mut lost = Vec::new();
            for l in leases {
                if upd.execute(params![until, l.id.to_string(), l.delivery as i64])? == 0 {
                    lost.push(*l);
                }
            }
            Ok(lost)
        })
    }

    fn complete(&self, leases: &[Lease]) -> Result<()> {
        self.write("ack", |tx| delete_acked(tx, leases))
    }

    fn complete_and_send(&self, leases: &[Lease], next: &[Envelope]) -> Result<()> {
        let encoded = self.encode_tasks("ack and send", next)?;
        self.write("ack and send", |tx| {
            insert_encoded(tx, next, &encoded, true)?;
            delete_acked(tx, leases)
        })
    }

    fn retry(&self, lease: &Lease, delay: Duration) -> Result<()> {
        self.requeue("nack", lease, delay, true)
    }

    fn snooze(&self, lease: &Lease, delay: Duration) -> Result<()> {
        self.requeue("defer", lease, delay, false)
    }

    fn discard(&self, lease: &Lease, envelope: &Envelope, error: &TaskError) -> Result<()> {
        let env = serde_json::to_string(envelope).expect("envelope encodes");
        let err = serde_json::to_string(error).expect("error encodes");
        self.write("dead-letter", |tx| {
            let held = tx
                .prepare_cached("DELETE FROM tasks WHERE id = ?1 AND attempts = ?2 AND state = 1")?
                .execute(params![lease.id.to_string(), lease.delivery as i64])?;
            // A stale lease: the task lives on elsewhere, so it is not dead.
            if held == 1 {
                tx.prepare_cached(
                    "INSERT INTO dead_letters (id, envelope, error, at) VALUES (?1, ?2, ?3, ?4)",
                )?
                .execute(params![
                    envelope.id.to_string(),
                    env,
                    err,
                    Timestamp::now().as_millis()
                ])?;
            }
            Ok(())
        })
    }

    fn revoke(&self, id: TaskId) -> Result<Revoked> {
        let now = Timestamp::now();
        let forget_before = now.as_millis() - REVOKE_MEMORY.as_millis() as i64;
        self.write("revoke", |tx| {
            tx.execute("DELETE FROM revoked WHERE at < ?1", [forget_before])?;
            tx.execute(
                "INSERT OR REPLACE INTO revoked (id, at) VALUES (?1, ?2)",
                params![id.to_string(), now.as_millis()],
            )?;
            if tx.execute(
                "DELETE FROM tasks WHERE id = ?1 AND state != 1 AND flow IS NULL",
                [id.to_string()],
            )? > 0
            {
                return Ok(Revoked::Pending);
            }
            // A workflow step stays, to be delivered and dropped by a worker, which then fails
            // the rest of its workflow.
            let waiting_step: Option<i64> = tx
                .query_row(
                    "SELECT 1 FROM tasks WHERE id = ?1 AND state != 1",
                    [id.to_string()],
                    |r| r.get(0),
                )
                .optional()?;
            if waiting_step.is_some() {
                return Ok(Revoked::Pending);
            }
            let running: Option<i64> = tx
                .query_row("SELECT 1 FROM tasks WHERE id = ?1", [id.to_string()], |r| {
                    r.get(0)
                })
                .optional()?;
            Ok(if running.is_some() {
                Revoked::Running
            } else {
                Revoked::NotFound
            })
        })
    }

    fn revoked(&self, ids: &[TaskId]) -> Result<Vec<TaskId>> {
        let conn = self.lock();
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
        let info = serde_json::to_string(worker).expect("worker info encodes");
        self.write("heartbeat", |tx| {
            tx.prepare_cached(
                "INSERT OR REPLACE INTO workers (id, info, heartbeat) VALUES (?1, ?2, ?3)",
            )?
            .execute(params![worker.id, info, worker.heartbeat.as_millis()])?;
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
        let conn = self.lock();
        let mut q = conn
            .prepare("SELECT info FROM workers WHERE heartbeat >= ?1 ORDER BY id")
            .map_err(|e| self.err("workers", e))?;
        let rows = q
            .query_map([since], |r| r.get::<_, String>(0))
            .map_err(|e| self.err("workers", e))?;
        let mut out = Vec::new();
        for row in rows {
            let info = row.map_err(|e| self.err("workers", e))?;
            out.push(serde_json::from_str(&info).map_err(|e| BrokerError::Corrupt(e.to_string()))?);
        }
        Ok(out)
    }
}

impl Admin for SqliteBackend {
    fn stats(&self) -> Result<Vec<QueueStats>> {
        let conn = self.lock();
        let mut q = conn
            .prepare(
                "SELECT queue, state, count(*) FROM tasks GROUP BY queue, state ORDER BY queue",
            )
            .map_err(|e| self.err("stats", e))?;
        let rows = q
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            })
            .map_err(|e| self.err("stats", e))?;
        let mut by: Vec<QueueStats> = Vec::new();
        for row in rows {
            let (queue, state, n) = row.map_err(|e| self.err("stats", e))?;
            if by.last().is_none_or(|s| s.queue != queue) {
                by.push(QueueStats {
                    queue,
                    ..Default::default()
                });
            }
            let s = by.last_mut().expect("pushed above");
            match state {
                READY => s.ready += n as u64,
                RESERVED => s.reserved += n as u64,
                _ => s.scheduled += n as u64,
            }
        }
        Ok(by)
    }

    fn purge(&self, queue: &str) -> Result<u64> {
        self.write("purge", |tx| {
            Ok(tx.execute("DELETE FROM tasks WHERE queue = ?1 AND state != 1", [queue])? as u64)
        })
    }

    fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>> {
        let conn = self.lock();
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
            out.push(DeadLetter {
                envelope: serde_json::from_str(&env)
                    .map_err(|e| BrokerError::Corrupt(e.to_string()))?,
                error: serde_json::from_str(&err)
                    .map_err(|e| BrokerError::Corrupt(e.to_string()))?,
                at: Timestamp::from_millis(at),
            });
        }
        Ok(out)
    }
}

/// A value in a column that does not decode: reported as a conversion failure of that column.
fn corrupt<E: std::error::Error + Send + Sync + 'static>(col: usize, e: E) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(col, rusqlite::types::Type::Text, Box::new(e))
}

fn parse_codec(col: usize, text: &str) -> rusqlite::Result<Codec> {
    text.parse()
        .map_err(|e: String| corrupt(col, std::io::Error::other(e)))
}

/// Columns: id, task, state, value, codec, error, attempts, worker, started, updated, expires.
fn row_to_result(r: &rusqlite::Row<'_>) -> rusqlite::Result<ResultRecord> {
    let id: String = r.get(0)?;
    let state: String = r.get(2)?;
    let error: Option<String> = r.get(5)?;
    Ok(ResultRecord {
        id: id.parse().map_err(|e| corrupt(0, e))?,
        task: r.get(1)?,
        state: state.parse::<TaskState>().map_err(|e| corrupt(2, e))?,
        value: r.get(3)?,
        codec: parse_codec(4, &r.get::<_, String>(4)?)?,
        error: error
            .map(|e| serde_json::from_str(&e))
            .transpose()
            .map_err(|e| corrupt(5, e))?,
        attempts: r.get::<_, i64>(6)? as u32,
        worker: r.get(7)?,
        started: r.get::<_, Option<i64>>(8)?.map(Timestamp::from_millis),
        updated: Timestamp::from_millis(r.get(9)?),
        expires: r.get::<_, Option<i64>>(10)?.map(Timestamp::from_millis),
    })
}

/// Inserts encoded tasks in `tx`; with `once`, only ids never sent `once` before.
fn insert_encoded(
    tx: &rusqlite::Transaction<'_>,
    batch: &[Envelope],
    encoded: &[(String, Option<Vec<u8>>)],
    once: bool,
) -> rusqlite::Result<()> {
    let now = Timestamp::now();
    let mut ins = tx.prepare_cached(
        "INSERT OR REPLACE INTO tasks (id, queue, priority, state, due, attempts, task, codec, args, options, eta, expires, created, flow) \
         SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14 \
         WHERE ?14 IS NOT NULL OR NOT EXISTS (SELECT 1 FROM revoked WHERE id = ?1)",
    )?;
    let mut mark =
        tx.prepare_cached("INSERT OR IGNORE INTO sent_once (id, until) VALUES (?1, ?2)")?;
    let until = (now + ONCE_TTL).as_millis();
    for (e, (options, flow)) in batch.iter().zip(encoded) {
        if once && mark.execute(params![e.id.to_string(), until])? == 0 {
            continue;
        }
        let (state, due) = match e.eta {
            Some(t) if t > now => (SCHEDULED, t.as_millis()),
            _ => (READY, 0),
        };
        ins.execute(params![
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
        ])?;
    }
    Ok(())
}

fn delete_acked(tx: &rusqlite::Transaction<'_>, leases: &[Lease]) -> rusqlite::Result<()> {
    let mut del =
        tx.prepare_cached("DELETE FROM tasks WHERE id = ?1 AND attempts = ?2 AND state = 1")?;
    for l in leases {
        del.execute(params![l.id.to_string(), l.delivery as i64])?;
    }
    Ok(())
}

/// Columns: id, queue, priority, attempts, task, codec, args, options, eta, expires, created,
/// flow.
fn row_to_envelope(r: &rusqlite::Row<'_>) -> rusqlite::Result<Envelope> {
    let id: String = r.get(0)?;
    let options: String = r.get(7)?;
    Ok(Envelope {
        id: id.parse().map_err(|e| corrupt(0, e))?,
        queue: r.get(1)?,
        priority: r.get::<_, i64>(2)? as u8,
        attempts: r.get::<_, i64>(3)? as u32,
        task: r.get(4)?,
        codec: parse_codec(5, &r.get::<_, String>(5)?)?,
        args: r.get(6)?,
        options: serde_json::from_str(&options).map_err(|e| corrupt(7, e))?,
        eta: r.get::<_, Option<i64>>(8)?.map(Timestamp::from_millis),
        expires: r.get::<_, Option<i64>>(9)?.map(Timestamp::from_millis),
        created: Timestamp::from_millis(r.get(10)?),
        flow: match r.get::<_, Option<Vec<u8>>>(11)? {
            Some(bytes) => rmp_serde::from_slice(&bytes).map_err(|e| corrupt(11, e))?,
            None => Vec::new(),
        },
    })
}

impl ResultStore for SqliteBackend {
    fn store(&self, records: &[ResultRecord]) -> Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        let errors: Vec<Option<String>> = records
            .iter()
            .map(|r| {
                r.error
                    .as_ref()
                    .map(|e| serde_json::to_string(e).expect("error encodes"))
            })
            .collect();
        self.write("store results", |tx| {
            let mut ins = tx.prepare_cached(
                "INSERT OR REPLACE INTO results (id, task, state, value, codec, error, attempts, worker, started, updated, expires) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            )?;
            for (r, err) in records.iter().zip(&errors) {
                ins.execute(params![
                    r.id.to_string(),
                    r.task,
                    r.state.as_str(),
                    r.value,
                    r.codec.as_str(),
                    err,
                    r.attempts as i64,
                    r.worker,
                    r.started.map(Timestamp::as_millis),
                    r.updated.as_millis(),
                    r.expires.map(Timestamp::as_millis),
                ])?;
            }
            Ok(())
        })
    }

    fn get(&self, id: TaskId) -> Result<Option<ResultRecord>> {
        let conn = self.lock();
        let mut q = conn
            .prepare_cached(
                "SELECT id, task, state, value, codec, error, attempts, worker, started, updated, expires \
                 FROM results WHERE id = ?1 AND (expires IS NULL OR expires > ?2)",
            )
            .map_err(|e| self.err("get result", e))?;
        q.query_row(
            params![id.to_string(), Timestamp::now().as_millis()],
            row_to_result,
        )
        .optional()
        .map_err(|e| self.err("get result", e))
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

    fn join(&self, entries: &[JoinEntry<'_>]) -> Result<Vec<Option<Vec<Vec<u8>>>>> {
        let until = (Timestamp::now() + ONCE_TTL).as_millis();
        self.write("join", |tx| {
            let mut update =
                tx.prepare_cached("UPDATE joins SET value = ?3 WHERE id = ?1 AND idx = ?2")?;
            let mut insert = tx.prepare_cached(
                "INSERT INTO joins (id, idx, value, until) VALUES (?1, ?2, ?3, ?4)",
            )?;
            let mut bump = tx.prepare_cached(
                "INSERT INTO join_counts (id, n, until) VALUES (?1, 1, ?2) \
                 ON CONFLICT(id) DO UPDATE SET n = n + 1 RETURNING n",
            )?;
            let mut read_count = tx.prepare_cached("SELECT n FROM join_counts WHERE id = ?1")?;
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
                    read_count.query_row([&key], |r| r.get(0))?
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
        self.lock()
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

    fn purge_expired(&self) -> Result<u64> {
        let now = Timestamp::now().as_millis();
        self.write("purge expired results", |tx| {
            tx.execute("DELETE FROM sent_once WHERE until <= ?1", [now])?;
            tx.execute("DELETE FROM joins WHERE until <= ?1", [now])?;
            tx.execute("DELETE FROM join_counts WHERE until <= ?1", [now])?;
            tx.execute("DELETE FROM blobs WHERE until <= ?1", [now])?;
            Ok(tx.execute(
                "DELETE FROM results WHERE expires IS NOT NULL AND expires <= ?1",
                [now],
            )? as u64)
        })
    }
}
