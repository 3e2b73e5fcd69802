//! Checkpoints off the writers' path.
//!
//! SQLite's automatic checkpoint (copying the WAL back into the database file) runs in the
//! connection whose commit crosses the threshold, after the commit, and ends with an fsync of
//! the database file. A process here has one connection behind one mutex, so every thread of a
//! worker (its task threads spawning, its fetcher reserving, its finisher settling) waited for
//! the disk every ~1,000 WAL pages. Measured on the crawl (docs/benchmarks.md): a quarter of a
//! page's time.
//!
//! So the automatic checkpoint is only a backstop ([`BACKSTOP_PAGES`]), and a thread with a
//! connection of its own runs a PASSIVE checkpoint (it never waits for, nor blocks, a writer or
//! a reader) after every [`COMMITS_PER_CHECKPOINT`] commits of this process, or once writes
//! pause. The thread starts on the first such batch of commits, so a process that only reads
//! never starts one, and stops when the backend is dropped.

use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::Connection;

/// WAL pages past which a committing connection checkpoints itself anyway (SQLite's default is
/// 1,000): reached only when the checkpoint thread cannot keep up, e.g. under a long reader.
pub(super) const BACKSTOP_PAGES: u32 = 16_000;

/// Commits of this process between two checkpoints (a write transaction here touches ~2–12
/// pages, so about SQLite's 1,000-page default).
pub(super) const COMMITS_PER_CHECKPOINT: u32 = 96;

/// How long writes must pause before the commits so far are checkpointed anyway.
const IDLE: Duration = Duration::from_millis(500);

/// Runs PASSIVE checkpoints of one database file on a thread of its own (see the module docs).
pub(super) struct Checkpointer {
    inner: Arc<Inner>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

struct Inner {
    path: PathBuf,
    state: Mutex<State>,
    wake: Condvar,
}

#[derive(Default)]
struct State {
    /// Commits since the last checkpoint began.
    commits: u32,
    stop: bool,
}

impl Checkpointer {
    pub(super) fn new(path: PathBuf) -> Checkpointer {
        Checkpointer {
            inner: Arc::new(Inner {
                path,
                state: Mutex::new(State::default()),
                wake: Condvar::new(),
            }),
            thread: Mutex::new(None),
        }
    }

    /// Counts a commit of this process; every [`COMMITS_PER_CHECKPOINT`] commits the thread
    /// (started now if it was not) runs a checkpoint.
    pub(super) fn committed(&self) {
        let mut state = self.inner.lock();
        state.commits += 1;
        if state.commits < COMMITS_PER_CHECKPOINT {
            return;
        }
        drop(state);
        let mut thread = self.thread.lock().unwrap_or_else(|p| p.into_inner());
        if thread.is_none() {
            let inner = self.inner.clone();
            // Without the thread the backstop still bounds the WAL, so a failed spawn only
            // costs speed.
            *thread = std::thread::Builder::new()
                .name("lovage-sqlite-checkpoint".into())
                .spawn(move || inner.run())
                .ok();
        }
        self.inner.wake.notify_one();
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.inner.lock().stop = true;
        self.inner.wake.notify_one();
        let thread = self.thread.get_mut().unwrap_or_else(|p| p.into_inner());
        if let Some(t) = thread.take() {
            let _ = t.join();
        }
    }
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn run(&self) {
        let mut conn: Option<Connection> = None;
        loop {
            {
                let mut state = self.lock();
                while !state.stop && state.commits < COMMITS_PER_CHECKPOINT {
                    let (next, timeout) = self
                        .wake
                        .wait_timeout(state, IDLE)
                        .unwrap_or_else(|p| p.into_inner());
                    state = next;
                    if timeout.timed_out() && state.commits > 0 {
                        break;
                    }
                }
                if state.stop {
                    return;
                }
                state.commits = 0;
            }
            if conn.is_none() {
                conn = Connection::open(&self.path).ok();
            }
            let Some(c) = conn.as_ref() else { continue };
            // PASSIVE copies what no reader still needs and returns at once when a writer or
            // another process's checkpoint holds the file; the next round finishes the work.
            if let Err(e) = c.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                tracing::debug!(path = %self.path.display(), error = %e, "sqlite checkpoint");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_len(p: &std::path::Path) -> u64 {
        std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
    }

    #[test]
    fn commits_are_copied_back_into_the_database_file_by_the_thread() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.db");
        let writer = Connection::open(&path).unwrap();
        writer
            .execute_batch(&format!(
                "PRAGMA journal_mode = WAL; PRAGMA wal_autocheckpoint = {BACKSTOP_PAGES};
                 CREATE TABLE t (v BLOB);"
            ))
            .unwrap();
        let before = file_len(&path);
        let cp = Checkpointer::new(path.clone());
        for _ in 0..COMMITS_PER_CHECKPOINT {
            writer
                .execute("INSERT INTO t VALUES (zeroblob(8192))", [])
                .unwrap();
            cp.committed();
        }
        // The backstop is far away, so only the thread can have grown the database file.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while file_len(&path) <= before + 8192 * u64::from(COMMITS_PER_CHECKPOINT) / 2 {
            assert!(
                std::time::Instant::now() < deadline,
                "no checkpoint: the database file stayed at {} bytes",
                file_len(&path)
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        drop(cp);
    }

    #[test]
    fn a_backend_that_never_commits_enough_starts_no_thread() {
        let cp = Checkpointer::new(PathBuf::from("/nonexistent/never-opened.db"));
        cp.committed();
        assert!(cp.thread.lock().unwrap().is_none());
    }
}
