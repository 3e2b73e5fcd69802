//! The Redis broker and result store, for workers on many hosts.
//!
//! URLs: `redis://[user:pass@]host:port/db[?prefix=name]`, and `rediss://...` for TLS (feature
//! `redis-tls`; add `#insecure` to accept a self-signed certificate). More query options:
//! `eviction=warn` opens a server whose `maxmemory-policy` is not `noeviction` (refused
//! otherwise: evicted keys lose work silently); `durable=1` refuses a server without
//! `appendonly yes` + `appendfsync always` and makes each send wait (`WAIT`) for the replicas
//! counted at open; `task_index=1` keeps the task index that `Inspect::list_tasks` reads (off by
//! default: it costs the enqueue about a quarter). A standalone server only: a Cluster node is refused (see `checks`).
//!
//! Every key lives under one prefix (`lovage` unless the URL says `?prefix=...`):
//!
//! | key | type | holds |
//! |---|---|---|
//! | `P:tasks` | hash | id → `"{next delivery} {score} {queue length} {queue}"` + envelope (MessagePack), of every waiting or running task |
//! | `P:q:{queue}` | sorted set | ready ids, score = (9 − priority)·band + sequence: priority first, FIFO within |
//! | `P:s:{queue}` | sorted set | scheduled ids (ETA, retry delay, a task queued for a worker until its steal time), score = due time in ms |
//! | `P:a:{queue}:{worker}` | sorted set, expires | ids queued for that worker (`Envelope::affinity`), score = steal time in ms: taken first by its reserve while they still wait in `P:s:{queue}` at that score; a hint that expires a minute after its newest steal time |
//! | `P:leases` | sorted set | `{id}:{token}` of reserved tasks, score = lease deadline in ms (server time) |
//! | `P:fence` | hash | id → the fencing token of a delivery whose lease ran out, until someone takes the task again (or that delivery acks it late) |
//! | `P:fseq` | counter | the last fencing token drawn |
//! | `P:w:{queue}` | list | wake-up tokens: a waiting reserve blocks on them (BLPOP), no polling |
//! | `P:w:{queue}:{worker}` | list, expires | wake-up tokens for the tasks queued for that worker: its waiting reserve blocks on them too |
//! | `P:queues` | set | queue names seen |
//! | `P:layout` | string | this key layout's version (`4`); layout 3 is upgraded in place, another is refused |
//! | `P:revoked` | sorted set | revoked ids, score = when to forget them (24 h) |
//! | `P:r:{second}` | hash, TTL | results (JSON) with a time to live of tasks created in that second (see `results`) |
//! | `P:rk:{second}` | hash | results kept forever, likewise |
//! | `P:waiting` | sorted set | ids someone waits for, score = when the entry goes stale |
//! | `P:n:{id}` | list, short TTL | "a final result was stored": waiters block on it |
//! | `P:c:{key}` | counter | `incr` |
//! | `P:once` | sorted set | ids sent with `enqueue_once`, score = when to forget them (~136 bytes an id; docs/guarantees.md) |
//! | `P:j:{id}` | hash, TTL | a join (group/chord): member index → its result |
//! | `P:b:{id}` | string, TTL | a blob: a long chain of a workflow, stored once |
//! | `P:lock:{name}` | string, TTL | a lock's holder (`lovage beat`'s leader) |
//! | `P:rate:{key}` | string, TTL | a rate limit's theoretical arrival time (µs) |
//! | `P:dead` | list | dead letters, newest first, capped at [`DEAD_LETTERS_KEPT`] (or `?dead_letters=N`) |
//! | `P:corrupt` | hash | id → a task value that does not parse, set aside by a script until a reserve's client dead-letters it |
//! | `P:workers` | hash | worker id → info (JSON) |
//! | `P:ix` | sorted set | with `?task_index=1` only: the task index: `{id} {queue}` of every task sent, score 0 (ordered by id, so by time); trimmed past `INDEX_KEPT` by `purge_expired` |
//! | `P:cnt` | hash | counts by state: `sent`, `succeeded`, `failed`, `retried`, `revoked`, moved by the scripts that change them (one HINCRBY per state per batch) |
//! | `P:paused` | set | paused queues (reserves skip them) |
//! | `P:events`, `P:eseq` | stream, counter | the event stream: an entry `0-{last seq}` per published batch (MessagePack), trimmed to about [`EVENTS_KEPT`](crate::ops::EVENTS_KEPT) events |
//! | `P:ctl:{worker}`, `P:rep:{request}` | list, TTL | the control mailbox: a worker's requests, a request's replies (JSON), for [`CONTROL_TTL`](crate::ops::CONTROL_TTL) |
//! | `P:sd:{name}`, `P:sl:{name}` | hash, list | a shared dict (key → value) and a shared list, MessagePack ([`crate::shared`]) |
//!
//! Where the time goes decides the layout. Redis spends its time per command and per key far
//! more than per element, so a batch of tasks costs a few variadic commands on a few big keys,
//! not commands per task: sending is one round trip (HSET tasks, ZADD per queue, sent while the
//! next chunk is written); reserving pops ids, reads their values and revoked marks with one
//! HMGET/ZMSCORE and leases them with one ZADD; acking checks and removes the lease members
//! (`id:token`, so a stale delivery removes nothing) and the tasks' fields with one
//! ZMSCORE, ZREM and HDEL; results go into one hash per second of task creation (`results`),
//! in one round trip. Measured on 2 cores, Redis's CPU per task fell by half from a hash per
//! task (layout 1) to layout 2, and by a further ~20% to this one (layout 3: results in
//! hashes, metadata in front of the envelope).
//!
//! Multi-key steps (reserve, ack, nack, extend, revoke, purge) are Lua scripts, and results
//! are written and read in MULTI/EXEC transactions, so they are atomic. A connection that fails is dropped and the error returned; the next call opens a
//! new one, so a worker retrying with backoff resumes by itself when Redis is back.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::corrupt::CorruptMessage;
use lovage_core::{TaskError, TaskId};
use redis::{Connection, Script};

mod checks;
mod ops;
mod options;
mod prefix;
mod resp;
mod results;
mod scripts;
mod send;
mod shared;

use scripts::*;
use send::{ready_score, split_task_value, write_task_value, EnqueuePacker, ENQUEUE_CHUNK};

use crate::{
    Admin, Broker, BrokerError, DeadLetter, Delivery, Envelope, JoinEntry, Lease, Locks, Presence,
    QueueStats, RateLimits, Result, ResultRecord, ResultStore, Revoked, Source, Timestamp,
    WorkerInfo, DEAD_LETTERS_KEPT, ONCE_TTL,
};

/// How long a revoked id is remembered.
const REVOKE_TTL: Duration = Duration::from_secs(24 * 3600);
/// Longest a single command may take before the connection is treated as broken.
const IO_TIMEOUT: Duration = Duration::from_secs(30);
/// A result waiter blocks at most this long before it renews its entry in `P:waiting`.
const WAIT_SLICE: Duration = Duration::from_secs(30);

/// How many ids' wake-up lists one `wait_any` blocks on.
const MAX_WATCHED: usize = 256;

/// With `?durable=1`, the longest a send waits for its replicas.
const DURABLE_WAIT: Duration = Duration::from_secs(5);

/// The key layout this build reads and writes (stored in `P:layout`). Layout 1 (no key)
/// kept a hash per task; it is recognised by its `P:seq` counter. Layout 2 kept a key per
/// result.
const LAYOUT: &str = "4";
/// The layout this build upgrades in place: layout 4 only adds the fencing keys, so layout 3's
/// tasks read the same (its in-flight leases run out and are delivered again).
const UPGRADES_FROM: &str = "3";

/// Most tasks one reserve call returns (Lua's `unpack` has a stack limit).
const RESERVE_MAX: usize = 1000;

/// The Redis backend: a broker and a result store on one server.
pub struct RedisBackend {
    client: redis::Client,
    prefix: String,
    location: String,
    /// Idle connections; a call takes one (or opens one) and puts it back if it still works.
    pool: Mutex<Vec<Connection>>,
    /// With `?durable=1`: the replicas a send waits for (`WAIT`), as counted at open.
    wait_replicas: Option<usize>,
    /// With `?task_index=1`: sends add their tasks to the index `P:ix`.
    task_index: bool,
    scripts: Scripts,
    /// Dead letters kept; past this many, the oldest are dropped.
    dead_kept: AtomicUsize,
    /// `task-rejected` events of messages this process's reserves set aside.
    rejected: crate::corrupt::RejectedLog,
}

struct Scripts {
    reserve: Script,
    ack: Script,
    nack: Script,
    extend: Script,
    revoke: Script,
    purge: Script,
    delete_tasks: Script,
    dead_letter: Script,
    stats: Script,
    enqueue_once: Script,
    enqueue_in_scope: Script,
    join: Script,
    store_results: Script,
    store_and_ack: Script,
    publish: Script,
    lock: Script,
    unlock: Script,
    acquire: Script,
}

impl RedisBackend {
    /// Opens `redis://[user:pass@]host:port/db[?prefix=name&eviction=warn&durable=1]` (or
    /// `rediss://` when built with TLS); checks that the server answers, is a standalone Redis
    /// 7 or newer that never evicts keys (unless `eviction=warn`), and for `durable=1` that it
    /// fsyncs every write.
    pub fn open(url: &str) -> Result<Self> {
        let location = redact(url.split(['?', '#']).next().unwrap_or(url));
        let options = options::UrlOptions::parse(url, &location)?;
        let (base, prefix) = (options.client_url.as_str(), options.prefix.clone());
        if base.starts_with("rediss://") && !cfg!(feature = "redis-tls") {
            return Err(BrokerError::BadUrl {
                url: location,
                reason: "this build has no TLS; build lovage-broker with the `redis-tls` feature"
                    .into(),
            });
        }
        let client = redis::Client::open(base).map_err(|e| BrokerError::BadUrl {
            url: location.clone(),
            reason: e.to_string(),
        })?;
        let with_meta = |body: &str| Script::new(&format!("{META}\n{body}"));
        let mut backend = RedisBackend {
            client,
            prefix,
            location,
            pool: Mutex::new(Vec::new()),
            dead_kept: AtomicUsize::new(DEAD_LETTERS_KEPT),
            rejected: Default::default(),
            wait_replicas: None,
            task_index: options.task_index,
            scripts: Scripts {
                reserve: with_meta(RESERVE),
                ack: with_meta(&format!("{ACK_FN}\n{ACK}")),
                nack: with_meta(NACK),
                extend: with_meta(EXTEND),
                revoke: with_meta(REVOKE),
                purge: with_meta(PURGE),
                delete_tasks: with_meta(DELETE_TASKS),
                dead_letter: with_meta(DEAD_LETTER),
                stats: with_meta(STATS),
                enqueue_once: with_meta(&format!("{SEND_ONCE_FN}\n{ENQUEUE_ONCE}")),
                enqueue_in_scope: with_meta(&format!("{SEND_ONCE_FN}\n{ENQUEUE_IN_SCOPE}")),
                join: Script::new(JOIN),
                store_results: with_meta(&format!("{STORE_FN}\n{STORE_RESULTS}")),
                store_and_ack: with_meta(&format!(
                    "{STORE_FN}\n{ACK_FN}\n{EVENTS_FN}\n{STORE_AND_ACK}"
                )),
                publish: Script::new(&format!("{EVENTS_FN}\n{PUBLISH}")),
                lock: Script::new(LOCK),
                acquire: Script::new(ACQUIRE),
                unlock: Script::new(UNLOCK),
            },
        };
        backend
            .with_conn("connect", |c| redis::cmd("PING").query::<String>(c))
            .map_err(|e| match e {
                BrokerError::Backend { source, .. } => BrokerError::Open {
                    backend: "redis",
                    location: backend.location.clone(),
                    source,
                },
                other => other,
            })?;
        backend.check_version()?;
        backend.check_not_cluster()?;
        backend.check_eviction(options.eviction)?;
        if options.durable {
            backend.wait_replicas = Some(backend.check_durable()?);
        }
        backend.check_layout()?;
        Ok(backend)
    }

    /// Refuses a server older than Redis 7.0 (the result store's `PEXPIRE ... NX|GT`).
    fn check_version(&self) -> Result<()> {
        let info: String = self.with_conn("check version", |c| {
            redis::cmd("INFO").arg("server").query(c)
        })?;
        let version = info
            .lines()
            .find_map(|l| l.strip_prefix("redis_version:"))
            .map(str::trim)
            .unwrap_or("unknown");
        match version
            .split('.')
            .next()
            .and_then(|m| m.parse::<u32>().ok())
        {
            Some(major) if major >= 7 => Ok(()),
            _ => Err(BrokerError::Open {
                backend: "redis",
                location: self.location.clone(),
                source: format!("Redis {version} is too old; lovage needs Redis 7.0 or newer")
                    .into(),
            }),
        }
    }

    /// Marks the prefix with this build's key layout, or refuses one written by another: an
    /// older layout's tasks would be invisible to this one (and dropped).
    fn check_layout(&self) -> Result<()> {
        let found: Option<String> = self.with_conn("check layout", |c| {
            redis::Script::new(CLAIM_LAYOUT)
                .arg(&self.prefix)
                .arg(LAYOUT)
                .arg(UPGRADES_FROM)
                .invoke(c)
        })?;
        match found.as_deref() {
            None => Ok(()),
            Some(other) => Err(BrokerError::Open {
                backend: "redis",
                location: format!("{} (prefix {})", self.location, self.prefix),
                source: format!(
                    "its keys are in lovage's Redis layout {other:?}, this build uses {LAYOUT:?}; \
                     drain that prefix with the version that wrote it, or use another prefix"
                )
                .into(),
            }),
        }
    }

    /// Keeps the `n` newest dead letters (at least one), dropping older ones as new ones come;
    /// [`DEAD_LETTERS_KEPT`] by default.
    pub fn keep_dead_letters(&self, n: usize) {
        self.dead_kept.store(n.max(1), Ordering::Relaxed);
    }

    /// Dead letters kept, as `LTRIM` counts.
    fn dead_kept(&self) -> isize {
        self.dead_kept
            .load(Ordering::Relaxed)
            .min(isize::MAX as usize) as isize
    }

    /// The key prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    fn key(&self, parts: &str) -> String {
        format!("{}:{parts}", self.prefix)
    }

    /// Dead-letters a reserved task whose value does not decode (it holds the lease of the
    /// delivery its value names), and records FAILURE for it.
    fn bury_leased(&self, id: &str, fence: u64, value: &[u8], reason: &str) -> Result<()> {
        let bad = corrupt_message(id, value, reason);
        let record =
            serde_json::to_string(&bad.dead_letter()).map_err(|e| self.err("dead-letter", e))?;
        let mut inv = self.scripts.dead_letter.prepare_invoke();
        inv.arg(&self.prefix)
            .arg(id)
            .arg(fence)
            .arg(record)
            .arg(self.dead_kept());
        self.with_conn("dead-letter", |c| inv.invoke::<i64>(c))?;
        self.record_corrupt(&bad)
    }

    /// A transaction that adds the dead letter `record` (JSON) and trims the list to the cap;
    /// callers may add commands to it.
    fn dead_letter_pipe(&self, record: &str) -> redis::Pipeline {
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("LPUSH")
            .arg(self.key("dead"))
            .arg(record)
            .ignore()
            .cmd("LTRIM")
            .arg(self.key("dead"))
            .arg(0)
            .arg(self.dead_kept() - 1)
            .ignore();
        pipe
    }

    /// Dead-letters a task a script set aside because its value does not parse, and records
    /// FAILURE for it.
    fn bury_set_aside(&self, id: &str, value: &[u8]) -> Result<()> {
        let bad = corrupt_message(id, value, "its value is not a lovage task value");
        let record =
            serde_json::to_string(&bad.dead_letter()).map_err(|e| self.err("dead-letter", e))?;
        self.with_conn("dead-letter", |c| {
            self.dead_letter_pipe(&record)
                .cmd("HDEL")
                .arg(self.key("corrupt"))
                .arg(id)
                .ignore()
                .query::<()>(c)
        })?;
        self.record_corrupt(&bad)
    }

    /// The FAILURE record of a task that could not be decoded, where its id parses; logged once.
    fn record_corrupt(&self, bad: &CorruptMessage) -> Result<()> {
        bad.log();
        // Its dead letter is written: a worker may tell of it now.
        self.rejected.note(bad);
        match bad.record() {
            Some(r) => self.store(&[r]),
            None => Ok(()),
        }
    }

    fn err(&self, op: &'static str, e: impl Into<Source>) -> BrokerError {
        BrokerError::Backend {
            backend: "redis",
            location: self.location.clone(),
            op,
            source: e.into(),
        }
    }

    fn connection(&self) -> redis::RedisResult<Connection> {
        if let Some(c) = self.pool.lock().unwrap_or_else(|p| p.into_inner()).pop() {
            return Ok(c);
        }
        let c = self
            .client
            .get_connection_with_timeout(Duration::from_secs(5))?;
        // A silent network partition must end in an error (and a retry), not a hang.
        c.set_read_timeout(Some(IO_TIMEOUT))?;
        c.set_write_timeout(Some(IO_TIMEOUT))?;
        Ok(c)
    }

    /// Runs `f` on a pooled connection; a connection that failed is not put back.
    fn with_conn<T>(
        &self,
        op: &'static str,
        f: impl FnOnce(&mut Connection) -> redis::RedisResult<T>,
    ) -> Result<T> {
        let mut c = self.connection().map_err(|e| self.err(op, e))?;
        match f(&mut c) {
            Ok(v) => {
                let mut pool = self.pool.lock().unwrap_or_else(|p| p.into_inner());
                if pool.len() < 16 {
                    pool.push(c);
                }
                Ok(v)
            }
            Err(e) => {
                if e.kind() == redis::ErrorKind::ReadOnly {
                    // The server was demoted to a replica (a failover): every idle connection
                    // leads to it too. Drop them all, so the retry connects afresh (to the new
                    // primary, once the address points there).
                    self.pool.lock().unwrap_or_else(|p| p.into_inner()).clear();
                } else if in_step_after(&e) {
                    self.pool.lock().unwrap_or_else(|p| p.into_inner()).push(c);
                }
                Err(self.err(op, e))
            }
        }
    }

    /// Idle connections in the pool (for tests of what the pool keeps).
    #[doc(hidden)]
    pub fn idle_connections(&self) -> usize {
        self.pool.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// With `?durable=1` and replicas: waits until every replica counted at open has the
    /// writes made so far on `c` (WAIT counts a connection's own writes, so it runs on the
    /// connection that sent), so a failover to one of them loses none of them. Returns how
    /// many replicas lag, if any.
    fn wait_for_replicas(&self, c: &mut Connection) -> redis::RedisResult<Option<(usize, usize)>> {
        let Some(replicas) = self.wait_replicas.filter(|n| *n > 0) else {
            return Ok(None);
        };
        let acked: usize = redis::cmd("WAIT")
            .arg(replicas)
            .arg(DURABLE_WAIT.as_millis() as u64)
            .query(c)?;
        Ok((acked < replicas).then_some((acked, replicas)))
    }

    /// The error of a send whose replicas did not all acknowledge it: transient, and a retry
    /// rewrites the same tasks in place.
    fn replicas_lag(&self, (acked, replicas): (usize, usize)) -> BrokerError {
        self.err(
            "wait for replicas",
            std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!(
                    "stored on the primary, but only {acked} of {replicas} replicas had it \
                     within {DURABLE_WAIT:?} (durable=1)"
                ),
            ),
        )
    }

    /// Blocks on one of `keys` (BLPOP) for up to `timeout`; true if a token arrived.
    fn block_on_lists(&self, op: &'static str, keys: &[String], timeout: Duration) -> Result<bool> {
        Ok(self.pop_any(op, keys, timeout)?.is_some())
    }

    /// BLPOP on `keys` for up to `timeout`: the key that had an entry, if any.
    fn pop_any(
        &self,
        op: &'static str,
        keys: &[String],
        timeout: Duration,
    ) -> Result<Option<String>> {
        if timeout.is_zero() || keys.is_empty() {
            return Ok(None);
        }
        let secs = timeout.as_secs_f64().max(0.001);
        let interrupted = std::cell::Cell::new(false);
        let got = self.with_conn(op, |c| {
            c.set_read_timeout(Some(timeout + Duration::from_secs(5)))?;
            let got: redis::RedisResult<Option<(String, String)>> =
                redis::cmd("BLPOP").arg(keys).arg(secs).query(c);
            if let Err(e) = &got {
                interrupted.set(is_interrupted(e));
            }
            c.set_read_timeout(Some(IO_TIMEOUT))?;
            Ok(got?.map(|(k, _)| k))
        });
        match got {
            // A signal cut the wait short (a read with a timeout is not restarted); the
            // connection was dropped, so no reply can arrive on it out of turn. Wake up early.
            Err(_) if interrupted.get() => Ok(None),
            other => other,
        }
    }

    /// Puts a held task back (the NACK script); `attempted` is false for a deferral.
    fn requeue(
        &self,
        op: &'static str,
        lease: &Lease,
        delay: Duration,
        attempted: bool,
    ) -> Result<()> {
        let mut inv = self.scripts.nack.prepare_invoke();
        inv.arg(&self.prefix)
            .arg(lease.id.to_string())
            .arg(lease.fence)
            .arg(millis(delay))
            .arg(u8::from(attempted));
        self.with_conn(op, |c| inv.invoke::<i64>(c))?;
        Ok(())
    }
}

/// True when a connection is still usable after `e`: the server answered with an error, or a
/// reply did not convert to the type asked for, and every reply was read. Anything else (a
/// broken or timed-out connection, a reply that could not be parsed) may leave replies unread,
/// which the next caller would take for its own.
fn in_step_after(e: &redis::RedisError) -> bool {
    use redis::ErrorKind::*;
    matches!(
        e.kind(),
        ResponseError | ExecAbortError | BusyLoadingError | NoScriptError | TypeError
    ) && !e.is_io_error()
        && !e.is_timeout()
}

/// True when the error is an interrupted system call (EINTR). RedisError keeps its io::Error
/// private (only a non-'static `cause`), so the errno in its message is what can be read.
fn is_interrupted(e: &redis::RedisError) -> bool {
    /// EINTR on Linux.
    const EINTR: i32 = 4;
    e.is_io_error() && e.to_string().contains(&format!("(os error {EINTR})"))
}

/// A task's affinity as the send scripts take it: its worker and steal time in ms, or `""` and
/// 0 when it is sent without one (or one whose steal time has passed).
fn affine_args(e: &Envelope) -> (&str, i64) {
    match e.affinity_at(Timestamp::now()) {
        Some(a) => (a.worker.as_str(), a.until.as_millis()),
        None => ("", 0),
    }
}

/// A duration in whole milliseconds, as the scripts take it.
fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The URL without a password, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://***@{}", &url[..s], &url[at + 1..]),
        _ => url.to_owned(),
    }
}

impl Broker for RedisBackend {
    fn enqueue(&self, batch: &[Envelope]) -> Result<()> {
        // Each chunk is written as a few variadic commands and sent without waiting for its
        // replies, so Redis stores one chunk while this thread encodes the next; the replies
        // are read at the end. Sending the same ids again (a retry after a broken connection)
        // rewrites them in place.
        let now = Timestamp::now();
        let mut packer = EnqueuePacker::new(&self.prefix, batch.len(), self.task_index);
        let (failed, lag) = self.with_conn("enqueue", |c| {
            let (mut replies, mut failed) = (0, None);
            for chunk in batch.chunks(ENQUEUE_CHUNK) {
                match packer.pack(chunk, now) {
                    Ok(commands) => replies += commands,
                    Err(e) => {
                        failed = Some(e);
                        break;
                    }
                }
                c.send_packed_command(&packer.buf)?;
            }
            // Every reply is read, even after an error one, so the connection stays in step.
            let mut first_error = None;
            for _ in 0..replies {
                if let Err(e) = c.recv_response()?.extract_error() {
                    first_error.get_or_insert(e);
                }
            }
            if let Some(e) = first_error {
                return Err(e);
            }
            Ok((failed, self.wait_for_replicas(c)?))
        })?;
        if let Some(e) = failed {
            return Err(self.err("encode envelope", e));
        }
        lag.map_or(Ok(()), |l| Err(self.replicas_lag(l)))
    }

    fn enqueue_once(&self, batch: &[Envelope]) -> Result<()> {
        for chunk in batch.chunks(500) {
            let mut inv = self.scripts.enqueue_once.prepare_invoke();
            inv.arg(&self.prefix)
                .arg(millis(ONCE_TTL))
                .arg(u8::from(self.task_index));
            for e in chunk {
                let score = ready_score(e.priority);
                let due = e.eta.map_or(0, Timestamp::as_millis);
                let (aw, au) = affine_args(e);
                let mut value = Vec::with_capacity(256);
                write_task_value(&mut value, e, score)
                    .map_err(|err| self.err("encode envelope", err))?;
                inv.arg(e.id.to_string())
                    .arg(&e.queue)
                    .arg(score)
                    .arg(due)
                    .arg(value)
                    .arg(aw)
                    .arg(au);
            }
            let lag = self.with_conn("enqueue once", |c| {
                inv.invoke::<i64>(c)?;
                self.wait_for_replicas(c)
            })?;
            if let Some(l) = lag {
                return Err(self.replicas_lag(l));
            }
        }
        Ok(())
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
        let mut wake_keys: Vec<String> =
            queues.iter().map(|q| self.key(&format!("w:{q}"))).collect();
        // A worker also wakes for the tasks queued for it (their own tokens, see `place_affine`).
        if let Some(w) = worker {
            wake_keys.extend(queues.iter().map(|q| self.key(&format!("w:{q}:{w}"))));
        }
        loop {
            let mut inv = self.scripts.reserve.prepare_invoke();
            inv.arg(&self.prefix)
                .arg(millis(lease))
                .arg(max.clamp(1, RESERVE_MAX))
                .arg(worker.unwrap_or(""));
            for q in queues {
                inv.arg(q);
            }
            type Reply = (Vec<Vec<u8>>, String, Vec<String>, Vec<Vec<u8>>, u64);
            let (values, next_due, ids, corrupt, first_fence): Reply =
                self.with_conn("reserve", |c| inv.invoke(c))?;
            let mut out = Vec::with_capacity(values.len());
            // Decoded one by one: a value that does not decode is dead-lettered, the rest are
            // delivered.
            for (k, (value, id)) in values.iter().zip(&ids).enumerate() {
                let fence = first_fence.wrapping_add(k as u64 + 1);
                match decode_delivery(value, fence) {
                    Ok(d) => out.push(d),
                    Err(reason) => self.bury_leased(id, fence, value, &reason)?,
                }
            }
            for pair in corrupt.chunks_exact(2) {
                let id = String::from_utf8_lossy(&pair[0]).into_owned();
                self.bury_set_aside(&id, &pair[1])?;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if !out.is_empty() || left.is_zero() {
                return Ok(out);
            }
            // How long until then, on the server's clock.
            let until_due = next_due
                .parse::<u64>()
                .ok()
                .map(|ms| Duration::from_millis(ms).max(Duration::from_millis(1)));
            self.block_on_lists(
                "wait for work",
                &wake_keys,
                left.min(until_due.unwrap_or(left)),
            )?;
        }
    }

    fn renew(&self, leases: &[Lease], lease: Duration) -> Result<Vec<Lease>> {
        if leases.is_empty() {
            return Ok(Vec::new());
        }
        let mut inv = self.scripts.extend.prepare_invoke();
        inv.arg(&self.prefix).arg(millis(lease));
        for l in leases {
            inv.arg(l.id.to_string()).arg(l.fence);
        }
        let lost: Vec<usize> = self.with_conn("extend leases", |c| inv.invoke(c))?;
        Ok(lost
            .into_iter()
            .filter_map(|i| leases.get(i).copied())
            .collect())
    }

    fn complete(&self, leases: &[Lease]) -> Result<()> {
        for chunk in leases.chunks(500) {
            let mut inv = self.scripts.ack.prepare_invoke();
            inv.arg(&self.prefix);
            for l in chunk {
                inv.arg(format!("{}:{}", l.id, l.fence));
            }
            self.with_conn("ack", |c| inv.invoke::<i64>(c))?;
        }
        Ok(())
    }

    fn retry(&self, lease: &Lease, delay: Duration) -> Result<()> {
        self.requeue("retry", lease, delay, true)
    }

    fn snooze(&self, lease: &Lease, delay: Duration) -> Result<()> {
        self.requeue("snooze", lease, delay, false)
    }

    fn discard(&self, lease: &Lease, envelope: &Envelope, error: &TaskError) -> Result<()> {
        let record = serde_json::to_string(&DeadLetter {
            envelope: envelope.clone(),
            error: error.clone(),
            at: Timestamp::now(),
        })
        .map_err(|e| self.err("dead-letter", e))?;
        let mut inv = self.scripts.dead_letter.prepare_invoke();
        inv.arg(&self.prefix)
            .arg(lease.id.to_string())
            .arg(lease.fence)
            .arg(record)
            .arg(self.dead_kept());
        self.with_conn("dead-letter", |c| inv.invoke::<i64>(c))?;
        Ok(())
    }

    fn bury(&self, envelope: &Envelope, error: &TaskError) -> Result<()> {
        let record = serde_json::to_string(&DeadLetter {
            envelope: envelope.clone(),
            error: error.clone(),
            at: Timestamp::now(),
        })
        .map_err(|e| self.err("dead-letter", e))?;
        self.with_conn("dead-letter", |c| {
            self.dead_letter_pipe(&record).query::<()>(c)
        })
    }

    fn revoke(&self, id: TaskId) -> Result<Revoked> {
        // The REVOKED record, but for its attempts count, which the script fills in.
        const MARK: u32 = u32::MAX;
        let record = ResultRecord::revoked_waiting(id, String::new(), MARK);
        let json = serde_json::to_string(&record).map_err(|e| self.err("revoke", e))?;
        let (before, after) = json
            .split_once(&format!("\"attempts\":{MARK}"))
            .ok_or_else(|| self.err("revoke", "the record has no attempts field"))?;
        let mut inv = self.scripts.revoke.prepare_invoke();
        inv.arg(&self.prefix)
            .arg(id.to_string())
            .arg(millis(REVOKE_TTL))
            .arg(self.result_key(results::bucket(id), false))
            .arg(self.result_key(results::bucket(id), true))
            .arg(format!("{before}\"attempts\":"))
            .arg(after);
        let found: i64 = self.with_conn("revoke", |c| inv.invoke(c))?;
        Ok(match found {
            1 => Revoked::Pending,
            2 => Revoked::Running,
            _ => Revoked::NotFound,
        })
    }

    fn take_rejected(&self) -> Vec<crate::ops::Event> {
        self.rejected.take()
    }

    fn revoked(&self, ids: &[TaskId]) -> Result<Vec<TaskId>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let now = Timestamp::now().as_millis() as f64;
        let members: Vec<String> = ids.iter().map(TaskId::to_string).collect();
        let until: Vec<Option<f64>> = self.with_conn("revoked", |c| {
            redis::cmd("ZMSCORE")
                .arg(self.key("revoked"))
                .arg(&members)
                .query(c)
        })?;
        Ok(ids
            .iter()
            .zip(until)
            .filter(|(_, u)| u.is_some_and(|u| u > now))
            .map(|(id, _)| *id)
            .collect())
    }
}

impl Locks for RedisBackend {
    fn lock(&self, name: &str, holder: &str, ttl: Duration) -> Result<bool> {
        let mut inv = self.scripts.lock.prepare_invoke();
        inv.arg(self.key(&format!("lock:{name}")))
            .arg(holder)
            .arg(ttl.as_millis().max(1) as u64);
        Ok(self.with_conn("lock", |c| inv.invoke::<i64>(c))? == 1)
    }

    fn unlock(&self, name: &str, holder: &str) -> Result<()> {
        let mut inv = self.scripts.unlock.prepare_invoke();
        inv.arg(self.key(&format!("lock:{name}"))).arg(holder);
        self.with_conn("unlock", |c| inv.invoke::<i64>(c))?;
        Ok(())
    }
}

impl RateLimits for RedisBackend {
    fn acquire(
        &self,
        key: &str,
        interval: Duration,
        n: u32,
        horizon: Duration,
    ) -> Result<(Vec<Duration>, Duration)> {
        let mut inv = self.scripts.acquire.prepare_invoke();
        inv.arg(self.key(&format!("rate:{key}")))
            .arg(interval.as_micros().max(1) as i64)
            .arg(n)
            .arg(horizon.as_micros() as i64);
        let (slots, next): (Vec<i64>, i64) = self.with_conn("rate limit", |c| inv.invoke(c))?;
        Ok(crate::slots_from_micros(&slots, next))
    }
}

impl Presence for RedisBackend {
    fn heartbeat(&self, worker: &WorkerInfo) -> Result<()> {
        let info = serde_json::to_string(worker).map_err(|e| self.err("heartbeat", e))?;
        self.with_conn("heartbeat", |c| {
            redis::cmd("HSET")
                .arg(self.key("workers"))
                .arg(&worker.id)
                .arg(info)
                .query::<i64>(c)
        })?;
        Ok(())
    }

    fn unregister(&self, worker_id: &str) -> Result<()> {
        self.with_conn("unregister", |c| {
            redis::cmd("HDEL")
                .arg(self.key("workers"))
                .arg(worker_id)
                .query::<i64>(c)
        })?;
        Ok(())
    }

    fn workers(&self, within: Duration) -> Result<Vec<WorkerInfo>> {
        let all: Vec<String> = self.with_conn("workers", |c| {
            redis::cmd("HVALS").arg(self.key("workers")).query(c)
        })?;
        let now = Timestamp::now();
        let known: Vec<WorkerInfo> = all
            .iter()
            .filter_map(|s| WorkerInfo::decode_or_skip(s))
            .collect();
        // Records of workers gone without unregistering (killed with -9).
        let gone: Vec<&str> = known
            .iter()
            .filter(|w| now - w.heartbeat > crate::WORKER_RECORD_TTL)
            .map(|w| w.id.as_str())
            .collect();
        if !gone.is_empty() {
            self.with_conn("workers", |c| {
                redis::cmd("HDEL")
                    .arg(self.key("workers"))
                    .arg(&gone)
                    .query::<i64>(c)
            })?;
        }
        let mut out: Vec<WorkerInfo> = known
            .into_iter()
            .filter(|w| now - w.heartbeat <= within)
            .collect();
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }
}

impl Admin for RedisBackend {
    fn stats(&self) -> Result<Vec<QueueStats>> {
        let mut inv = self.scripts.stats.prepare_invoke();
        inv.arg(&self.prefix);
        let rows: Vec<(String, u64, u64, u64)> = self.with_conn("stats", |c| inv.invoke(c))?;
        let mut stats: Vec<QueueStats> = rows
            .into_iter()
            .map(|(queue, ready, scheduled, reserved)| QueueStats {
                queue,
                ready,
                scheduled,
                reserved,
            })
            .filter(|s| s.ready + s.scheduled + s.reserved > 0)
            .collect();
        stats.sort_by(|a, b| a.queue.cmp(&b.queue));
        Ok(stats)
    }

    fn purge(&self, queue: &str) -> Result<u64> {
        let mut inv = self.scripts.purge.prepare_invoke();
        inv.arg(&self.prefix).arg(queue);
        self.with_conn("purge", |c| inv.invoke(c))
    }

    fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>> {
        // LRANGE 0 -1 would be the whole list.
        if limit == 0 {
            return Ok(Vec::new());
        }
        let rows: Vec<String> = self.with_conn("dead letters", |c| {
            redis::cmd("LRANGE")
                .arg(self.key("dead"))
                .arg(0)
                .arg(limit as isize - 1)
                .query(c)
        })?;
        rows.iter()
            .map(|r| serde_json::from_str(r).map_err(|e| BrokerError::Corrupt(e.to_string())))
            .collect()
    }
}

impl crate::Driver for RedisBackend {
    /// One script call: the records are written and the leases completed atomically.
    fn store_and_complete(&self, records: &[ResultRecord], leases: &[Lease]) -> Result<()> {
        self.store_and_ack(records, &[], leases, &[])
    }

    /// The same script call, with the events appended to the stream inside it.
    fn store_complete_publish(
        &self,
        records: &[ResultRecord],
        leases: &[Lease],
        events: &[crate::ops::Event],
    ) -> Result<()> {
        self.store_and_ack(records, &[], leases, events)
    }

    /// The same script call, with the scope falls between the records and the completions.
    fn store_fall_complete(
        &self,
        records: &[ResultRecord],
        falls: &[crate::ScopeFall],
        leases: &[Lease],
        events: &[crate::ops::Event],
    ) -> Result<()> {
        self.store_and_ack(records, falls, leases, events)
    }

    /// One script call per 500 tasks: each is counted, put in the open set and sent together.
    fn enqueue_in_scope(
        &self,
        scope: TaskId,
        batch: &[Envelope],
        repair: bool,
    ) -> Result<Vec<bool>> {
        use crate::scope::{dict_all, dict_open, member_key};
        let (all, open) = (
            self.dict_key(&dict_all(scope)),
            self.dict_key(&dict_open(scope)),
        );
        let mut out = Vec::with_capacity(batch.len());
        for chunk in batch.chunks(500) {
            let mut inv = self.scripts.enqueue_in_scope.prepare_invoke();
            inv.arg(&self.prefix)
                .arg(millis(ONCE_TTL))
                .arg(u8::from(self.task_index))
                .arg(&all)
                .arg(&open)
                .arg(u8::from(repair));
            for e in chunk {
                let score = ready_score(e.priority);
                let due = e.eta.map_or(0, Timestamp::as_millis);
                let (aw, au) = affine_args(e);
                let mut value = Vec::with_capacity(256);
                write_task_value(&mut value, e, score)
                    .map_err(|err| self.err("encode envelope", err))?;
                inv.arg(&member_key(e.id)[..])
                    .arg(e.id.to_string())
                    .arg(&e.queue)
                    .arg(score)
                    .arg(due)
                    .arg(value)
                    .arg(aw)
                    .arg(au);
            }
            let (sent, lag) = self.with_conn("enqueue in scope", |c| {
                let sent: Vec<i64> = inv.invoke(c)?;
                Ok((sent, self.wait_for_replicas(c)?))
            })?;
            if let Some(l) = lag {
                return Err(self.replicas_lag(l));
            }
            out.extend(sent.into_iter().map(|n| n == 1));
        }
        Ok(out)
    }
}

impl ResultStore for RedisBackend {
    fn store(&self, records: &[ResultRecord]) -> Result<()> {
        self.store_results(records)
    }

    fn get(&self, id: TaskId) -> Result<Option<ResultRecord>> {
        Ok(self.read_results(&[id], None)?.pop().flatten())
    }

    fn get_many(&self, ids: &[TaskId]) -> Result<Vec<Option<ResultRecord>>> {
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(1000) {
            out.extend(self.read_results(chunk, None)?);
        }
        Ok(out)
    }

    fn wait(&self, id: TaskId, timeout: Duration) -> Result<Option<ResultRecord>> {
        let deadline = Instant::now() + timeout;
        let notify = [self.key(&format!("n:{id}"))];
        let member = id.to_string();
        let mut woken = false;
        let rec = loop {
            // Say a waiter is here before reading, so a result stored after the read wakes us.
            let rec = self
                .read_results(&[id], Some((&member, Timestamp::now() + WAIT_SLICE * 2)))?
                .pop()
                .flatten();
            let done = rec.as_ref().is_some_and(|r| r.state.is_final());
            // Pass a wake-up on, so every waiter for this id sees it, only when it was real: a
            // token passed on after reading an unfinished record would wake this waiter again
            // at once, and again, until its timeout.
            if woken && done {
                self.with_conn("wait for result", |c| {
                    redis::pipe()
                        .cmd("RPUSH")
                        .arg(&notify[0])
                        .arg("1")
                        .ignore()
                        .cmd("EXPIRE")
                        .arg(&notify[0])
                        .arg(60)
                        .ignore()
                        .query::<()>(c)
                })?;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if done || left.is_zero() {
                break rec;
            }
            woken = self.block_on_lists("wait for result", &notify, left.min(WAIT_SLICE))?;
        };
        // The entry stays until it is stale: another waiter for the same id may count on it.
        Ok(rec)
    }

    fn wait_any(&self, ids: &[TaskId], timeout: Duration) -> Result<Vec<Option<ResultRecord>>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let deadline = Instant::now() + timeout;
        // Block on the wake-up lists of the first ids only: BLPOP's cost grows with its keys,
        // and a client's oldest futures are the ones most likely to finish next. The others
        // are read on every pass.
        let watched = &ids[..ids.len().min(MAX_WATCHED)];
        let notify: Vec<String> = watched
            .iter()
            .map(|id| self.key(&format!("n:{id}")))
            .collect();
        // A busy client finds something final at once: read first, and register waiters
        // (a write per id) only when it must block.
        let recs = self.get_many(ids)?;
        if crate::results::any_final(&recs) {
            return Ok(recs);
        }
        loop {
            let recs = self.read_results_watching(ids, watched, WAIT_SLICE * 2)?;
            let left = deadline.saturating_duration_since(Instant::now());
            if crate::results::any_final(&recs) || left.is_zero() {
                return Ok(recs);
            }
            if let Some(key) = self.pop_any("wait for results", &notify, left.min(WAIT_SLICE))? {
                // The token was for every waiter on that id: put it back for the others (it
                // expires with its list).
                self.with_conn("wait for results", |c| {
                    redis::pipe()
                        .cmd("RPUSH")
                        .arg(&key)
                        .arg("1")
                        .ignore()
                        .cmd("EXPIRE")
                        .arg(&key)
                        .arg(60)
                        .ignore()
                        .query::<()>(c)
                })?;
            }
        }
    }

    fn join(&self, entries: &[JoinEntry<'_>]) -> Result<Vec<Option<Vec<Vec<u8>>>>> {
        let mut out = Vec::with_capacity(entries.len());
        for chunk in entries.chunks(500) {
            let mut inv = self.scripts.join.prepare_invoke();
            inv.arg(ONCE_TTL.as_millis() as u64);
            for e in chunk {
                inv.arg(self.key(&format!("j:{}", e.id)))
                    .arg(e.index)
                    .arg(e.size)
                    .arg(e.value);
            }
            let replies: Vec<Vec<(u32, Vec<u8>)>> = self.with_conn("join", |c| inv.invoke(c))?;
            for mut pairs in replies {
                if pairs.is_empty() {
                    out.push(None);
                } else {
                    pairs.sort_unstable_by_key(|(i, _)| *i);
                    out.push(Some(pairs.into_iter().map(|(_, v)| v).collect()));
                }
            }
        }
        Ok(out)
    }

    fn put_blob(&self, key: TaskId, bytes: &[u8]) -> Result<()> {
        self.with_conn("put blob", |c| {
            redis::cmd("SET")
                .arg(self.key(&format!("b:{key}")))
                .arg(bytes)
                .arg("PX")
                .arg(ONCE_TTL.as_millis() as u64)
                .query::<()>(c)
        })
    }

    fn get_blob(&self, key: TaskId) -> Result<Option<Vec<u8>>> {
        self.with_conn("get blob", |c| {
            redis::cmd("GET")
                .arg(self.key(&format!("b:{key}")))
                .query(c)
        })
    }

    fn incr(&self, key: &str, by: i64) -> Result<i64> {
        self.with_conn("incr", |c| {
            redis::cmd("INCRBY")
                .arg(self.key(&format!("c:{key}")))
                .arg(by)
                .query(c)
        })
    }

    fn forget(&self, ids: &[TaskId]) -> Result<u64> {
        self.forget_results(ids)
    }

    fn forget_unshared(&self, ids: &[TaskId]) -> Result<Vec<TaskId>> {
        self.forget_unshared_results(ids)
    }

    fn unshare(&self, id: TaskId, holder: &[u8]) -> Result<bool> {
        self.unshare_result(id, holder)
    }

    fn purge_expired(&self) -> Result<u64> {
        // Redis expires the result hashes itself; the task index forgets ids older than
        // INDEX_KEPT (their records are gone or kept forever: listing stops there).
        let kept = ops::INDEX_KEPT.as_millis() as i64;
        let floor =
            crate::ops::id_floor(Timestamp::from_millis(Timestamp::now().as_millis() - kept));
        self.with_conn("trim the task index", |c| {
            redis::cmd("ZREMRANGEBYLEX")
                .arg(self.key("ix"))
                .arg("-")
                .arg(format!("({floor}"))
                .query::<i64>(c)
        })?;
        Ok(0)
    }
}

/// A reserved task value as a delivery, or why it does not decode.
pub(crate) fn decode_delivery(value: &[u8], fence: u64) -> std::result::Result<Delivery, String> {
    let (attempts, env) = split_task_value(value)
        .ok_or_else(|| format!("its value ({} bytes) has no delivery header", value.len()))?;
    let mut envelope: Envelope = lovage_core::codec::from_msgpack(env)
        .map_err(|e| format!("its envelope does not decode: {e}"))?;
    envelope.attempts = attempts;
    // Used up when the task was queued (see `Envelope::affinity`).
    envelope.affinity = None;
    Ok(Delivery {
        lease: Lease {
            id: envelope.id,
            fence,
        },
        envelope,
    })
}

/// What can be read of a task value that does not decode: its id (from the key) and the
/// delivery its header names, if it has one.
pub(crate) fn corrupt_message(id: &str, value: &[u8], reason: &str) -> CorruptMessage {
    let header = split_task_value(value);
    CorruptMessage {
        id: id.parse().ok(),
        raw_id: id.to_owned(),
        attempts: header.map_or(0, |(d, _)| d),
        reason: reason.to_owned(),
        ..CorruptMessage::default()
    }
}
