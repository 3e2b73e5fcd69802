//! The control mailbox: a request per destination worker, taken by the worker's control
//! thread, and the replies gathered under the request's id. Requests and replies expire after
//! [`CONTROL_TTL`], so a mailbox of a worker that never comes back does not grow for good.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{Result, Timestamp};

/// How long a request waits in a mailbox and a reply is kept.
pub const CONTROL_TTL: Duration = Duration::from_secs(60);

/// One inspect or control command for workers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ControlRequest {
    /// Names the request; replies are gathered under it.
    pub id: String,
    /// The command: `ping`, `stats`, `revoke`, `shutdown`... (see `lovage inspect --help`).
    pub command: String,
    /// The command's arguments, as JSON (`null` for none).
    #[serde(default)]
    pub args: serde_json::Value,
    /// Who issued it (a user name, a token's name, `cli`), for the audit trail.
    #[serde(default)]
    pub issued_by: String,
    /// When it was sent.
    pub sent: Timestamp,
    /// A worker that takes it after this drops it unanswered.
    pub expires: Timestamp,
}

impl ControlRequest {
    /// A request for `command` with `args`, a fresh id, expiring [`CONTROL_TTL`] from now.
    pub fn new(command: &str, args: serde_json::Value, issued_by: &str) -> ControlRequest {
        let now = Timestamp::now();
        ControlRequest {
            id: lovage_core::TaskId::new().to_string(),
            command: command.to_owned(),
            args,
            issued_by: issued_by.to_owned(),
            sent: now,
            expires: now + CONTROL_TTL,
        }
    }
}

/// A worker's answer to a request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ControlReply {
    /// The worker that answered.
    pub worker: String,
    /// What it answered.
    pub reply: serde_json::Value,
}

/// The per-worker control mailbox.
pub trait Control: Send + Sync {
    /// Puts `request` in the mailbox of each worker in `destinations` (worker ids) in one step.
    fn send_control(&self, destinations: &[String], request: &ControlRequest) -> Result<()>;

    /// Takes every request waiting for `worker`, oldest first, dropping expired ones.
    fn take_control(&self, worker: &str) -> Result<Vec<ControlRequest>>;

    /// Records `worker`'s answer to the request `request_id`.
    fn reply(&self, request_id: &str, worker: &str, reply: &serde_json::Value) -> Result<()>;

    /// The answers to `request_id` so far, in the order they came.
    fn replies(&self, request_id: &str) -> Result<Vec<ControlReply>>;
}
