//! `Client::scatter`: a value put in once, kept by a worker (the data plane), and passed to
//! later calls by reference (Dask's `client.scatter`).
//!
//! The value travels once, as the argument of the built-in task [`SCATTER_TASK`], whose
//! result is that same value: the worker that runs it keeps it when it is at least the
//! data plane's threshold, and the result store holds its reference. A call then takes
//! [`Scattered::arg`] where the value goes; the worker that runs the call fetches the value
//! from its keeper. The task's body cuts the value out of its argument list without decoding
//! it (JSON `[v]`, MessagePack a one-element array), so it is encoded once, by the caller.

use std::time::Duration;

use lovage_core::{kinds, Codec, Signature, TaskError, TaskId};
use serde::Serialize;
use serde_json::Value;

use super::Client;
use crate::{BrokerError, Result};

/// The built-in task that holds a scattered value.
pub const SCATTER_TASK: &str = "lovage.scatter";

/// The body of [`SCATTER_TASK`]: its one argument, as encoded.
fn scatter_body(args: &[u8], codec: Codec) -> std::result::Result<Vec<u8>, TaskError> {
    let cut = match codec {
        Codec::Json => args
            .strip_prefix(b"[")
            .and_then(|a| a.strip_suffix(b"]"))
            .filter(|v| !v.is_empty()),
        // 0x91: a fixarray of one element.
        Codec::Msgpack => args.strip_prefix(&[0x91]).filter(|v| !v.is_empty()),
    };
    match cut {
        Some(v) => Ok(v.to_vec()),
        None => Err(TaskError::new(
            kinds::FAILED,
            "lovage.scatter takes exactly one argument",
        )),
    }
}

fn scatter_options() -> lovage_core::TaskOptions {
    lovage_core::TaskOptions::default()
}

lovage_core::__private::inventory::submit! {
    lovage_core::__private::TaskEntry {
        name: SCATTER_TASK,
        run: lovage_core::__private::TaskFn::Blocking(scatter_body),
        options: scatter_options,
    }
}

/// A value put in with [`Client::scatter`]: the id of the task that holds it.
#[derive(Debug, Clone)]
pub struct Scattered {
    id: TaskId,
    client: Client,
}

/// What [`Scattered::broadcast`] did.
#[derive(Debug, Clone)]
pub struct Broadcast {
    /// What to pass where the value goes, as [`Scattered::arg`] gives, its reference marked
    /// as held everywhere (so no task is queued for its first worker on its account).
    pub arg: Value,
    /// The workers that now hold a copy (besides the one that kept it first).
    pub copies: Vec<String>,
    /// Live workers that hold none: those that refused (no data plane, the fetch failed) with
    /// their reason, and those that did not answer in time. Their tasks fetch the value from
    /// its first worker, as without a broadcast.
    pub without: Vec<(String, String)>,
}

impl Scattered {
    /// The holding task's id (its record holds the value's reference).
    pub fn id(&self) -> TaskId {
        self.id
    }

    /// Copies the value into the store of every other live worker (heard from within
    /// [`LIVE_WITHIN`](crate::ops::LIVE_WITHIN)), so tasks on any of them read it in place:
    /// Dask's `client.scatter(x, broadcast=True)`. Waits up to `timeout` for a worker to take
    /// the value in, then up to `timeout` for the copies. Each worker fetches the value from
    /// its first worker once (told through its control mailbox). A value small enough to be
    /// stored inline needs no copies. Copies go when their workers stop (they are not
    /// counted); a worker that starts later has none.
    pub fn broadcast(&self, timeout: Duration) -> Result<Broadcast> {
        let arg = self.arg(timeout)?;
        let Some(mut r) = crate::ResultRef::from_value(&arg) else {
            return Ok(Broadcast {
                arg,
                copies: Vec::new(),
                without: Vec::new(),
            });
        };
        let backend = self.client.app().backend().clone();
        let others: Vec<String> = backend
            .presence()
            .workers(crate::ops::LIVE_WITHIN)?
            .into_iter()
            .map(|w| w.id)
            .filter(|w| *w != r.worker)
            .collect();
        let mut copies = Vec::new();
        let mut without = Vec::new();
        if !others.is_empty() {
            let request = crate::ops::ControlRequest::new(
                crate::dataref::REPLICATE_COMMAND,
                serde_json::json!({ "ref": r.to_value() }),
                "client",
            );
            let gathered = crate::ops::broadcast(&backend, &others, &request, timeout, false)?;
            for (worker, reply) in gathered.replies {
                match reply.get("error").and_then(Value::as_str) {
                    None => copies.push(worker),
                    Some(reason) => without.push((worker, reason.to_owned())),
                }
            }
            without.extend(
                gathered
                    .missing
                    .into_iter()
                    .map(|w| (w, format!("no answer within {timeout:?}"))),
            );
        }
        r.everywhere = true;
        Ok(Broadcast {
            arg: r.to_value(),
            copies,
            without,
        })
    }

    /// What to pass where the value goes in a later call's arguments: the value's reference
    /// (a worker kept it), or the value itself when it was small enough to be stored inline.
    /// Waits up to `timeout` for a worker to take it in.
    pub fn arg(&self, timeout: Duration) -> Result<Value> {
        let rec = self
            .client
            .app()
            .backend()
            .results()
            .wait(self.id, timeout)?
            .filter(|r| r.state.is_final())
            .ok_or_else(|| scatter_error(format!("not held by a worker within {timeout:?}")))?;
        if let Some(r) = rec.result_ref() {
            return r
                .map(|r| r.to_value())
                .map_err(|e| scatter_error(e.to_string()));
        }
        rec.outcome::<Value>()
            .unwrap_or_else(|| Err(TaskError::new(kinds::BROKER, "not finished")))
            .map_err(|e| scatter_error(e.to_string()))
    }
}

fn scatter_error(reason: String) -> BrokerError {
    BrokerError::Backend {
        backend: "client",
        location: SCATTER_TASK.to_owned(),
        op: "scatter a value",
        source: reason.into(),
    }
}

impl Client {
    /// Puts `value` in once (Dask's `client.scatter`): a worker keeps it, and
    /// [`Scattered::arg`] stands for it in later calls' arguments, which the workers running
    /// them fetch from that worker. `queue`: where the holding task goes (`None`: the
    /// default queue), so the value lands with the workers of that queue.
    pub fn scatter<T: Serialize>(&self, value: &T, queue: Option<&str>) -> Result<Scattered> {
        let mut sig = Signature::new(SCATTER_TASK, &(value,), Codec::Json)?;
        sig.options.queue = queue.map(str::to_owned);
        let env = self.app().envelope(sig);
        self.app()
            .backend()
            .broker()
            .enqueue(std::slice::from_ref(&env))?;
        Ok(Scattered {
            id: env.id,
            client: self.clone(),
        })
    }
}
