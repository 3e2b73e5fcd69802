//! The operators' traits on the memory backend: the index is built from the entries, result
//! records and what `enqueue` and `reserve` note per task; everything lives as long as the
//! process (or until the task's record is purged).

use std::collections::{HashMap, VecDeque};

use lovage_core::{TaskId, TaskState};

use super::{MemoryBackend, Place, State};
use crate::ops::{
    self, Control, ControlReply, ControlRequest, Event, EventBatch, Events, Inspect, QueueInfo,
    QueueOps, QueueTable, StateCounts, TaskCursor, TaskInfo, TaskPage, TaskQuery, TaskSummary,
    EVENTS_KEPT,
};
use crate::{Envelope, Result, Timestamp};

/// What the index notes about a task beyond its message and record.
#[derive(Clone)]
pub(super) struct Noted {
    pub(super) name: String,
    pub(super) queue: String,
    pub(super) sent: Timestamp,
    pub(super) received: Option<Timestamp>,
    pub(super) args_preview: String,
}

/// The memory backend's operator state.
#[derive(Default)]
pub(super) struct OpsState {
    pub(super) noted: HashMap<TaskId, Noted>,
    pub(super) counts: StateCounts,
    pub(super) paused: std::collections::BTreeSet<String>,
    events: VecDeque<Event>,
    last_seq: u64,
    mailboxes: HashMap<String, Vec<ControlRequest>>,
    replies: HashMap<String, (Vec<ControlReply>, Timestamp)>,
}

impl OpsState {
    /// Notes a task as it is sent.
    pub(super) fn sent(&mut self, env: &Envelope) {
        self.counts.sent += 1;
        self.noted.insert(
            env.id,
            Noted {
                name: env.task.clone(),
                queue: env.queue.clone(),
                sent: env.created,
                received: None,
                args_preview: ops::args_preview(&env.args),
            },
        );
    }

    /// Counts a stored record whose state is new for its task.
    pub(super) fn stored(&mut self, old: Option<TaskState>, new: TaskState) {
        if old == Some(new) {
            return;
        }
        match new {
            TaskState::Success => self.counts.succeeded += 1,
            TaskState::Failure => self.counts.failed += 1,
            TaskState::Revoked => self.counts.revoked += 1,
            _ => {}
        }
    }
}

fn summary(st: &State, id: TaskId) -> Option<TaskSummary> {
    let entry = st.entries.get(&id);
    let record = st.results.get(&id);
    let noted = st.ops.noted.get(&id);
    let state = match (entry, record) {
        (_, Some(r)) if r.state.is_final() => r.state,
        (Some(e), r) => match e.place {
            Place::Reserved(_) => match r {
                Some(r) if r.state == TaskState::Started && r.attempts == e.env.attempts => {
                    TaskState::Started
                }
                _ => TaskState::Received,
            },
            _ if r.is_some_and(|r| r.state == TaskState::Retry) => TaskState::Retry,
            _ => TaskState::Pending,
        },
        (None, Some(r)) => r.state,
        (None, None) => return None,
    };
    let name = entry
        .map(|e| e.env.task.clone())
        .or_else(|| record.map(|r| r.task.clone()))
        .or_else(|| noted.map(|n| n.name.clone()))?;
    let attempts = entry
        .map(|e| e.env.attempts)
        .max(record.map(|r| r.attempts))
        .unwrap_or(0);
    let runtime_ms = record.and_then(|r| {
        let started = r.started?;
        r.state
            .is_final()
            .then(|| (r.updated - started).as_millis() as u64)
    });
    Some(TaskSummary {
        id,
        name,
        state,
        queue: entry
            .map(|e| e.env.queue.clone())
            .or_else(|| noted.map(|n| n.queue.clone())),
        worker: record.and_then(|r| r.worker.clone()),
        sent: entry
            .map(|e| e.env.created)
            .or_else(|| noted.map(|n| n.sent)),
        received: noted.and_then(|n| n.received),
        started: record.and_then(|r| r.started),
        runtime_ms,
        retries: attempts.saturating_sub(1),
        args_preview: noted.map(|n| n.args_preview.clone()),
    })
}

impl Inspect for MemoryBackend {
    fn list_tasks(&self, query: &TaskQuery) -> Result<TaskPage> {
        let after = query.after()?;
        let size = query.page_size();
        let st = self.state();
        let mut ids: Vec<TaskId> = st
            .entries
            .keys()
            .chain(st.results.keys())
            .copied()
            .filter(|id| after.is_none_or(|TaskCursor(a)| *id < a))
            .collect();
        ids.sort_unstable_by(|a, b| b.cmp(a));
        ids.dedup();
        let mut items: Vec<TaskSummary> = ids
            .into_iter()
            .filter_map(|id| summary(&st, id))
            .filter(|s| ops::matches(query, s))
            .take(size + 1)
            .collect();
        let next_cursor = if items.len() > size {
            items.truncate(size);
            items.last().map(|s| TaskCursor(s.id).encode())
        } else {
            None
        };
        Ok(TaskPage { items, next_cursor })
    }

    fn task_counts(&self) -> Result<StateCounts> {
        let st = self.state();
        let mut c = st.ops.counts.clone();
        // The gauges are the places of the entries: the memory backend has them at hand.
        (c.pending, c.scheduled, c.reserved) = (0, 0, 0);
        for e in st.entries.values() {
            match e.place {
                Place::Ready => c.pending += 1,
                Place::Scheduled(_) => c.scheduled += 1,
                Place::Reserved(_) => c.reserved += 1,
            }
        }
        Ok(c)
    }

    fn task_info(&self, id: TaskId) -> Result<Option<TaskInfo>> {
        let st = self.state();
        let Some(summary) = summary(&st, id) else {
            return Ok(None);
        };
        Ok(Some(TaskInfo {
            summary,
            envelope: st.entries.get(&id).map(|e| e.env.clone()),
            record: st.results.get(&id).cloned(),
            dead_letter: st.dead.iter().rev().find(|d| d.envelope.id == id).cloned(),
        }))
    }
}

impl QueueOps for MemoryBackend {
    fn pause(&self, queue: &str) -> Result<()> {
        self.state().ops.paused.insert(queue.to_owned());
        Ok(())
    }

    fn resume(&self, queue: &str) -> Result<()> {
        self.state().ops.paused.remove(queue);
        self.changed.notify_all();
        Ok(())
    }

    fn discard_dead(&self, ids: &[TaskId]) -> Result<u64> {
        let mut st = self.state();
        let before = st.dead.len();
        st.dead.retain(|d| !ids.contains(&d.envelope.id));
        Ok((before - st.dead.len()) as u64)
    }

    fn delete_tasks(&self, ids: &[TaskId]) -> Result<Vec<TaskId>> {
        let mut st = self.state();
        let mut gone = Vec::new();
        for id in ids {
            let held = st
                .entries
                .get(id)
                .is_some_and(|e| matches!(e.place, Place::Reserved(_)));
            if held {
                continue;
            }
            let live = st.remove(*id).is_some();
            let record = st.results.remove(id).is_some();
            st.ops.noted.remove(id);
            if live || record {
                gone.push(*id);
            }
        }
        Ok(gone)
    }

    fn paused(&self) -> Result<Vec<String>> {
        Ok(self.state().ops.paused.iter().cloned().collect())
    }

    fn peek(&self, queue: &str, limit: usize) -> Result<Vec<Envelope>> {
        let st = self.state();
        let ready = st
            .ready
            .get(queue)
            .into_iter()
            .flatten()
            .map(|(_, _, id)| *id);
        let scheduled = st.scheduled.iter().map(|(_, _, id)| *id);
        Ok(ready
            .chain(scheduled)
            .filter_map(|id| st.entries.get(&id))
            .filter(|e| e.env.queue == queue)
            .take(limit)
            .map(|e| e.env.clone())
            .collect())
    }

    fn queues(&self) -> Result<Vec<QueueInfo>> {
        let now = Timestamp::now();
        let st = self.state();
        let mut by = QueueTable::default();
        for e in st.entries.values() {
            let i = by.entry(&e.env.queue);
            match e.place {
                Place::Ready => {
                    i.ready += 1;
                    let age = (now - e.env.eta.unwrap_or(e.env.created)).as_secs_f64();
                    i.oldest_ready_age_s = i.oldest_ready_age_s.max(age);
                }
                Place::Scheduled(_) => i.scheduled += 1,
                Place::Reserved(_) => i.reserved += 1,
            }
        }
        for d in &st.dead {
            by.entry(&d.envelope.queue).dead += 1;
        }
        by.paused(st.ops.paused.iter().cloned());
        Ok(by.into_vec())
    }
}

impl Events for MemoryBackend {
    fn publish(&self, events: &[Event]) -> Result<()> {
        let mut st = self.state();
        let o = &mut st.ops;
        for e in events {
            o.last_seq += 1;
            o.events.push_back(Event {
                seq: o.last_seq,
                ..e.clone()
            });
        }
        let over = (o.events.len() as u64).saturating_sub(EVENTS_KEPT);
        o.events.drain(..over as usize);
        Ok(())
    }

    fn read_events(&self, after: u64, limit: usize) -> Result<EventBatch> {
        let st = self.state();
        let o = &st.ops;
        let oldest_seq = o.events.front().map_or(0, |e| e.seq);
        // Seqs are dense, so the first wanted event's place is arithmetic.
        let skip = (after + 1).saturating_sub(oldest_seq.max(1)) as usize;
        Ok(EventBatch {
            events: o.events.iter().skip(skip).take(limit).cloned().collect(),
            oldest_seq,
            last_seq: o.last_seq,
        })
    }
}

impl Control for MemoryBackend {
    fn send_control(&self, destinations: &[String], request: &ControlRequest) -> Result<()> {
        let mut st = self.state();
        for d in destinations {
            st.ops
                .mailboxes
                .entry(d.clone())
                .or_default()
                .push(request.clone());
        }
        Ok(())
    }

    fn take_control(&self, worker: &str) -> Result<Vec<ControlRequest>> {
        let now = Timestamp::now();
        let mut st = self.state();
        let mut taken = st.ops.mailboxes.remove(worker).unwrap_or_default();
        taken.retain(|r| r.expires > now);
        Ok(taken)
    }

    fn reply(&self, request_id: &str, worker: &str, reply: &serde_json::Value) -> Result<()> {
        let now = Timestamp::now();
        let mut st = self.state();
        let replies = &mut st.ops.replies;
        if replies.len().is_power_of_two() {
            replies.retain(|_, (_, until)| *until > now);
        }
        replies
            .entry(request_id.to_owned())
            .or_insert_with(|| (Vec::new(), now + ops::CONTROL_TTL))
            .0
            .push(ControlReply {
                worker: worker.to_owned(),
                reply: reply.clone(),
            });
        Ok(())
    }

    fn replies(&self, request_id: &str) -> Result<Vec<ControlReply>> {
        let now = Timestamp::now();
        Ok(self
            .state()
            .ops
            .replies
            .get(request_id)
            .filter(|(_, until)| *until > now)
            .map(|(r, _)| r.clone())
            .unwrap_or_default())
    }
}
