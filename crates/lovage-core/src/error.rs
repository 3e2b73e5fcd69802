//! The error a task ends with.
//!
//! A task's failure is data: it crosses process and host boundaries, so it is a plain record of
//! kind, message and the chain of causes, not a boxed trait object.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The kinds lovage itself produces. Errors returned by task code carry the name of their Rust
/// type instead (e.g. `ParseIntError`), so a retry policy can pick kinds by name.
pub mod kinds {
    /// The task panicked.
    pub const PANIC: &str = "Panic";
    /// The task was cancelled before it started, or revoked.
    pub const CANCELLED: &str = "Cancelled";
    /// The process running the task died (signal, abort, exit) before it replied.
    pub const WORKER_LOST: &str = "WorkerLost";
    /// The task ran past its hard time limit and was killed.
    pub const TIME_LIMIT_EXCEEDED: &str = "TimeLimitExceeded";
    /// The task ran past its soft time limit and stopped when asked.
    pub const SOFT_TIME_LIMIT_EXCEEDED: &str = "SoftTimeLimitExceeded";
    /// Waiting for the result took longer than the caller allowed; the task may still finish.
    pub const TIMEOUT: &str = "Timeout";
    /// No task is registered under the requested name.
    pub const UNKNOWN_TASK: &str = "UnknownTask";
    /// Arguments or a result could not be encoded or decoded.
    pub const CODEC: &str = "CodecError";
    /// The pool was shut down before the task could run.
    pub const SHUTDOWN: &str = "Shutdown";
    /// The result was already taken out of its handle.
    pub const RESULT_TAKEN: &str = "ResultTaken";
    /// A process pool's initializer failed in the child that was to run the task.
    pub const INITIALIZER_FAILED: &str = "InitializerFailed";
    /// The task was revoked (or expired) before it finished.
    pub const REVOKED: &str = "Revoked";
    /// The broker or result store failed while sending, fetching or waiting.
    pub const BROKER: &str = "BrokerError";
    /// A task returned an error whose type has no better name.
    pub const FAILED: &str = "Failed";
    /// A message the broker held could not be decoded; it went to the dead letters.
    pub const CORRUPT_MESSAGE: &str = "CorruptMessage";
}

/// Why a task failed: a kind to match on, a message for people, and the causes underneath.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskError {
    /// What sort of failure: one of [`kinds`] or the name of the error type the task returned.
    pub kind: String,
    /// The error's own message.
    pub message: String,
    /// Messages of the underlying causes, outermost first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub causes: Vec<String>,
}

impl TaskError {
    /// An error of the given kind and message, with no causes.
    pub fn new(kind: impl Into<String>, message: impl Into<String>) -> Self {
        TaskError {
            kind: kind.into(),
            message: message.into(),
            causes: Vec::new(),
        }
    }

    /// Adds a cause under the existing ones.
    pub fn with_cause(mut self, cause: impl Into<String>) -> Self {
        self.causes.push(cause.into());
        self
    }

    /// Builds a record from any error value: its type name, message and `source()` chain.
    pub fn from_error<E: std::error::Error + 'static>(err: &E) -> Self {
        if let Some(te) = (err as &dyn std::any::Any).downcast_ref::<TaskError>() {
            return te.clone();
        }
        let mut out = TaskError::new(short_type_name::<E>(), err.to_string());
        out.causes = source_chain(err.source());
        out
    }

    /// Builds a record from a value that only displays itself (a `String`, an `anyhow::Error`).
    pub fn from_display<E: fmt::Display + ?Sized>(err: &E) -> Self {
        TaskError::new(kinds::FAILED, err.to_string())
    }

    /// Builds a record from a boxed error, keeping its chain of causes.
    pub fn from_boxed(err: &(dyn std::error::Error + 'static)) -> Self {
        if let Some(te) = err.downcast_ref::<TaskError>() {
            return te.clone();
        }
        let mut out = TaskError::new(kinds::FAILED, err.to_string());
        out.causes = source_chain(err.source());
        out
    }

    /// The error for a caught panic, with the panic's message when it was a string.
    pub fn from_panic(payload: &(dyn std::any::Any + Send)) -> Self {
        let msg = if let Some(s) = payload.downcast_ref::<&'static str>() {
            (*s).to_owned()
        } else if let Some(s) = payload.downcast_ref::<String>() {
            s.clone()
        } else {
            "panic with a non-string payload".to_owned()
        };
        TaskError::new(kinds::PANIC, msg)
    }

    /// True when the kind equals `kind`.
    pub fn is(&self, kind: &str) -> bool {
        self.kind == kind
    }
}

fn source_chain(mut next: Option<&(dyn std::error::Error + 'static)>) -> Vec<String> {
    let mut causes = Vec::new();
    while let Some(e) = next {
        causes.push(e.to_string());
        next = e.source();
    }
    causes
}

/// The last path segment of a type's name, without generic arguments:
/// `core::num::error::ParseIntError` → `ParseIntError`.
fn short_type_name<T: ?Sized>() -> String {
    let full = std::any::type_name::<T>();
    let base = full.split('<').next().unwrap_or(full);
    base.rsplit("::").next().unwrap_or(base).to_owned()
}

impl fmt::Display for TaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind, self.message)?;
        for cause in &self.causes {
            write!(f, ": {cause}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for TaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl std::error::Error for TaskError {}

/// Turns whatever a task's `Err` holds into a [`TaskError`], keeping as much as the type offers.
///
/// Generated code calls `(&&&ErrorConverter(&e)).to_task_error()`: method resolution picks the
/// most specific implementation that applies (autoref specialisation): a real
/// `std::error::Error` keeps its type name and causes, a boxed error keeps its causes, anything
/// else that displays keeps its message.
#[doc(hidden)]
pub struct ErrorConverter<'a, E>(pub &'a E);

#[doc(hidden)]
pub trait ViaStdError {
    fn to_task_error(&self) -> TaskError;
}
impl<E: std::error::Error + 'static> ViaStdError for &&ErrorConverter<'_, E> {
    fn to_task_error(&self) -> TaskError {
        TaskError::from_error(self.0)
    }
}

#[doc(hidden)]
pub trait ViaBoxedError {
    fn to_task_error(&self) -> TaskError;
}
impl ViaBoxedError for &ErrorConverter<'_, Box<dyn std::error::Error + Send + Sync>> {
    fn to_task_error(&self) -> TaskError {
        TaskError::from_boxed(self.0.as_ref())
    }
}
impl ViaBoxedError for &ErrorConverter<'_, Box<dyn std::error::Error>> {
    fn to_task_error(&self) -> TaskError {
        TaskError::from_boxed(self.0.as_ref())
    }
}

#[doc(hidden)]
pub trait ViaDisplay {
    fn to_task_error(&self) -> TaskError;
}
impl<E: fmt::Display> ViaDisplay for ErrorConverter<'_, E> {
    fn to_task_error(&self) -> TaskError {
        TaskError::from_display(self.0)
    }
}

// The tests spell the conversion the way generated code does (`&&&`), which is the point of
// autoref specialisation even where clippy sees a needless borrow.
#[cfg(test)]
#[allow(clippy::needless_borrow)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("config broken")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn std_errors_keep_type_name_and_causes() {
        let e = Outer(std::io::Error::other("disk gone"));
        let te = (&&&ErrorConverter(&e)).to_task_error();
        assert_eq!(te.kind, "Outer");
        assert_eq!(te.message, "config broken");
        assert_eq!(te.causes, vec!["disk gone".to_owned()]);
        assert_eq!(te.to_string(), "Outer: config broken: disk gone");
    }

    #[test]
    fn boxed_and_display_errors_convert() {
        let boxed: Box<dyn std::error::Error + Send + Sync> =
            Box::new(Outer(std::io::Error::other("x")));
        let te = (&&&ErrorConverter(&boxed)).to_task_error();
        assert_eq!((te.kind.as_str(), te.causes.len()), (kinds::FAILED, 1));
        let s = String::from("plain words");
        let te = (&&&ErrorConverter(&s)).to_task_error();
        assert_eq!(
            (te.kind.as_str(), te.message.as_str()),
            (kinds::FAILED, "plain words")
        );
        let inner = TaskError::new("Custom", "kept");
        assert_eq!((&&&ErrorConverter(&inner)).to_task_error(), inner);
    }

    #[test]
    fn panics_keep_their_message() {
        let p = std::panic::catch_unwind(|| panic!("boom {}", 7)).unwrap_err();
        let te = TaskError::from_panic(p.as_ref());
        assert_eq!(
            (te.kind.as_str(), te.message.as_str()),
            (kinds::PANIC, "boom 7")
        );
    }

    #[test]
    fn serde_round_trip() {
        let te = TaskError::new("K", "m").with_cause("c1").with_cause("c2");
        let back: TaskError = serde_json::from_str(&serde_json::to_string(&te).unwrap()).unwrap();
        assert_eq!(te, back);
    }
}
