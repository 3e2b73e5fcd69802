//! The embedded default: broker and result store in one SQLite file (WAL mode), shared by every
//! process on the host that opens it.
//!
//! Durability: each enqueue is a committed transaction before it returns, in WAL mode with
//! `synchronous = NORMAL`, which survives the crash (`kill -9`) of every process; a power cut may
//! lose the last transactions (there is no option for `synchronous = FULL` yet).
//!
//! Waiting: SQLite cannot push a change to another process, so a waiting reserve or result
//! wait checks `PRAGMA data_version` (a counter in shared memory that moves when another
//! connection commits) every millisecond, backing off to 10 ms when nothing happens, and is woken
//! at once by writes from this process. It re-reads tables only when something changed.
//!
//! The file is marked as lovage's by `PRAGMA application_id` ("LOVA") and its schema version
//! sits in `PRAGMA user_version` (see `schema`). Its tables:
//!
//! | table | holds |
//! |---|---|
//! | `tasks` | every waiting, scheduled or reserved task: state, due time (ETA or lease deadline), attempts, the fencing token of the delivery that holds it (`fence`, 0: none), envelope columns, workflow frames |
//! | `results` | result records, with their expiry |
//! | `counters` | `incr` |
//! | `revoked` | revoked ids, forgotten after a day |
//! | `dead_letters` | tasks that failed for the last time, with their error; the newest [`DEAD_LETTERS_KEPT`] (or `?dead_letters=N`) are kept |
//! | `workers` | worker id → info (JSON) and last heartbeat |
//! | `sent_once` | ids sent with `enqueue_once`, until [`ONCE_TTL`](crate::ONCE_TTL) |
//! | `joins`, `join_counts` | a join's member values, and how many are in; kept until [`ONCE_TTL`](crate::ONCE_TTL) after its last member came (`join_counts.until`) |
//! | `blobs` | a workflow's long chain, stored once |
//! | `locks` | named locks: holder and lapse time (also who purges expired rows) |
//! | `rate_limits` | a rate limit's theoretical arrival time (µs) |
//! | `meta` | `fence`: the last fencing token drawn |
//! | `paused` | paused queues (reserves skip them) |
//! | `events` | the event stream, a row per published batch (`first`..=`last` seq, MessagePack; the newest row's `last` is the stream's last seq), the newest [`EVENTS_KEPT`](crate::ops::EVENTS_KEPT) kept, trimmed every 4,096 events |
//! | `control`, `control_replies` | the control mailbox: requests per worker and their replies, until they expire |
//! | `shared_dicts`, `shared_lists` | shared dicts (name, key → value) and lists (name, position → item), see [`crate::shared`] |
//!
//! The task index is columns of `tasks` (`received`) and `results` (`queue`, `preview`,
//! `received`, copied from the task's row when its record is stored) with an index of
//! the records that are not SUCCESS (`results_state`); the counts by state, and since schema 6
//! each queue's row count (`lovage:count:live:QUEUE`, so queue depths are never counted over
//! the rows), are `counters` rows `lovage:count:*` moved by the transactions that change them
//! (see `tally`).
//!
//! The code, by job: `schema` (create, check and upgrade the file), `conn` (the one connection
//! and its transactions), `wait` (blocking until something changes), `broker` (a task's life,
//! locks, rate limits, presence, admin), `results` (the result store), `ops` (what operators
//! read and ask: index, pause, events, control), `shared` (shared dicts and lists), `tally` (the counts by state) and `rows` (what
//! goes in and out of a row).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::Duration;

use rusqlite::Connection;

use crate::{BrokerError, Result, Source, DEAD_LETTERS_KEPT};

mod broker;
mod checkpoint;
mod conn;
mod ops;
mod results;
mod rows;
mod schema;
mod shared;
mod tally;
mod wait;

/// Prepared statements kept per connection (there are about a hundred in this module; a
/// worker's busy path uses a few dozen).
const STATEMENTS_CACHED: usize = 64;

/// The SQLite backend: a broker and a result store in one file.
pub struct SqliteBackend {
    path: PathBuf,
    conn: Mutex<Connection>,
    /// Bumped on every write through this backend, so waiters in this process wake at once.
    local_writes: Mutex<u64>,
    written: Condvar,
    /// Dead letters kept; past this many, the oldest are dropped.
    dead_kept: AtomicUsize,
    /// `task-rejected` events of messages this process's reserves set aside.
    rejected: crate::corrupt::RejectedLog,
    /// Names this backend in the `locks` table when it takes the purge (one process purges
    /// per interval).
    holder: String,
    /// Copies the WAL back into the file off the writers' path.
    checkpoints: checkpoint::Checkpointer,
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
        // Reading the header is the first thing that fails on a file that is not SQLite.
        let app_id: i32 = conn
            .query_row("PRAGMA application_id", [], |r| r.get(0))
            .map_err(|e| BrokerError::NotLovage {
                location: path.display().to_string(),
                reason: e.to_string(),
            })?;
        set_wal(&conn).map_err(|e| open_err(format!("cannot switch to WAL mode: {e}").into()))?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(|e| open_err(e.into()))?;
        // One connection serves a worker's reserves, settles, heartbeats and waits: more
        // distinct statements than rusqlite's default cache of 16, which then re-prepares them.
        conn.set_prepared_statement_cache_capacity(STATEMENTS_CACHED);
        // Checkpoints are the `checkpoints` thread's job; SQLite's own is the backstop.
        conn.pragma_update(None, "wal_autocheckpoint", checkpoint::BACKSTOP_PAGES)
            .map_err(|e| open_err(e.into()))?;
        let backend = SqliteBackend {
            path: path.clone(),
            conn: Mutex::new(conn),
            local_writes: Mutex::new(0),
            written: Condvar::new(),
            dead_kept: AtomicUsize::new(DEAD_LETTERS_KEPT),
            rejected: Default::default(),
            holder: format!("{}:{}", std::process::id(), lovage_core::TaskId::new()),
            checkpoints: checkpoint::Checkpointer::new(path.clone()),
        };
        backend.prepare_schema(app_id)?;
        Ok(backend)
    }

    /// Caps the database at `pages` pages for this connection, so tests can see what a full
    /// disk does without filling one.
    #[doc(hidden)]
    pub fn limit_pages(&self, pages: u64) -> Result<()> {
        self.conn()
            .query_row(&format!("PRAGMA max_page_count = {pages}"), [], |_| Ok(()))
            .map_err(|e| self.err("max_page_count", e))
    }

    /// Keeps the `n` newest dead letters (at least one), dropping older ones as new ones come;
    /// [`DEAD_LETTERS_KEPT`] by default.
    pub fn keep_dead_letters(&self, n: usize) {
        self.dead_kept.store(n.max(1), Ordering::Relaxed);
    }

    fn dead_letters_kept(&self) -> usize {
        self.dead_kept.load(Ordering::Relaxed)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

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
