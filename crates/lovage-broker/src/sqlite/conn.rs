//! The one connection and its transactions: every call takes the connection's mutex, writes run
//! in IMMEDIATE transactions, and SQLite's errors become [`BrokerError`]s naming the file and the
//! operation. A busy file is waited for by SQLite's busy timeout (10 s, set at open).

use std::sync::MutexGuard;

use rusqlite::{Connection, TransactionBehavior};

use super::SqliteBackend;
use crate::{BrokerError, Result, Source};

impl SqliteBackend {
    /// The connection, for this call alone. A panic while it was held leaves no transaction
    /// open (a dropped transaction rolls back), so a poisoned mutex is taken as it is.
    pub(super) fn conn(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// An SQLite error in `op`.
    pub(super) fn err(&self, op: &'static str, e: rusqlite::Error) -> BrokerError {
        self.fail(op, Box::new(e))
    }

    /// Any other failure in `op` (a value that does not encode).
    pub(super) fn fail(&self, op: &'static str, source: Source) -> BrokerError {
        BrokerError::Backend {
            backend: "sqlite",
            location: self.path.display().to_string(),
            op,
            source,
        }
    }

    /// Runs `f` in an IMMEDIATE transaction (takes the write lock up front, so two processes
    /// never deadlock upgrading a read) and wakes local waiters after the commit.
    pub(super) fn write<T>(
        &self,
        op: &'static str,
        f: impl FnOnce(&rusqlite::Transaction<'_>) -> rusqlite::Result<T>,
    ) -> Result<T> {
        let out = self.write_quietly(op, f)?;
        self.wake_local_waiters();
        Ok(out)
    }

    /// A write that wakes no waiter in this process (a reserve: it makes nothing new to wait
    /// for, and counting it would wake its own caller).
    pub(super) fn write_quietly<T>(
        &self,
        op: &'static str,
        f: impl FnOnce(&rusqlite::Transaction<'_>) -> rusqlite::Result<T>,
    ) -> Result<T> {
        // One line per write transaction at trace level: how a workload's transactions are
        // counted (docs/benchmarks.md, the crawl).
        tracing::trace!(op, "sqlite write");
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| self.err(op, e))?;
        let out = f(&tx).map_err(|e| self.err(op, e))?;
        tx.commit().map_err(|e| self.err(op, e))?;
        drop(conn);
        self.checkpoints.committed();
        Ok(out)
    }
}
