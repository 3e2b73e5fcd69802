//! Waiting for a change: a reserve with nothing ready and a result wait block here until
//! another process commits (seen by polling `PRAGMA data_version`, as SQLite cannot push a
//! change to another process) or this process writes (a condition variable wakes them at once).

use std::time::{Duration, Instant};

use super::SqliteBackend;
use crate::Result;

impl SqliteBackend {
    /// Counts a committed write and wakes this process's waiters.
    pub(super) fn wake_local_waiters(&self) {
        *self.local_writes.lock().unwrap_or_else(|p| p.into_inner()) += 1;
        self.written.notify_all();
    }

    /// Where the database stands: other connections' commits and this process's writes. Taken
    /// *before* a look at the data, so a change between the look and the wait is not missed.
    pub(super) fn change_marker(&self) -> Result<(i64, u64)> {
        let version = self.data_version()?;
        let local = *self.local_writes.lock().unwrap_or_else(|p| p.into_inner());
        Ok((version, local))
    }

    fn data_version(&self) -> Result<i64> {
        // Asked every millisecond or so while waiting: prepared once.
        self.conn()
            .prepare_cached("PRAGMA data_version")
            .and_then(|mut q| q.query_row([], |r| r.get(0)))
            .map_err(|e| self.err("data_version", e))
    }

    /// Blocks until another process commits, this process writes, or `until` passes.
    pub(super) fn wait_for_change(&self, until: Instant, marker: (i64, u64)) -> Result<()> {
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
}
