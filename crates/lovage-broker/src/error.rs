//! The one error type of brokers and result stores, with the backend's own error kept as its
//! source and a verdict on whether trying again may help.

use std::error::Error as StdError;

/// The error a backend reported, kept whole so callers can walk the chain.
pub type Source = Box<dyn StdError + Send + Sync + 'static>;

/// A broker or result-store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// The URL names no backend this build has, or is malformed.
    #[error("bad broker URL {url:?}: {reason}")]
    BadUrl { url: String, reason: String },
    /// The backend could not be opened or reached.
    #[error("cannot open the {backend} broker at {location}: {source}")]
    Open {
        backend: &'static str,
        location: String,
        #[source]
        source: Source,
    },
    /// The file or database exists but is not a lovage broker (or is a newer format).
    #[error("{location} is not a lovage broker database: {reason}")]
    NotLovage { location: String, reason: String },
    /// An operation failed in the backend.
    #[error("{backend} broker at {location}: {op} failed: {source}")]
    Backend {
        backend: &'static str,
        location: String,
        op: &'static str,
        #[source]
        source: Source,
    },
    /// The call's arguments could not be encoded.
    #[error(transparent)]
    Codec(#[from] lovage_core::CodecError),
    /// Stored data could not be decoded.
    #[error("corrupt record in the broker: {0}")]
    Corrupt(String),
    /// A caller's argument is not acceptable (a cursor a page did not hand out, a bad name).
    #[error("bad {what}: {reason}")]
    BadRequest { what: &'static str, reason: String },
    /// This backend does not do this (yet).
    #[error("the {backend} broker does not support {op} yet")]
    Unsupported {
        backend: &'static str,
        op: &'static str,
    },
    /// A wait (a scope's join) ran past the caller's limit; what it waited for goes on.
    #[error("timed out: {0}")]
    Timeout(String),
}

impl BrokerError {
    /// True when the same call may succeed later without anyone changing anything: the
    /// backend was unreachable, busy or out of space, as opposed to a bad URL, a foreign
    /// database, a value that does not encode or a record that does not decode.
    pub fn is_transient(&self) -> bool {
        match self {
            BrokerError::Open { source, .. } | BrokerError::Backend { source, .. } => {
                chain_is_transient(source.as_ref())
            }
            BrokerError::BadUrl { .. }
            | BrokerError::NotLovage { .. }
            | BrokerError::Codec(_)
            | BrokerError::Corrupt(_)
            | BrokerError::BadRequest { .. }
            | BrokerError::Unsupported { .. }
            | BrokerError::Timeout(_) => false,
        }
    }
}

/// Walks a source chain for an error known to pass: I/O trouble, a locked or full SQLite
/// file, a dropped or timed-out Redis connection, a Redis server demoted to a replica or out
/// of memory.
/// Unknown errors are taken as lasting.
fn chain_is_transient(mut e: &(dyn StdError + 'static)) -> bool {
    loop {
        if e.downcast_ref::<std::io::Error>().is_some() {
            return true;
        }
        #[cfg(feature = "sqlite")]
        if let Some(e) = e.downcast_ref::<rusqlite::Error>() {
            use rusqlite::ErrorCode as C;
            return matches!(
                e.sqlite_error_code(),
                Some(C::DatabaseBusy | C::DatabaseLocked | C::DiskFull | C::SystemIoFailure)
            );
        }
        #[cfg(feature = "redis")]
        if let Some(e) = e.downcast_ref::<redis::RedisError>() {
            return e.is_io_error()
                || e.is_timeout()
                || e.is_connection_dropped()
                || e.is_connection_refusal()
                || matches!(
                    e.kind(),
                    // READONLY: a failover demoted the server; the pool is emptied, and a retry
                    // connects to whichever server the address leads to now.
                    redis::ErrorKind::BusyLoadingError
                        | redis::ErrorKind::TryAgain
                        | redis::ErrorKind::ReadOnly
                )
                // OOM: `maxmemory` reached under `noeviction`; it passes once workers drain
                // queues and results expire (SQLite's full disk, the same way).
                || e.code() == Some("OOM");
        }
        match e.source() {
            Some(next) => e = next,
            None => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_trouble_is_transient_and_a_bad_url_is_not() {
        let io = BrokerError::Backend {
            backend: "test",
            location: "here".into(),
            op: "reserve",
            source: Box::new(std::io::Error::from(std::io::ErrorKind::ConnectionReset)),
        };
        assert!(io.is_transient());
        let text = BrokerError::Backend {
            backend: "test",
            location: "here".into(),
            op: "reserve",
            source: "no such table".into(),
        };
        assert!(!text.is_transient());
        let url = BrokerError::BadUrl {
            url: "x".into(),
            reason: "y".into(),
        };
        assert!(!url.is_transient());
    }

    #[test]
    fn the_source_is_kept() {
        let e = BrokerError::Open {
            backend: "test",
            location: "here".into(),
            source: Box::new(std::io::Error::other("refused")),
        };
        let source = e.source().expect("a source");
        assert_eq!(source.to_string(), "refused");
        assert!(e.to_string().contains("refused"));
    }

    #[cfg(feature = "sqlite")]
    #[test]
    fn a_busy_sqlite_file_is_transient() {
        let busy = rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY),
            None,
        );
        let e = BrokerError::Backend {
            backend: "sqlite",
            location: "f".into(),
            op: "reserve",
            source: Box::new(busy),
        };
        assert!(e.is_transient());
    }
}
