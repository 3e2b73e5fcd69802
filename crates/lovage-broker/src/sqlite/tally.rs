//! The counts by state, kept as `counters` rows: each write transaction tallies what it
//! changed (from its statements' change counts) and adds it with one UPSERT per count that
//! moved, so a batch of a thousand tasks costs one or two statements more, never one per task.

use lovage_core::TaskState;
use rusqlite::params;

/// Counter keys in the `counters` table.
pub(super) const SENT: &str = "lovage:count:sent";
pub(super) const SUCCEEDED: &str = "lovage:count:succeeded";
pub(super) const FAILED: &str = "lovage:count:failed";
pub(super) const RETRIED: &str = "lovage:count:retried";
pub(super) const REVOKED: &str = "lovage:count:revoked";
/// Rows of `tasks`: waiting, scheduled or reserved.
pub(super) const LIVE: &str = "lovage:count:live";
/// The prefix of one queue's [`LIVE`] count (`lovage:count:live:QUEUE`): queue depths read
/// from counters, not by counting a million rows.
pub(super) const LIVE_IN: &str = "lovage:count:live:";

/// What one transaction changed, to add to the counters before it commits.
#[derive(Debug, Default)]
pub(super) struct Tally {
    pub(super) sent: i64,
    pub(super) succeeded: i64,
    pub(super) failed: i64,
    pub(super) retried: i64,
    pub(super) revoked: i64,
    pub(super) live: i64,
    /// `live` by queue (added to it by [`Tally::live_in`]).
    pub(super) live_by_queue: Vec<(String, i64)>,
}

impl Tally {
    /// Counts a stored record that changed its task's state (or attempt) to `state`.
    pub(super) fn stored(&mut self, state: TaskState) {
        match state {
            TaskState::Success => self.succeeded += 1,
            TaskState::Failure => self.failed += 1,
            TaskState::Revoked => self.revoked += 1,
            _ => {}
        }
    }

    /// Counts `by` more rows of `tasks` in `queue` (fewer when negative).
    pub(super) fn live_in(&mut self, queue: &str, by: i64) {
        self.live += by;
        // A batch touches one queue or a few: a short list beats a map.
        match self.live_by_queue.iter_mut().find(|(q, _)| q == queue) {
            Some((_, n)) => *n += by,
            None => self.live_by_queue.push((queue.to_owned(), by)),
        }
    }

    /// Adds the tally to the counters, one statement per count that moved.
    pub(super) fn flush(&self, tx: &rusqlite::Transaction<'_>) -> rusqlite::Result<()> {
        let moved = [
            (SENT, self.sent),
            (SUCCEEDED, self.succeeded),
            (FAILED, self.failed),
            (RETRIED, self.retried),
            (REVOKED, self.revoked),
            (LIVE, self.live),
        ];
        let add = |key: &str, by: i64| -> rusqlite::Result<()> {
            if by != 0 {
                tx.prepare_cached(
                    "INSERT INTO counters (key, value) VALUES (?1, ?2) \
                     ON CONFLICT(key) DO UPDATE SET value = value + excluded.value",
                )?
                .execute(params![key, by])?;
            }
            Ok(())
        };
        for (key, by) in moved {
            add(key, by)?;
        }
        for (queue, by) in &self.live_by_queue {
            add(&format!("{LIVE_IN}{queue}"), *by)?;
        }
        Ok(())
    }
}
