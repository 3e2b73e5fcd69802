//! The file's schema and its upgrades: a new file is created, a lovage file of an older version
//! is brought up to date, and anything else (another application's database, a newer lovage's)
//! is refused untouched.

use rusqlite::TransactionBehavior;

use super::SqliteBackend;
use crate::{BrokerError, Result};

/// `PRAGMA application_id` of a lovage database ("LOVA").
const APPLICATION_ID: i32 = 0x4c4f_5641;
/// Schema version in `PRAGMA user_version`.
const SCHEMA_VERSION: i32 = 8;

// The values of `tasks.state`.
pub(super) const READY: i64 = 0;
pub(super) const RESERVED: i64 = 1;
pub(super) const SCHEDULED: i64 = 2;

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

/// Added in schema version 3: fencing tokens. `tasks.fence` is the token of the delivery that
/// holds a task (0: none); `meta`'s `fence` row is the last token drawn.
const FENCES: &str = "
ALTER TABLE tasks ADD COLUMN fence INTEGER NOT NULL DEFAULT 0;
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
";

/// Indexes added in schema version 3, so the purge of expired rows and the pruning of
/// revoked ids read only what they delete instead of scanning their tables under the write
/// lock; also created by the upgrade from 2.
const V3_INDEXES: &str = "
CREATE INDEX IF NOT EXISTS sent_once_until ON sent_once(until);
CREATE INDEX IF NOT EXISTS joins_until ON joins(until);
CREATE INDEX IF NOT EXISTS join_counts_until ON join_counts(until);
CREATE INDEX IF NOT EXISTS blobs_until ON blobs(until);
CREATE INDEX IF NOT EXISTS revoked_at ON revoked(at);
";

/// Added in schema version 4: what operators read (the task index, counters, paused queues,
/// the event stream, the control mailbox). The index is columns of `tasks` and `results`
/// written by the statements that already write those rows, plus an index of the records that
/// are not SUCCESS (the rare ones a state filter looks for; most records are SUCCESS, and an
/// index of them all cost a sixth of the end-to-end throughput); `counters` rows
/// `lovage:count:*` are the counts by state.
const OPS: &str = "
ALTER TABLE tasks ADD COLUMN received INTEGER;
ALTER TABLE results ADD COLUMN queue TEXT;
ALTER TABLE results ADD COLUMN preview BLOB;
ALTER TABLE results ADD COLUMN received INTEGER;
CREATE INDEX IF NOT EXISTS results_state ON results(state, id) WHERE state != 'SUCCESS';
CREATE INDEX IF NOT EXISTS dead_letters_id ON dead_letters(id);
CREATE TABLE IF NOT EXISTS paused (queue TEXT PRIMARY KEY) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS events (last INTEGER PRIMARY KEY, first INTEGER NOT NULL, body BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS control (
    seq     INTEGER PRIMARY KEY AUTOINCREMENT,
    worker  TEXT    NOT NULL,
    body    TEXT    NOT NULL,
    expires INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS control_worker ON control(worker, seq);
CREATE TABLE IF NOT EXISTS control_replies (
    seq     INTEGER PRIMARY KEY AUTOINCREMENT,
    request TEXT    NOT NULL,
    worker  TEXT    NOT NULL,
    body    TEXT    NOT NULL,
    expires INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS control_replies_request ON control_replies(request, seq);
INSERT OR REPLACE INTO counters (key, value) VALUES ('lovage:count:live', (SELECT count(*) FROM tasks));
";

/// Added in schema version 6: each queue's row count as a counter (`lovage:count:live:QUEUE`),
/// kept from then on by the writes that add and remove rows, so queue depths are read, not
/// counted.
const QUEUE_COUNTS: &str = "
INSERT OR REPLACE INTO counters (key, value)
    SELECT 'lovage:count:live:' || queue, count(*) FROM tasks GROUP BY queue;
";

/// Schema version 7: an event's number is counted from the newest `events` row, no longer from
/// `meta`'s `events` row, which is dropped. Nothing else changes, but a lovage of version 6
/// would number its events from that row, so the bump makes it refuse the file.
const EVENTS_NUMBERED_BY_ROWS: &str = "
DELETE FROM meta WHERE key = 'events';
";

/// Added in schema version 8: the worker a task is queued for (see `Envelope::affinity`), set
/// while it waits as a scheduled row due at its steal time and cleared when it is taken; the
/// index holds only such rows, so the common path (no affinity) pays for nothing.
const AFFINITY: &str = "
ALTER TABLE tasks ADD COLUMN affinity TEXT;
CREATE INDEX IF NOT EXISTS tasks_affine ON tasks(affinity, queue, seq) WHERE affinity IS NOT NULL;
";

/// Added in schema version 5: shared dicts and lists ([`crate::shared`]). A list item's `pos`
/// grows at the back and shrinks at the front, so pushes at either end never move a row.
const SHARED: &str = "
CREATE TABLE IF NOT EXISTS shared_dicts (
    name  TEXT NOT NULL,
    key   BLOB NOT NULL,
    value BLOB NOT NULL,
    PRIMARY KEY (name, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS shared_lists (
    name  TEXT    NOT NULL,
    pos   INTEGER NOT NULL,
    value BLOB    NOT NULL,
    PRIMARY KEY (name, pos)
) WITHOUT ROWID;
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

impl SqliteBackend {
    /// Makes the freshly opened file hold the current schema, given the `application_id` read
    /// from its header: creates it in an empty file, upgrades an older one, refuses a newer one.
    pub(super) fn prepare_schema(&self, app_id: i32) -> Result<()> {
        if app_id != APPLICATION_ID {
            self.initialise(app_id)?;
        }
        let version: i32 = self
            .conn()
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(|e| BrokerError::Open {
                backend: "sqlite",
                location: self.path.display().to_string(),
                source: e.into(),
            })?;
        if version > SCHEMA_VERSION {
            return Err(BrokerError::NotLovage {
                location: self.path.display().to_string(),
                reason: format!(
                    "its schema version {version} is newer than this lovage understands ({SCHEMA_VERSION}); upgrade lovage"
                ),
            });
        }
        if version < SCHEMA_VERSION {
            self.upgrade()?;
        }
        Ok(())
    }

    /// Creates the schema in an empty file; refuses a database that holds other tables.
    fn initialise(&self, app_id: i32) -> Result<()> {
        let mut conn = self.conn();
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
        tx.execute_batch(FENCES)
            .map_err(|e| self.err("create schema", e))?;
        tx.execute_batch(V3_INDEXES)
            .map_err(|e| self.err("create schema", e))?;
        tx.execute_batch(OPS)
            .map_err(|e| self.err("create schema", e))?;
        tx.execute_batch(SHARED)
            .map_err(|e| self.err("create schema", e))?;
        tx.execute_batch(AFFINITY)
            .map_err(|e| self.err("create schema", e))?;
        tx.pragma_update(None, "application_id", APPLICATION_ID)
            .map_err(|e| self.err("initialise", e))?;
        tx.pragma_update(None, "user_version", SCHEMA_VERSION)
            .map_err(|e| self.err("initialise", e))?;
        tx.commit().map_err(|e| self.err("initialise", e))
    }

    /// Brings an older database (1: before workflows; 2: before fencing tokens and the purge
    /// indexes; 3: before the operators' tables; 4: before shared dicts and lists; 5: before the
    /// per-queue counts; 6: before events were numbered by their rows; 7: before affinities) to the current schema.
    fn upgrade(&self) -> Result<()> {
        self.write("upgrade schema", |tx| {
            let version: i32 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
            if version < 2 {
                tx.execute_batch("ALTER TABLE tasks ADD COLUMN flow BLOB;")?;
                tx.execute_batch(WORKFLOW_TABLES)?;
            }
            if version < 3 {
                tx.execute_batch(FENCES)?;
                tx.execute_batch(V3_INDEXES)?;
            }
            if version < 4 {
                tx.execute_batch(OPS)?;
            }
            if version < 5 {
                tx.execute_batch(SHARED)?;
            }
            if version < 6 {
                tx.execute_batch(QUEUE_COUNTS)?;
            }
            if version < 7 {
                tx.execute_batch(EVENTS_NUMBERED_BY_ROWS)?;
            }
            if version < 8 {
                tx.execute_batch(AFFINITY)?;
            }
            tx.pragma_update(None, "user_version", SCHEMA_VERSION)
        })
    }
}
