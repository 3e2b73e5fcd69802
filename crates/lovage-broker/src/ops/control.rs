//! The control mailbox: a request per destination worker, taken by the worker's control
//! thread, and the replies gathered under the request's id. Requests and replies expire after
//! [`CONTROL_TTL`], so a mailbox of a worker that never comes back does not grow for good.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{Result, Timestamp};

/// The inspect commands a worker answers: they read, and change nothing.
pub const INSPECT_COMMANDS: &[&str] = &[
    "ping",
    "stats",
    "active",
    "reserved",
    "scheduled",
    "registered",
    "revoked",
    "conf",
];

/// The control commands a worker carries out (or refuses with a reason).
pub const CONTROL_COMMANDS: &[&str] = &[
    "revoke",
    "rate_limit",
    "time_limit",
    "pool_grow",
    "pool_shrink",
    "autoscale",
    "add_consumer",
    "cancel_consumer",
    "enable_events",
    "disable_events",
    "shutdown",
];

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

/// Workers heard from within this long are the default destinations of a broadcast, and those
/// of them that do not answer are listed as missing.
pub const LIVE_WITHIN: Duration = Duration::from_secs(30);

/// What a broadcast gathered: each answer under its worker's id, and the destinations that
/// did not answer within the timeout.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Gathered {
    /// Answers, by worker id. A worker answers `{"ok": ...}` or `{"error": "..."}`.
    pub replies: std::collections::BTreeMap<String, serde_json::Value>,
    /// Destinations (the live workers, when none were named) that did not answer in time.
    pub missing: Vec<String>,
}

/// Sends `request` to `destinations` (every worker heard from within [`LIVE_WITHIN`] when
/// empty) and gathers replies until each has answered or `timeout` passes. With `audit`, a
/// `control-issued` event per destination is published first (the control commands' audit
/// trail; inspect commands change nothing and are not recorded).
///
/// The replies are polled every 20 ms: a request is a rare, human-paced thing, and polling
/// keeps the mailbox the same plain table or list on every backend.
pub fn broadcast(
    backend: &crate::Backend,
    destinations: &[String],
    request: &ControlRequest,
    timeout: Duration,
    audit: bool,
) -> Result<Gathered> {
    let destinations: Vec<String> = if destinations.is_empty() {
        backend
            .presence()
            .workers(LIVE_WITHIN)?
            .into_iter()
            .map(|w| w.id)
            .collect()
    } else {
        destinations.to_vec()
    };
    if destinations.is_empty() {
        return Ok(Gathered::default());
    }
    if audit {
        let events: Vec<super::Event> = destinations
            .iter()
            .map(|w| {
                let mut ev = super::Event::new(super::EventKind::ControlIssued);
                ev.name = Some(request.command.clone());
                ev.worker = Some(w.clone());
                ev.error = Some(request.issued_by.clone());
                ev
            })
            .collect();
        backend.events().publish(&events)?;
    }
    backend.control().send_control(&destinations, request)?;
    let deadline = std::time::Instant::now() + timeout;
    let mut replies = std::collections::BTreeMap::new();
    loop {
        for r in backend.control().replies(&request.id)? {
            replies.insert(r.worker, r.reply);
        }
        let all_in = destinations.iter().all(|d| replies.contains_key(d));
        let now = std::time::Instant::now();
        if all_in || now >= deadline {
            break;
        }
        std::thread::sleep((deadline - now).min(Duration::from_millis(20)));
    }
    let missing = destinations
        .into_iter()
        .filter(|d| !replies.contains_key(d))
        .collect();
    Ok(Gathered { replies, missing })
}
