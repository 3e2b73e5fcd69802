//! The Redis broker and result store, for workers on many hosts.
//!
//! URLs: `redis://[user:pass@]host:port/db[?prefix=name]`, and `rediss://...` for TLS (feature
//! `redis-tls`; add `#insecure` to accept a self-signed certificate).
//!
//! Every key lives under one prefix (`lovage` unless the URL says `?prefix=...`):
//!
//! | key | type | holds |
//! |---|---|---|
//! | `P:t:{id}` | hash | a waiting or running task: `env` (MessagePack envelope), `attempts`, `queue`, `score` |
//! | `P:q:{queue}` | sorted set | ready ids, score = (9 − priority)·2⁴⁴ + sequence: priority first, FIFO within |
//! | `P:s:{queue}` | sorted set | scheduled ids (ETA, retry delay), score = due time in ms |
//! | `P:l:{queue}` | sorted set | reserved ids, score = lease deadline in ms |
//! | `P:w:{queue}` | list | wake-up tokens: a waiting reserve blocks on them (BLPOP), no polling |
//! | `P:queues` | set | queue names seen |
//! | `P:seq` | counter | the FIFO sequence |
//! | `P:rv:{id}` | string, 24 h TTL | the id was revoked |
//! | `P:r:{id}` | string, TTL | a result record (JSON) |
//! | `P:n:{id}` | list, short TTL | "a final result was stored": waiters block on it |
//! | `P:c:{key}` | counter | `incr` |
//! | `P:dead` | list | dead letters, newest first, capped |
//! | `P:workers` | hash | worker id → info (JSON) |
//!
//! Multi-key steps (reserve, ack, nack, extend, revoke, enqueue, purge) are Lua scripts, so they
//! are atomic. A connection that fails is dropped and the error returned; the next call opens a
//! new one, so a worker retrying with backoff resumes by itself when Redis is back.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use lovage_core::{TaskError, TaskId};
use redis::{Connection, Script};

use crate::{
    Broker, BrokerError, DeadLetter, Delivery, Envelope, Lease, QueueStats, Result, ResultRecord,
    ResultStore, Revoked, Timestamp, WorkerInfo,
};

/// How long a revoked id is remembered.
const REVOKE_TTL_SECS: u64 = 24 * 3600;
/// Longest a single command may take before the connection is treated as broken.
const IO_TIMEOUT: Duration = Duration::from_secs(30);
/// Dead letters kept.
const DEAD_LETTERS_KEPT: isize = 10_000;
const ENQUEUE: &str = r#"
-- ARGV: prefix, now, then per task: id, queue, priority, eta (ms or 0), attempts, env.
-- An id is expected to be new: sending one that is still waiting replaces its record, and its
-- old place in a queue is not cleared (lovage mints a fresh id per send).
local p = ARGV[1]
local now = tonumber(ARGV[2])
local n = (#ARGV - 2) / 6
local seq = redis.call('INCRBY', p .. ':seq', n) - n
local woken = {}
local added = 0
for i = 3, #ARGV, 6 do
  local id, q = ARGV[i], ARGV[i + 1]
  seq = seq + 1
  if redis.call('EXISTS', p .. ':rv:' .. id) == 0 then
    local score = (9 - tonumber(ARGV[i + 2])) * 17592186044416 + seq
    local eta = tonumber(ARGV[i + 3])
    redis.call('HSET', p .. ':t:' .. id, 'env', ARGV[i + 5], 'attempts', ARGV[i + 4], 'queue', q, 'score', score)
    if eta > now then
      redis.call('ZADD', p .. ':s:' .. q, eta, id)
    else
      redis.call('ZADD', p .. ':q:' .. q, score, id)
    end
    woken[q] = (woken[q] or 0) + 1
    added = added + 1
  end
end
for q, k in pairs(woken) do
  redis.call('SADD', p .. ':queues', q)
  local w = p .. ':w:' .. q
  for _ = 1, math.min(k, 64) do redis.call('RPUSH', w, '1') end
  redis.call('LTRIM', w, 0, 63)
end
return added
"#;

const RESERVE: &str = r#"
-- ARGV: prefix, now, lease_until, max, queues...
local p = ARGV[1]
local now = tonumber(ARGV[2])
local until_ = ARGV[3]
local max = tonumber(ARGV[4])
local next_due = false
for i = 5, #ARGV do
  local q = ARGV[i]
  for _, key in ipairs({p .. ':s:' .. q, p .. ':l:' .. q}) do
    local due = redis.call('ZRANGEBYSCORE', key, '-inf', now, 'LIMIT', 0, 1000)
    for _, id in ipairs(due) do
      redis.call('ZREM', key, id)
      local score = redis.call('HGET', p .. ':t:' .. id, 'score')
      if score then redis.call('ZADD', p .. ':q:' .. q, score, id) end
    end
    local first = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
    if first[2] then
      local s = tonumber(first[2])
      if not next_due or s < next_due then next_due = s end
    end
  end
end
local out = {}
local function take(q, id)
  redis.call('ZADD', p .. ':l:' .. q, until_, id)
  local t = p .. ':t:' .. id
  local attempts = redis.call('HINCRBY', t, 'attempts', 1)
  out[#out + 1] = {attempts, redis.call('HGET', t, 'env')}
end
if #ARGV == 5 then
  -- One queue: pop the best `max` at once.
  local q = ARGV[5]
  local popped = redis.call('ZPOPMIN', p .. ':q:' .. q, max)
  for j = 1, #popped, 2 do take(q, popped[j]) end
  return {out, next_due and tostring(next_due) or ''}
end
while #out < max do
  local best_q, best_id, best_s = nil, nil, nil
  for i = 5, #ARGV do
    local top = redis.call('ZRANGE', p .. ':q:' .. ARGV[i], 0, 0, 'WITHSCORES')
    if top[1] then
      local s = tonumber(top[2])
      if not best_s or s < best_s then best_q, best_id, best_s = ARGV[i], top[1], s end
    end
  end
  if not best_q then break end
  redis.call('ZREM', p .. ':q:' .. best_q, best_id)
  take(best_q, best_id)
end
return {out, next_due and tostring(next_due) or ''}
"#;

/// A lease is held when the task exists, its attempts match, and it is in its queue's lease set.
const HELD: &str = r#"
local function held(p, id, delivery)
  local t = p .. ':t:' .. id
  local v = redis.call('HMGET', t, 'attempts', 'queue')
  if not v[1] or tonumber(v[1]) ~= tonumber(delivery) then return nil end
  if not redis.call('ZSCORE', p .. ':l:' .. v[2], id) then return nil end
  return v[2]
end
"#;

const ACK: &str = r#"
-- ARGV: prefix, then id, delivery pairs. Removing the id from its lease set is the check that
-- the lease is still held (and its delivery number that it is ours).
local p = ARGV[1]
for i = 2, #ARGV, 2 do
  local t = p .. ':t:' .. ARGV[i]
  local v = redis.call('HMGET', t, 'attempts', 'queue')
  if v[1] and tonumber(v[1]) == tonumber(ARGV[i + 1])
     and redis.call('ZREM', p .. ':l:' .. v[2], ARGV[i]) == 1 then
    redis.call('DEL', t)
  end
end
return 0
"#;

const NACK: &str = r#"
-- ARGV: prefix, id, delivery, due (0: now)
local p, id = ARGV[1], ARGV[2]
local q = held(p, id, ARGV[3])
if not q then return 0 end
redis.call('ZREM', p .. ':l:' .. q, id)
local due = tonumber(ARGV[4])
if due == 0 then
  redis.call('ZADD', p .. ':q:' .. q, redis.call('HGET', p .. ':t:' .. id, 'score'), id)
  redis.call('RPUSH', p .. ':w:' .. q, '1')
  redis.call('LTRIM', p .. ':w:' .. q, 0, 63)
else
  redis.call('ZADD', p .. ':s:' .. q, due, id)
end
return 1
"#;

const EXTEND: &str = r#"
-- ARGV: prefix, until, then id, delivery pairs; returns the indexes (0-based pairs) lost
local p, until_ = ARGV[1], ARGV[2]
local lost = {}
for i = 3, #ARGV, 2 do
  local q = held(p, ARGV[i], ARGV[i + 1])
  if q and redis.call('EXISTS', p .. ':rv:' .. ARGV[i]) == 0 then
    redis.call('ZADD', p .. ':l:' .. q, 'XX', until_, ARGV[i])
  else
    lost[#lost + 1] = (i - 3) / 2
  end
end
return lost
"#;

const REVOKE: &str = r#"
-- ARGV: prefix, id, ttl seconds; returns 0 not found, 1 pending, 2 running
local p, id = ARGV[1], ARGV[2]
redis.call('SET', p .. ':rv:' .. id, '1', 'EX', ARGV[3])
local t = p .. ':t:' .. id
local q = redis.call('HGET', t, 'queue')
if not q then return 0 end
if redis.call('ZSCORE', p .. ':l:' .. q, id) then return 2 end
redis.call('ZREM', p .. ':q:' .. q, id)
redis.call('ZREM', p .. ':s:' .. q, id)
redis.call('DEL', t)
return 1
"#;

const PURGE: &str = r#"
-- ARGV: prefix, queue
local p, q = ARGV[1], ARGV[2]
local n = 0
for _, key in ipairs({p .. ':q:' .. q, p .. ':s:' .. q}) do
  for _, id in ipairs(redis.call('ZRANGE', key, 0, -1)) do
    redis.call('DEL', p .. ':t:' .. id)
    n = n + 1
  end
  redis.call('DEL', key)
end
return n
"#;

const DEAD_LETTER: &str = r#"
-- ARGV: prefix, id, delivery, record, keep
local p, id = ARGV[1], ARGV[2]
local q = held(p, id, ARGV[3])
-- A stale lease: the task lives on elsewhere, so it is not dead.
if not q then return 0 end
redis.call('ZREM', p .. ':l:' .. q, id)
redis.call('DEL', p .. ':t:' .. id)
redis.call('LPUSH', p .. ':dead', ARGV[4])
redis.call('LTRIM', p .. ':dead', 0, tonumber(ARGV[5]) - 1)
return 1
"#;

/// The Redis backend: a broker and a result store on one server.
pub struct RedisBackend {
    client: redis::Client,
    prefix: String,
    location: String,
    /// Idle connections; a call takes one (or opens one) and puts it back if it still works.
    pool: Mutex<Vec<Connection>>,
    scripts: Scripts,
}

struct Scripts {
    enqueue: Script,
    reserve: Script,
    ack: Script,
    nack: Script,
    extend: Script,
    revoke: Script,
    purge: Script,
    dead_letter: Script,
}

impl RedisBackend {
    /// Opens `redis://[user:pass@]host:port/db[?prefix=name]` (or `rediss://` when built with
    /// TLS); checks that the server answers.
    pub fn open(url: &str) -> Result<Self> {
        // `#insecure` (rediss:// with a self-signed certificate) belongs to the client URL.
        let (url, fragment) = match url.split_once('#') {
            Some((u, f)) => (u, format!("#{f}")),
            None => (url, String::new()),
        };
        let (base, prefix) = match url.split_once("?prefix=") {
            Some((b, p)) if !p.is_empty() => (b, p.to_owned()),
            _ => (url, "lovage".to_owned()),
        };
        let location = redact(base);
        let base = format!("{base}{fragment}");
        if base.starts_with("rediss://") && !cfg!(feature = "redis-tls") {
            return Err(BrokerError::BadUrl {
                url: location,
                reason: "this build has no TLS; build lovage-broker with the `redis-tls` feature"
                    .into(),
            });
        }
        let client = redis::Client::open(base.as_str()).map_err(|e| BrokerError::BadUrl {
            url: location.clone(),
            reason: e.to_string(),
        })?;
        let with_held = |body: &str| Script::new(&format!("{HELD}\n{body}"));
        let backend = RedisBackend {
            client,
            prefix,
            location,
            pool: Mutex::new(Vec::new()),
            scripts: Scripts {
                enqueue: Script::new(ENQUEUE),
                reserve: Script::new(RESERVE),
                ack: Script::new(ACK),
                nack: with_held(NACK),
                extend: with_held(EXTEND),
                revoke: Script::new(REVOKE),
                purge: Script::new(PURGE),
                dead_letter: with_held(DEAD_LETTER),
            },
        };
        backend
            .with_conn("connect", |c| redis::cmd("PING").query::<String>(c))
            .map_err(|e| BrokerError::Open {
                backend: "redis",
                location: backend.location.clone(),
                reason: e.to_string(),
            })?;
        Ok(backend)
    }

    /// The key prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    fn key(&self, parts: &str) -> String {
        format!("{}:{parts}", self.prefix)
    }

    fn err(&self, op: &'static str, e: impl std::fmt::Display) -> BrokerError {
        BrokerError::Backend {
            backend: "redis",
            location: self.location.clone(),
            op,
            reason: e.to_string(),
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
                if !e.is_io_error() && !e.is_connection_dropped() && !e.is_timeout() {
                    self.pool.lock().unwrap_or_else(|p| p.into_inner()).push(c);
                }
                Err(self.err(op, e))
            }
        }
    }

    /// Blocks on one of `keys` (BLPOP) for up to `timeout`; true if a token arrived.
    fn block_on_lists(&self, op: &'static str, keys: &[String], timeout: Duration) -> Result<bool> {
        if timeout.is_zero() {
            return Ok(false);
        }
        let secs = timeout.as_secs_f64().max(0.01);
        let interrupted = std::cell::Cell::new(false);
        let got = self.with_conn(op, |c| {
            c.set_read_timeout(Some(timeout + Duration::from_secs(5)))?;
            let got: redis::RedisResult<Option<(String, String)>> =
                redis::cmd("BLPOP").arg(keys).arg(secs).query(c);
            if let Err(e) = &got {
                interrupted.set(is_interrupted(e));
            }
            c.set_read_timeout(Some(IO_TIMEOUT))?;
            Ok(got?.is_some())
        });
        match got {
            // A signal cut the wait short (a read with a timeout is not restarted); the
            // connection was dropped, so no reply can arrive on it out of turn. Wake up early.
            Err(_) if interrupted.get() => Ok(false),
            other => other,
        }
    }

    fn encode_env(&self, e: &Envelope) -> Result<Vec<u8>> {
        rmp_serde::to_vec_named(e).map_err(|err| self.err("encode envelope", err))
    }
}

/// True when the error is an interrupted system call (EINTR). RedisError keeps its io::Error
/// private (only a non-'static `cause`), so the errno in its message is what can be read.
fn is_interrupted(e: &redis::RedisError) -> bool {
    /// EINTR on Linux.
    const EINTR: i32 = 4;
    e.is_io_error() && e.to_string().contains(&format!("(os error {EINTR})"))
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
        let now = Timestamp::now().as_millis();
        for chunk in batch.chunks(500) {
            let mut inv = self.scripts.enqueue.prepare_invoke();
            inv.arg(&self.prefix).arg(now);
            for e in chunk {
                inv.arg(e.id.to_string())
                    .arg(&e.queue)
                    .arg(e.priority)
                    .arg(e.eta.map_or(0, Timestamp::as_millis))
                    .arg(e.attempts)
                    .arg(self.encode_env(e)?);
            }
            self.with_conn("enqueue", |c| inv.invoke::<i64>(c))?;
        }
        Ok(())
    }

    fn reserve(
        &self,
        queues: &[String],
        max: usize,
        lease: Duration,
        wait: Duration,
    ) -> Result<Vec<Delivery>> {
        let deadline = Instant::now() + wait;
        let wake_keys: Vec<String> = queues.iter().map(|q| self.key(&format!("w:{q}"))).collect();
        loop {
            let now = Timestamp::now();
            let mut inv = self.scripts.reserve.prepare_invoke();
            inv.arg(&self.prefix)
                .arg(now.as_millis())
                .arg((now + lease).as_millis())
                .arg(max);
            for q in queues {
                inv.arg(q);
            }
            let (rows, next_due): (Vec<(u32, Vec<u8>)>, String) =
                self.with_conn("reserve", |c| inv.invoke(c))?;
            let mut out = Vec::with_capacity(rows.len());
            for (attempts, env) in rows {
                let mut envelope: Envelope = rmp_serde::from_slice(&env)
                    .map_err(|e| BrokerError::Corrupt(format!("envelope in redis: {e}")))?;
                envelope.attempts = attempts;
                out.push(Delivery {
                    lease: Lease {
                        id: envelope.id,
                        delivery: attempts,
                    },
                    envelope,
                });
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if !out.is_empty() || left.is_zero() {
                return Ok(out);
            }
            let until_due = next_due.parse::<f64>().ok().map(|ms| {
                Timestamp::from_millis(ms as i64)
                    .until()
                    .max(Duration::from_millis(1))
            });
            self.block_on_lists(
                "wait for work",
                &wake_keys,
                left.min(until_due.unwrap_or(left)),
            )?;
        }
    }

    fn ack(&self, leases: &[Lease]) -> Result<()> {
        for chunk in leases.chunks(500) {
            let mut inv = self.scripts.ack.prepare_invoke();
            inv.arg(&self.prefix);
            for l in chunk {
                inv.arg(l.id.to_string()).arg(l.delivery);
            }
            self.with_conn("ack", |c| inv.invoke::<i64>(c))?;
        }
        Ok(())
    }

    fn nack(&self, lease: &Lease, delay: Duration) -> Result<()> {
        let due = if delay.is_zero() {
            0
        } else {
            (Timestamp::now() + delay).as_millis()
        };
        let mut inv = self.scripts.nack.prepare_invoke();
        inv.arg(&self.prefix)
            .arg(lease.id.to_string())
            .arg(lease.delivery)
            .arg(due);
        self.with_conn("nack", |c| inv.invoke::<i64>(c))?;
        Ok(())
    }

    fn extend(&self, leases: &[Lease], lease: Duration) -> Result<Vec<Lease>> {
        if leases.is_empty() {
            return Ok(Vec::new());
        }
        let mut inv = self.scripts.extend.prepare_invoke();
        inv.arg(&self.prefix)
            .arg((Timestamp::now() + lease).as_millis());
        for l in leases {
            inv.arg(l.id.to_string()).arg(l.delivery);
        }
        let lost: Vec<usize> = self.with_conn("extend leases", |c| inv.invoke(c))?;
        Ok(lost
            .into_iter()
            .filter_map(|i| leases.get(i).copied())
            .collect())
    }

    fn revoke(&self, id: TaskId) -> Result<Revoked> {
        let mut inv = self.scripts.revoke.prepare_invoke();
        inv.arg(&self.prefix)
            .arg(id.to_string())
            .arg(REVOKE_TTL_SECS);
        let found: i64 = self.with_conn("revoke", |c| inv.invoke(c))?;
        Ok(match found {
            1 => Revoked::Pending,
            2 => Revoked::Running,
            _ => Revoked::NotFound,
        })
    }

    fn revoked(&self, ids: &[TaskId]) -> Result<Vec<TaskId>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = ids.iter().map(|id| self.key(&format!("rv:{id}"))).collect();
        let flags: Vec<Option<String>> =
            self.with_conn("revoked", |c| redis::cmd("MGET").arg(&keys).query(c))?;
        Ok(ids
            .iter()
            .zip(flags)
            .filter(|(_, f)| f.is_some())
            .map(|(id, _)| *id)
            .collect())
    }

    fn stats(&self) -> Result<Vec<QueueStats>> {
        let mut queues: Vec<String> = self.with_conn("stats", |c| {
            redis::cmd("SMEMBERS").arg(self.key("queues")).query(c)
        })?;
        queues.sort();
        let mut pipe = redis::pipe();
        for q in &queues {
            for kind in ["q", "s", "l"] {
                pipe.cmd("ZCARD").arg(self.key(&format!("{kind}:{q}")));
            }
        }
        let counts: Vec<u64> = self.with_conn("stats", |c| pipe.query(c))?;
        Ok(queues
            .into_iter()
            .zip(counts.chunks(3))
            .map(|(queue, n)| QueueStats {
                queue,
                ready: n[0],
                scheduled: n[1],
                reserved: n[2],
            })
            .filter(|s| s.ready + s.scheduled + s.reserved > 0)
            .collect())
    }

    fn purge(&self, queue: &str) -> Result<u64> {
        let mut inv = self.scripts.purge.prepare_invoke();
        inv.arg(&self.prefix).arg(queue);
        self.with_conn("purge", |c| inv.invoke(c))
    }

    fn dead_letter(&self, lease: &Lease, envelope: &Envelope, error: &TaskError) -> Result<()> {
        let record = serde_json::to_string(&DeadLetter {
            envelope: envelope.clone(),
            error: error.clone(),
            at: Timestamp::now(),
        })
        .map_err(|e| self.err("dead-letter", e))?;
        let mut inv = self.scripts.dead_letter.prepare_invoke();
        inv.arg(&self.prefix)
            .arg(lease.id.to_string())
            .arg(lease.delivery)
            .arg(record)
            .arg(DEAD_LETTERS_KEPT);
        self.with_conn("dead-letter", |c| inv.invoke::<i64>(c))?;
        Ok(())
    }

    fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>> {
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
        let mut out: Vec<WorkerInfo> = all
            .iter()
            .filter_map(|s| serde_json::from_str::<WorkerInfo>(s).ok())
            .filter(|w| now - w.heartbeat <= within)
            .collect();
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }
}

impl ResultStore for RedisBackend {
    fn store(&self, records: &[ResultRecord]) -> Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        let now = Timestamp::now();
        let mut pipe = redis::pipe();
        for r in records {
            let body = serde_json::to_string(r).map_err(|e| self.err("store results", e))?;
            let key = self.key(&format!("r:{}", r.id));
            match r.expires {
                Some(t) if t <= now => pipe.cmd("DEL").arg(&key),
                Some(t) => pipe
                    .cmd("SET")
                    .arg(&key)
                    .arg(body)
                    .arg("PX")
                    .arg((t - now).as_millis() as u64),
                None => pipe.cmd("SET").arg(&key).arg(body),
            };
            pipe.ignore();
            if r.state.is_final() {
                let n = self.key(&format!("n:{}", r.id));
                pipe.cmd("RPUSH").arg(&n).arg("1").ignore();
                pipe.cmd("EXPIRE").arg(&n).arg(60).ignore();
            }
        }
        self.with_conn("store results", |c| pipe.query::<()>(c))
    }

    fn get(&self, id: TaskId) -> Result<Option<ResultRecord>> {
        let body: Option<String> = self.with_conn("get result", |c| {
            redis::cmd("GET").arg(self.key(&format!("r:{id}"))).query(c)
        })?;
        body.map(|b| serde_json::from_str(&b).map_err(|e| BrokerError::Corrupt(e.to_string())))
            .transpose()
    }

    fn get_many(&self, ids: &[TaskId]) -> Result<Vec<Option<ResultRecord>>> {
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(1000) {
            let keys: Vec<String> = chunk
                .iter()
                .map(|id| self.key(&format!("r:{id}")))
                .collect();
            let bodies: Vec<Option<String>> =
                self.with_conn("get results", |c| redis::cmd("MGET").arg(&keys).query(c))?;
            for b in bodies {
                out.push(
                    b.map(|b| {
                        serde_json::from_str(&b).map_err(|e| BrokerError::Corrupt(e.to_string()))
                    })
                    .transpose()?,
                );
            }
        }
        Ok(out)
    }

    fn wait(&self, id: TaskId, timeout: Duration) -> Result<Option<ResultRecord>> {
        let deadline = Instant::now() + timeout;
        let notify = [self.key(&format!("n:{id}"))];
        loop {
            let rec = self.get(id)?;
            let left = deadline.saturating_duration_since(Instant::now());
            if rec.as_ref().is_some_and(|r| r.state.is_final()) || left.is_zero() {
                return Ok(rec);
            }
            if self.block_on_lists("wait for result", &notify, left)? {
                // Pass the wake-up on, so every waiter for this id sees it.
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
        }
    }

    fn incr(&self, key: &str, by: i64) -> Result<i64> {
        self.with_conn("incr", |c| {
            redis::cmd("INCRBY")
                .arg(self.key(&format!("c:{key}")))
                .arg(by)
                .query(c)
        })
    }

    fn purge_expired(&self) -> Result<u64> {
        Ok(0) // Redis expires result keys itself (PX on SET)
    }
}
