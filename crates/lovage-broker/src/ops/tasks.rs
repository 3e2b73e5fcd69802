//! The task index: every task the broker or the result store still knows, listed newest first
//! in keyset pages, and the counts by state.

use lovage_core::{TaskId, TaskState};
use serde::{Deserialize, Serialize};

use crate::{BrokerError, DeadLetter, Envelope, Result, ResultRecord, Timestamp};

/// The most items one page holds; a larger `limit` is cut to this.
pub const MAX_PAGE: usize = 500;

/// How much of a task's encoded arguments the index keeps for a preview (the whole arguments
/// stay in the task's message while the broker holds it, and in its dead letter).
pub const ARGS_PREVIEW_BYTES: usize = 120;

/// Which tasks to list. Every filter is optional; the ones given must all match.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TaskQuery {
    /// Only tasks in this state.
    pub state: Option<TaskState>,
    /// Only tasks of this registered name.
    pub name: Option<String>,
    /// Only tasks sent to this queue.
    pub queue: Option<String>,
    /// Only tasks a worker whose id is this ran or holds.
    pub worker: Option<String>,
    /// Only tasks sent at or after this time.
    pub since: Option<Timestamp>,
    /// Only tasks sent before this time.
    pub until: Option<Timestamp>,
    /// Items per page (at most [`MAX_PAGE`]; 0 means 50).
    pub limit: usize,
    /// Where the previous page ended (its [`TaskPage::next_cursor`]); `None` for the first.
    pub cursor: Option<String>,
}

impl TaskQuery {
    /// The page size this query asks for, within bounds.
    pub fn page_size(&self) -> usize {
        match self.limit {
            0 => 50,
            n => n.min(MAX_PAGE),
        }
    }

    /// The cursor decoded, or a clear error for one that was not handed out by a page.
    pub fn after(&self) -> Result<Option<TaskCursor>> {
        self.cursor.as_deref().map(TaskCursor::decode).transpose()
    }
}

/// Where a page of tasks ended. Tasks are listed newest first by id (ids are time-ordered
/// UUIDv7), so the cursor is the last id listed; its text form is opaque to clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskCursor(pub TaskId);

impl TaskCursor {
    /// The opaque text handed to clients.
    pub fn encode(&self) -> String {
        format!("t{}", self.0)
    }

    /// Reads a cursor back; anything a page did not hand out is refused with what was wrong.
    pub fn decode(text: &str) -> Result<TaskCursor> {
        let bad = |reason: &str| BrokerError::BadRequest {
            what: "cursor",
            reason: format!("{text:?}: {reason} (pass back the next_cursor of a page)"),
        };
        let id_text = text
            .strip_prefix('t')
            .ok_or_else(|| bad("not a task cursor"))?;
        let id = id_text.parse::<TaskId>().map_err(|_| bad("malformed"))?;
        Ok(TaskCursor(id))
    }
}

/// One task as a list shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskSummary {
    /// The task.
    pub id: TaskId,
    /// Registered task name.
    pub name: String,
    /// Where it is in its life: its result record's state when it has one, otherwise PENDING
    /// while it waits and RECEIVED while a worker holds it.
    pub state: TaskState,
    /// The queue it was sent to (unknown for a record stored without a message, e.g. by a
    /// client for a task sent elsewhere).
    pub queue: Option<String>,
    /// The worker that holds it or ran it last.
    pub worker: Option<String>,
    /// When it was sent.
    pub sent: Option<Timestamp>,
    /// When a worker reserved it last, where the backend keeps it (memory and SQLite do;
    /// Redis does not, to keep a reserve as cheap as it was: its `task-received` event says).
    pub received: Option<Timestamp>,
    /// When its last attempt started.
    pub started: Option<Timestamp>,
    /// How long its last attempt ran, once finished.
    pub runtime_ms: Option<u64>,
    /// Attempts beyond the first.
    pub retries: u32,
    /// The first [`ARGS_PREVIEW_BYTES`] bytes of its encoded arguments, as text (lossy).
    pub args_preview: Option<String>,
}

/// One page of a task listing.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TaskPage {
    /// Newest first.
    pub items: Vec<TaskSummary>,
    /// Pass back as [`TaskQuery::cursor`] for the next page; `None` on the last page.
    pub next_cursor: Option<String>,
}

/// Everything the broker knows about one task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskInfo {
    /// As a list shows it.
    pub summary: TaskSummary,
    /// Its message (arguments, options, workflow frames) while the broker holds it.
    pub envelope: Option<Envelope>,
    /// Its result record, if one is stored.
    pub record: Option<ResultRecord>,
    /// Its dead letter, if it failed for the last time and the letter is still kept (this also
    /// carries its arguments after it left the broker).
    pub dead_letter: Option<DeadLetter>,
}

/// Counts by state, from counters the broker keeps as tasks change state (never by counting
/// rows). `pending`, `scheduled` and `reserved` are gauges (now); the rest are totals since
/// the broker was created, which only go up (Prometheus counters).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateCounts {
    /// Waiting and ready now.
    pub pending: u64,
    /// Waiting for an ETA or a retry delay now.
    pub scheduled: u64,
    /// Held by workers now (RECEIVED or STARTED).
    pub reserved: u64,
    /// Sent, ever.
    pub sent: u64,
    /// Finished with SUCCESS, ever.
    pub succeeded: u64,
    /// Finished with FAILURE, ever.
    pub failed: u64,
    /// Failed and scheduled to run again, ever.
    pub retried: u64,
    /// Revoked, ever.
    pub revoked: u64,
}

/// The task index and counts.
pub trait Inspect: Send + Sync {
    /// A page of tasks matching `query`, newest first, read from indexes (never a scan of
    /// every task). A bad cursor is a [`BrokerError::BadRequest`].
    fn list_tasks(&self, query: &TaskQuery) -> Result<TaskPage>;

    /// Counts by state, from the broker's counters.
    fn task_counts(&self) -> Result<StateCounts>;

    /// Everything known about `id`; `None` when the broker and result store know nothing.
    fn task_info(&self, id: TaskId) -> Result<Option<TaskInfo>>;
}

/// Lossy text of the first [`ARGS_PREVIEW_BYTES`] bytes of `args`, cut on a character boundary.
pub fn args_preview(args: &[u8]) -> String {
    let head = &args[..args.len().min(ARGS_PREVIEW_BYTES)];
    let text = String::from_utf8_lossy(head);
    text.trim_end_matches('\u{FFFD}').to_owned()
}

/// Whether `s` passes every filter of `q` but the cursor.
pub(crate) fn matches(q: &TaskQuery, s: &TaskSummary) -> bool {
    let sent = s.sent.or_else(|| Some(sent_of(s.id)));
    q.state.is_none_or(|st| st == s.state)
        && q.name.as_ref().is_none_or(|n| *n == s.name)
        && q.queue.as_ref().is_none_or(|n| s.queue.as_ref() == Some(n))
        && q.worker
            .as_ref()
            .is_none_or(|n| s.worker.as_ref() == Some(n))
        && q.since.is_none_or(|t| sent.is_some_and(|s| s >= t))
        && q.until.is_none_or(|t| sent.is_some_and(|s| s < t))
}

/// When a task was sent, read from its time-ordered id (UUIDv7's first 48 bits).
pub fn sent_of(id: TaskId) -> Timestamp {
    Timestamp::from_millis((id.as_uuid().as_u128() >> 80) as i64)
}

/// A task as the broker holds it, for [`summarize`].
pub(crate) struct Live {
    pub(crate) name: String,
    pub(crate) queue: String,
    pub(crate) reserved: bool,
    pub(crate) attempts: u32,
    pub(crate) sent: Timestamp,
    pub(crate) received: Option<Timestamp>,
    pub(crate) preview: Option<String>,
}

/// What the index kept beside a result record (from the task's message as it was stored).
#[derive(Default)]
pub(crate) struct Kept {
    pub(crate) queue: Option<String>,
    pub(crate) preview: Option<String>,
    pub(crate) received: Option<Timestamp>,
}

/// One task's summary from what the broker holds (`live`) and what the result store keeps
/// (`record`, `kept`): the record's state once final; otherwise PENDING or RETRY while it
/// waits, RECEIVED or STARTED (its record says so for this attempt) while a worker holds it.
/// `None` when neither knows it.
pub(crate) fn summarize(
    id: TaskId,
    live: Option<Live>,
    record: Option<&ResultRecord>,
    kept: Kept,
) -> Option<TaskSummary> {
    let state = match (&live, record) {
        (_, Some(r)) if r.state.is_final() => r.state,
        (Some(l), r) if l.reserved => match r {
            Some(r) if r.state == TaskState::Started && r.attempts == l.attempts => {
                TaskState::Started
            }
            _ => TaskState::Received,
        },
        (Some(_), Some(r)) if r.state == TaskState::Retry => TaskState::Retry,
        (Some(_), _) => TaskState::Pending,
        (None, Some(r)) => r.state,
        (None, None) => return None,
    };
    let attempts = live
        .as_ref()
        .map(|l| l.attempts)
        .max(record.map(|r| r.attempts))
        .unwrap_or(0);
    let runtime_ms = record.and_then(|r| {
        let started = r.started?;
        r.state
            .is_final()
            .then(|| (r.updated - started).as_millis() as u64)
    });
    let (name, queue, sent, received, preview) = match live {
        Some(l) => (l.name, Some(l.queue), Some(l.sent), l.received, l.preview),
        None => (
            record.map(|r| r.task.clone()).unwrap_or_default(),
            kept.queue,
            Some(sent_of(id)),
            kept.received,
            kept.preview,
        ),
    };
    Some(TaskSummary {
        id,
        name,
        state,
        queue,
        worker: record.and_then(|r| r.worker.clone()),
        sent,
        received,
        started: record.and_then(|r| r.started),
        runtime_ms,
        retries: attempts.saturating_sub(1),
        args_preview: preview,
    })
}

/// The smallest id text of a task sent at `t` (hyphenated UUIDv7: the first 48 bits are the
/// time in ms), for id-range filters in SQL and sorted sets.
pub(crate) fn id_floor(t: Timestamp) -> String {
    let hex = format!("{:012x}", t.as_millis().clamp(0, (1 << 48) - 1));
    format!("{}-{}", &hex[..8], &hex[8..])
}

/// How many candidate tasks one listing reads at most before it returns what it found (a
/// short page with a cursor to go on): a rare filter never makes one request scan the index.
pub const SCAN_BUDGET: usize = 5_000;

/// Where a listing reads candidates: ids newest first, below `below` (exclusive) and at or
/// above `floor` (inclusive), both as id text, at most `n`, narrowed by what the storage's
/// indexes can narrow by (the rest is checked on the summaries).
pub(crate) type Candidates<'a> =
    dyn FnMut(Option<&str>, Option<&str>, usize) -> Result<Vec<TaskId>> + 'a;

/// The summaries of ids, in order, `None` for an id nobody knows now.
pub(crate) type Summaries<'a> = dyn FnMut(&[TaskId]) -> Result<Vec<Option<TaskSummary>>> + 'a;

/// A page of `query` from `candidates` and `summaries` (one per id, `None` for an id neither
/// the broker nor the result store knows now): reads chunks of candidates until the page is
/// full, the candidates end, or [`SCAN_BUDGET`] were read (then the page may be short, with a
/// cursor to go on).
pub(crate) fn page(
    query: &TaskQuery,
    candidates: &mut Candidates<'_>,
    summaries: &mut Summaries<'_>,
) -> Result<TaskPage> {
    let size = query.page_size();
    let mut below = query.after()?.map(|c| c.0.to_string());
    if let Some(until) = query.until {
        let cap = id_floor(until);
        if below.as_ref().is_none_or(|b| *b > cap) {
            below = Some(cap);
        }
    }
    let floor = query.since.map(id_floor);
    let chunk = (size + 1).max(32);
    let mut items = Vec::with_capacity(size + 1);
    let mut scanned = 0;
    loop {
        let ids = candidates(below.as_deref(), floor.as_deref(), chunk)?;
        scanned += ids.len();
        let found = summaries(&ids)?;
        for (id, s) in ids.iter().zip(found) {
            below = Some(id.to_string());
            let Some(s) = s.filter(|s| matches(query, s)) else {
                continue;
            };
            items.push(s);
            if items.len() > size {
                items.truncate(size);
                let next_cursor = items.last().map(|s| TaskCursor(s.id).encode());
                return Ok(TaskPage { items, next_cursor });
            }
        }
        if ids.len() < chunk {
            return Ok(TaskPage {
                items,
                next_cursor: None,
            });
        }
        if scanned >= SCAN_BUDGET {
            let next_cursor = ids.last().map(|id| TaskCursor(*id).encode());
            return Ok(TaskPage { items, next_cursor });
        }
    }
}
