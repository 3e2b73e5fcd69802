//! What can go wrong, said plainly.

use std::time::Duration;

/// An error from `lovage::mp`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A system call failed.
    #[error("{what}: {source}")]
    Io {
        /// What lovage was doing.
        what: String,
        /// The system's error.
        #[source]
        source: std::io::Error,
    },
    /// A descriptor names no object this process can reach (its creator and every inheritor
    /// let go of it, or it was made up).
    #[error("descriptor of a {kind} (fd {fd} of process {pid}) names no live lovage object: it was not inherited and its process no longer holds it")]
    NotFound {
        /// The kind the descriptor claims.
        kind: String,
        /// The descriptor number in its process.
        fd: i32,
        /// The process that wrote the descriptor.
        pid: u32,
    },
    /// A descriptor or object is of another kind or element type than the one opening it.
    #[error("a lovage {found} cannot be opened as a {expected}")]
    WrongType {
        /// What the caller asked for, e.g. `Array<u64>`.
        expected: String,
        /// What the object is.
        found: String,
    },
    /// The memory behind a descriptor is not a lovage object (no header, or a corrupt one).
    #[error("not a lovage object: {0}")]
    NotLovage(String),
    /// An argument is out of range.
    #[error("invalid argument: {0}")]
    Invalid(String),
    /// A message is larger than the queue can ever hold.
    #[error("message of {size} bytes is larger than this queue's limit of {max} bytes (make the queue with a larger capacity)")]
    MessageTooLarge {
        /// The encoded message's size.
        size: usize,
        /// The largest message the queue takes.
        max: usize,
    },
    /// The wait ended before the operation could complete.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// The queue or pipe was closed.
    #[error("closed")]
    Closed,
    /// A message could not be encoded or decoded.
    #[error(transparent)]
    Codec(#[from] lovage_core::CodecError),
}

impl Error {
    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            what: what.into(),
            source,
        }
    }
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
