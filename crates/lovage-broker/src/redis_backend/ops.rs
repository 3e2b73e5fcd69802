//! What operators read and ask of a Redis broker: the task index (`P:ix`, ordered by id), the
//! counts (`P:cnt` and the queues' sizes), paused queues (`P:paused`), the event stream
//! (`P:events`) and the control mailbox (`P:ctl:*`, `P:rep:*`).

use std::cell::RefCell;
use std::collections::HashMap;
use std::time::Duration;

use lovage_core::TaskId;

use super::send::split_task_value;
use super::RedisBackend;
use crate::ops::{
    self, Control, ControlReply, ControlRequest, Event, EventBatch, Events, Inspect, Kept, Live,
    QueueInfo, QueueOps, QueueTable, StateCounts, TaskInfo, TaskPage, TaskQuery, TaskSummary,
};
use crate::{Admin, BrokerError, Envelope, Result, ResultStore, Timestamp};

/// How long the task index keeps an id: past this, a task is listed no more (its record has
/// usually expired long before; one kept forever is still read by id).
pub(crate) const INDEX_KEPT: Duration = crate::ONCE_TTL;

/// A task value's envelope, or `None` for one that does not decode (a reserve sets it aside).
fn envelope_of(value: &[u8]) -> Option<(u32, Envelope)> {
    let (delivery, env) = split_task_value(value)?;
    Some((delivery, rmp_serde::from_slice(env).ok()?))
}

impl RedisBackend {
    /// Ids (and their queues, noted in `queues`) newest first, below and at or above the
    /// bounds, narrowed by queue.
    fn candidates(
        &self,
        q: &TaskQuery,
        below: Option<&str>,
        floor: Option<&str>,
        n: usize,
        queues: &RefCell<HashMap<TaskId, String>>,
    ) -> Result<Vec<TaskId>> {
        let max = below.map_or("+".to_owned(), |b| format!("({b}"));
        let min = floor.map_or("-".to_owned(), |f| format!("[{f}"));
        let members: Vec<String> = self.with_conn("list tasks", |c| {
            redis::cmd("ZREVRANGEBYLEX")
                .arg(self.key("ix"))
                .arg(&max)
                .arg(&min)
                .arg("LIMIT")
                .arg(0)
                .arg(n)
                .query(c)
        })?;
        let mut out = Vec::with_capacity(members.len());
        let mut noted = queues.borrow_mut();
        for m in members {
            let (id, queue) = m.split_at(m.len().min(36));
            let id: TaskId = id
                .parse()
                .map_err(|e| BrokerError::Corrupt(format!("task index member {m:?}: {e}")))?;
            let queue = queue.trim_start_matches(' ');
            // The id still moves the listing on, so a page of another queue's tasks ends.
            if q.queue.as_deref().is_some_and(|want| want != queue) {
                noted.insert(id, String::new());
            } else {
                noted.insert(id, queue.to_owned());
            }
            out.push(id);
        }
        Ok(out)
    }

    /// Summaries of `ids` in two round trips: their task values and whether they wait, then
    /// their records.
    fn summaries(
        &self,
        ids: &[TaskId],
        queues: &HashMap<TaskId, String>,
    ) -> Result<Vec<Option<TaskSummary>>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let fields: Vec<String> = ids.iter().map(TaskId::to_string).collect();
        let values: Vec<Option<Vec<u8>>> = self.with_conn("task index", |c| {
            redis::cmd("HMGET")
                .arg(self.key("tasks"))
                .arg(&fields)
                .query(c)
        })?;
        // Which live ones wait (in their queue or scheduled set) rather than being held.
        let mut pipe = redis::pipe();
        let mut live: Vec<Option<(u32, Envelope)>> = Vec::with_capacity(ids.len());
        for (id, v) in fields.iter().zip(&values) {
            let decoded = v.as_deref().and_then(envelope_of);
            if let Some((_, env)) = &decoded {
                pipe.cmd("ZSCORE")
                    .arg(self.key(&format!("q:{}", env.queue)))
                    .arg(id);
                pipe.cmd("ZSCORE")
                    .arg(self.key(&format!("s:{}", env.queue)))
                    .arg(id);
            }
            live.push(decoded);
        }
        let waiting: Vec<Option<f64>> = if live.iter().any(Option::is_some) {
            self.with_conn("task index", |c| pipe.query(c))?
        } else {
            Vec::new()
        };
        let records = self.get_many(ids)?;
        let mut w = waiting.chunks(2);
        let mut out = Vec::with_capacity(ids.len());
        for ((id, l), record) in ids.iter().zip(live).zip(records) {
            let queue = queues.get(id).cloned().unwrap_or_default();
            if queue.is_empty() && queues.contains_key(id) {
                out.push(None); // another queue's task (see `candidates`)
                continue;
            }
            let live = l.map(|(delivery, env)| {
                let reserved = w
                    .next()
                    .is_some_and(|pair| pair.iter().all(Option::is_none));
                Live {
                    name: env.task,
                    queue: env.queue,
                    reserved,
                    // A value holds its next delivery's number: the current one while held.
                    attempts: if reserved {
                        delivery
                    } else {
                        delivery.saturating_sub(1)
                    },
                    sent: env.created,
                    received: None,
                    preview: Some(ops::args_preview(&env.args)),
                }
            });
            let kept = Kept {
                queue: (!queue.is_empty()).then_some(queue),
                ..Kept::default()
            };
            out.push(ops::summarize(*id, live, record.as_ref(), kept));
        }
        Ok(out)
    }
}

impl Inspect for RedisBackend {
    fn list_tasks(&self, query: &TaskQuery) -> Result<TaskPage> {
        if !self.task_index {
            return Err(BrokerError::Unsupported {
                backend: "redis",
                op: "listing tasks without the task index (open the broker with ?task_index=1)",
            });
        }
        let queues = RefCell::new(HashMap::new());
        ops::page(
            query,
            &mut |below, floor, n| self.candidates(query, below, floor, n, &queues),
            &mut |ids| self.summaries(ids, &queues.borrow()),
        )
    }

    fn task_counts(&self) -> Result<StateCounts> {
        let (counts, queues, reserved): (HashMap<String, u64>, Vec<String>, u64) =
            self.with_conn("task counts", |c| {
                redis::pipe()
                    .cmd("HGETALL")
                    .arg(self.key("cnt"))
                    .cmd("SMEMBERS")
                    .arg(self.key("queues"))
                    .cmd("ZCARD")
                    .arg(self.key("leases"))
                    .query(c)
            })?;
        let mut pipe = redis::pipe();
        for q in &queues {
            pipe.cmd("ZCARD").arg(self.key(&format!("q:{q}")));
            pipe.cmd("ZCARD").arg(self.key(&format!("s:{q}")));
        }
        let sizes: Vec<u64> = if queues.is_empty() {
            Vec::new()
        } else {
            self.with_conn("task counts", |c| pipe.query(c))?
        };
        let get = |k: &str| counts.get(k).copied().unwrap_or(0);
        Ok(StateCounts {
            pending: sizes.iter().step_by(2).sum(),
            scheduled: sizes.iter().skip(1).step_by(2).sum(),
            reserved,
            sent: get("sent"),
            succeeded: get("succeeded"),
            failed: get("failed"),
            retried: get("retried"),
            revoked: get("revoked"),
        })
    }

    fn task_info(&self, id: TaskId) -> Result<Option<TaskInfo>> {
        let text = id.to_string();
        // Its queue, from the index, for a task the broker no longer holds.
        let member: Vec<String> = self.with_conn("task info", |c| {
            redis::cmd("ZRANGEBYLEX")
                .arg(self.key("ix"))
                .arg(format!("[{text}"))
                .arg(format!("[{text}\u{ff}"))
                .arg("LIMIT")
                .arg(0)
                .arg(1)
                .query(c)
        })?;
        let mut queues = HashMap::new();
        if let Some(m) = member.first() {
            queues.insert(id, m.get(37..).unwrap_or_default().to_owned());
        }
        let Some(summary) = self.summaries(&[id], &queues)?.pop().flatten() else {
            return Ok(None);
        };
        let value: Option<Vec<u8>> = self.with_conn("task info", |c| {
            redis::cmd("HGET")
                .arg(self.key("tasks"))
                .arg(&text)
                .query(c)
        })?;
        let envelope = value.as_deref().and_then(envelope_of).map(|(_, e)| e);
        let record = self.get(id)?;
        let dead_letter = self
            .dead_letters(1000)?
            .into_iter()
            .find(|d| d.envelope.id == id);
        Ok(Some(TaskInfo {
            summary,
            envelope,
            record,
            dead_letter,
        }))
    }
}

/// Drops the dead letters (JSON in the list `KEYS[1]`) whose task id is one of `ARGV`, in one
/// atomic step: the list is rebuilt from the letters kept, in their order, so a discard of
/// thousands costs one pass over the capped list, not one `LREM` scan per letter.
const DISCARD_DEAD: &str = r#"
local want = {}
for i = 1, #ARGV do want[ARGV[i]] = true end
local items = redis.call('LRANGE', KEYS[1], 0, -1)
local kept, gone = {}, 0
for _, v in ipairs(items) do
  local ok, d = pcall(cjson.decode, v)
  if ok and type(d) == 'table' and type(d.envelope) == 'table' and want[d.envelope.id] then
    gone = gone + 1
  else
    kept[#kept + 1] = v
  end
end
if gone > 0 then
  redis.call('DEL', KEYS[1])
  for i = 1, #kept, 1000 do
    redis.call('RPUSH', KEYS[1], unpack(kept, i, math.min(i + 999, #kept)))
  end
end
return gone
"#;

impl QueueOps for RedisBackend {
    fn pause(&self, queue: &str) -> Result<()> {
        self.with_conn("pause", |c| {
            redis::cmd("SADD")
                .arg(self.key("paused"))
                .arg(queue)
                .query::<i64>(c)
        })?;
        Ok(())
    }

    fn resume(&self, queue: &str) -> Result<()> {
        // A token on the queue's wake-up list: a reserve blocked on it looks again.
        self.with_conn("resume", |c| {
            redis::pipe()
                .cmd("SREM")
                .arg(self.key("paused"))
                .arg(queue)
                .ignore()
                .cmd("RPUSH")
                .arg(self.key(&format!("w:{queue}")))
                .arg("1")
                .ignore()
                .cmd("LTRIM")
                .arg(self.key(&format!("w:{queue}")))
                .arg(0)
                .arg(63)
                .ignore()
                .query::<()>(c)
        })
    }

    fn discard_dead(&self, ids: &[TaskId]) -> Result<u64> {
        if ids.is_empty() {
            return Ok(0);
        }
        let script = redis::Script::new(DISCARD_DEAD);
        let gone: i64 = self.with_conn("discard dead letters", |c| {
            let mut inv = script.prepare_invoke();
            inv.key(self.key("dead"));
            for id in ids {
                inv.arg(id.to_string());
            }
            inv.invoke(c)
        })?;
        Ok(gone.max(0) as u64)
    }

    fn delete_tasks(&self, ids: &[TaskId]) -> Result<Vec<TaskId>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut inv = self.scripts.delete_tasks.prepare_invoke();
        inv.arg(&self.prefix);
        for id in ids {
            let bucket = super::results::bucket(*id);
            inv.arg(id.to_string())
                .arg(self.result_key(bucket, false))
                .arg(self.result_key(bucket, true));
        }
        let gone: Vec<String> = self.with_conn("delete tasks", |c| inv.invoke(c))?;
        gone.iter()
            .map(|id| {
                id.parse::<TaskId>()
                    .map_err(|e| BrokerError::Corrupt(format!("deleted task id {id:?}: {e}")))
            })
            .collect()
    }

    fn paused(&self) -> Result<Vec<String>> {
        let mut v: Vec<String> = self.with_conn("paused", |c| {
            redis::cmd("SMEMBERS").arg(self.key("paused")).query(c)
        })?;
        v.sort();
        Ok(v)
    }

    fn peek(&self, queue: &str, limit: usize) -> Result<Vec<Envelope>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let (ready, scheduled): (Vec<String>, Vec<String>) = self.with_conn("peek", |c| {
            redis::pipe()
                .cmd("ZRANGE")
                .arg(self.key(&format!("q:{queue}")))
                .arg(0)
                .arg(limit - 1)
                .cmd("ZRANGE")
                .arg(self.key(&format!("s:{queue}")))
                .arg(0)
                .arg(limit - 1)
                .query(c)
        })?;
        let ids: Vec<String> = ready.into_iter().chain(scheduled).take(limit).collect();
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let values: Vec<Option<Vec<u8>>> = self.with_conn("peek", |c| {
            redis::cmd("HMGET")
                .arg(self.key("tasks"))
                .arg(&ids)
                .query(c)
        })?;
        Ok(values
            .iter()
            .filter_map(|v| v.as_deref().and_then(envelope_of))
            .map(|(_, e)| e)
            .collect())
    }

    fn queues(&self) -> Result<Vec<QueueInfo>> {
        let stats = self.stats()?;
        let paused = self.paused()?;
        let dead = self.dead_letters(crate::DEAD_LETTERS_KEPT)?;
        let now = Timestamp::now();
        let mut out = QueueTable::default();
        for s in &stats {
            // The first task in delivery order: the oldest of the highest priority waiting.
            let first = self.peek(&s.queue, 1)?;
            let age = first
                .first()
                .filter(|e| s.ready > 0 && e.eta.is_none_or(|t| t <= now))
                .map_or(0.0, |e| (now - e.eta.unwrap_or(e.created)).as_secs_f64());
            out.counts(s, age);
        }
        for d in dead {
            out.entry(&d.envelope.queue).dead += 1;
        }
        out.paused(paused);
        Ok(out.into_vec())
    }
}

impl Events for RedisBackend {
    fn publish(&self, events: &[Event]) -> Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        let body = crate::ops::event_codec::encode_batch(events)
            .map_err(|e| self.err("publish events", e))?;
        let mut inv = self.scripts.publish.prepare_invoke();
        inv.arg(&self.prefix).arg(events.len()).arg(body);
        self.with_conn("publish events", |c| inv.invoke::<i64>(c))?;
        Ok(())
    }

    fn read_events(&self, after: u64, limit: usize) -> Result<EventBatch> {
        type Entry = (String, HashMap<String, Vec<u8>>);
        let (entries, oldest, last): (Vec<Entry>, Vec<Entry>, Option<u64>) =
            self.with_conn("read events", |c| {
                redis::pipe()
                    .cmd("XRANGE")
                    .arg(self.key("events"))
                    .arg(format!("(0-{after}"))
                    .arg("+")
                    .arg("COUNT")
                    .arg(limit.max(1))
                    .cmd("XRANGE")
                    .arg(self.key("events"))
                    .arg("-")
                    .arg("+")
                    .arg("COUNT")
                    .arg(1)
                    .cmd("GET")
                    .arg(self.key("eseq"))
                    .query(c)
            })?;
        let first_of = |(id, fields): &Entry| -> Result<u64> {
            fields
                .get("first")
                .and_then(|f| std::str::from_utf8(f).ok()?.parse().ok())
                .ok_or_else(|| BrokerError::Corrupt(format!("event stream entry {id}")))
        };
        let mut events = Vec::new();
        'entries: for entry in &entries {
            let first = first_of(entry)?;
            let body = entry.1.get("b").map(Vec::as_slice).unwrap_or_default();
            let batch = crate::ops::event_codec::decode_batch(body).map_err(|e| {
                BrokerError::Corrupt(format!("event stream entry {}: {e}", entry.0))
            })?;
            for (i, mut e) in batch.into_iter().enumerate() {
                e.seq = first + i as u64;
                if e.seq <= after {
                    continue;
                }
                if events.len() >= limit {
                    break 'entries;
                }
                events.push(e);
            }
        }
        Ok(EventBatch {
            events,
            oldest_seq: oldest.first().map(first_of).transpose()?.unwrap_or(0),
            last_seq: last.unwrap_or(0),
        })
    }
}

impl Control for RedisBackend {
    fn send_control(&self, destinations: &[String], request: &ControlRequest) -> Result<()> {
        let body = serde_json::to_string(request).map_err(|e| self.err("send control", e))?;
        let ttl = ops::CONTROL_TTL.as_millis() as u64;
        let mut pipe = redis::pipe();
        pipe.atomic();
        for d in destinations {
            let key = self.key(&format!("ctl:{d}"));
            pipe.cmd("RPUSH").arg(&key).arg(&body).ignore();
            pipe.cmd("PEXPIRE").arg(&key).arg(ttl).ignore();
        }
        self.with_conn("send control", |c| pipe.query::<()>(c))
    }

    fn take_control(&self, worker: &str) -> Result<Vec<ControlRequest>> {
        let key = self.key(&format!("ctl:{worker}"));
        let (bodies,): (Vec<String>,) = self.with_conn("take control", |c| {
            redis::pipe()
                .atomic()
                .cmd("LRANGE")
                .arg(&key)
                .arg(0)
                .arg(-1)
                .cmd("DEL")
                .arg(&key)
                .ignore()
                .query(c)
        })?;
        let now = Timestamp::now();
        Ok(bodies
            .iter()
            .filter_map(|b| {
                serde_json::from_str::<ControlRequest>(b)
                    .map_err(|e| tracing::warn!(error = %e, "skipping a control request that does not decode"))
                    .ok()
            })
            .filter(|r| r.expires > now)
            .collect())
    }

    fn reply(&self, request_id: &str, worker: &str, reply: &serde_json::Value) -> Result<()> {
        let body = serde_json::to_string(&ControlReply {
            worker: worker.to_owned(),
            reply: reply.clone(),
        })
        .map_err(|e| self.err("reply", e))?;
        let key = self.key(&format!("rep:{request_id}"));
        self.with_conn("reply", |c| {
            redis::pipe()
                .atomic()
                .cmd("RPUSH")
                .arg(&key)
                .arg(&body)
                .ignore()
                .cmd("PEXPIRE")
                .arg(&key)
                .arg(ops::CONTROL_TTL.as_millis() as u64)
                .ignore()
                .query::<()>(c)
        })
    }

    fn replies(&self, request_id: &str) -> Result<Vec<ControlReply>> {
        let bodies: Vec<String> = self.with_conn("replies", |c| {
            redis::cmd("LRANGE")
                .arg(self.key(&format!("rep:{request_id}")))
                .arg(0)
                .arg(-1)
                .query(c)
        })?;
        bodies
            .iter()
            .map(|b| {
                serde_json::from_str(b)
                    .map_err(|e| BrokerError::Corrupt(format!("control reply: {e}")))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_script_keeps_as_many_events_as_the_constant_says() {
        let line = format!("local keep = {} ", crate::ops::EVENTS_KEPT);
        assert!(super::super::scripts::EVENTS_FN.contains(&line));
    }
}
