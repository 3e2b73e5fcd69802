//! Futures passed as other calls' arguments (Dask's `client.submit(add, fa, fb)`), resolved
//! by the workers: the caller may exit once the call is sent.
//!
//! A call made with `task::after(..)` is stored as a task graph of one node whose inputs are
//! the futures' tasks (the machinery of [`crate::graph`]): its join has one slot per future.
//! Every task a futures client sends carries [`Frame::Awaited`]; the worker that finishes one
//! reads the list of calls waiting for it (a shared dict per task, [`waiting_dict`]) and
//! records its value in each one's join, or marks each one failed with
//! [`DEPENDENCY_FAILED`](crate::graph::DEPENDENCY_FAILED). Whoever fills a join's last slot
//! sends the call under its fixed id with `enqueue_once`, so a redelivered input never sends
//! it twice. Once what follows is sent, the worker empties the input's waiting list
//! ([`consumed`]); a caller that filled a slot itself removes its own entry. So the lists are
//! empty again after a run.
//!
//! The race between a call being registered and its input finishing is closed by order: the
//! caller adds its entry to the input's list *then* reads the input's record (and fills the
//! slot itself when the input is done); the worker stores the input's record *then* reads the
//! list. At least one of them sees the other; both filling the same slot is harmless.
//!
//! ```
//! # #[lovage_macros::task(crate = lovage_core)] fn square(x: i64) -> i64 { x * x }
//! # #[lovage_macros::task(crate = lovage_core)] fn add(a: i64, b: i64) -> i64 { a + b }
//! use lovage_flow::SubmitAfter;
//! let app = lovage_broker::App::connect("memory://after-doc").unwrap();
//! let client = app.client().unwrap();
//! let a = client.submit(square::s(3)).unwrap();
//! let b = client.submit_after(add::after(&a, 1)).unwrap();
//! # // Nothing consumes the queue here: a worker would run `a`, then release `b` (10).
//! # client.cancel(&b).unwrap();
//! # client.cancel(&a).unwrap();
//! ```
//!
//! A future of another type where a parameter goes does not build:
//!
//! ```compile_fail,E0277
//! # #[lovage_macros::task(crate = lovage_core)] fn shout(s: String) -> String { s }
//! # #[lovage_macros::task(crate = lovage_core)] fn add(a: i64, b: i64) -> i64 { a + b }
//! let app = lovage_broker::App::connect("memory://after-doc-bad").unwrap();
//! let client = app.client().unwrap();
//! let loud = client.submit(shout::s("hi".into())).unwrap();
//! let _ = add::after(&loud, 1);
//! ```

use lovage_broker::{Backend, BrokerError, Envelope, ResultRecord};
use lovage_broker::{Client, TaskFuture};
use lovage_core::canvas::Frame;
use lovage_core::{After, AfterArg, TaskError, TaskId, TaskState};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::graph::{self, StoredGraph, StoredNode, StoredOp};
use crate::{Advance, Context, FlowError};

pub use lovage_broker::futures::waiting_dict;

/// Empties the waiting lists whose calls were served (see [`crate::Planned`]), in one step
/// where the backend allows.
pub fn consumed(backend: &Backend, dicts: &[String]) -> Result<(), BrokerError> {
    if dicts.is_empty() {
        return Ok(());
    }
    backend.shared().dict_clear_many(dicts)
}

/// A waiting call's entry: the stored graph's id, the node, which of its inputs `id` is.
pub(crate) fn encode_entry(graph: TaskId, node: u32, index: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(24);
    out.extend_from_slice(graph.as_uuid().as_bytes());
    out.extend_from_slice(&node.to_le_bytes());
    out.extend_from_slice(&index.to_le_bytes());
    out
}

/// What [`encode_entry`] wrote; None for anything else.
pub(crate) fn decode_entry(bytes: &[u8]) -> Option<(TaskId, u32, u32)> {
    if bytes.len() != 24 {
        return None;
    }
    let uuid = uuid::Uuid::from_slice(&bytes[..16]).ok()?;
    let node = u32::from_le_bytes(bytes[16..20].try_into().ok()?);
    let index = u32::from_le_bytes(bytes[20..24].try_into().ok()?);
    Some((TaskId::from_uuid(uuid), node, index))
}

/// The key a client task goes by in a `DependencyFailed` error: its name and id.
pub(crate) fn task_key(task: &str, id: TaskId) -> String {
    format!("{task}-{id}")
}

/// Sending calls whose arguments are futures (`task::after(&future, value, ..)`).
pub trait SubmitAfter {
    /// Sends `call`: it runs once every future it takes has finished, with their values, and
    /// a worker releases it (the caller may exit meanwhile; `fire_and_forget` works). If an
    /// input fails (or is revoked), the call does not run and its future fails with kind
    /// `lovage.DependencyFailed` naming the input (`task-id`), the input's error as its
    /// cause. The futures given must be of tasks sent by a futures client (`submit`, `map`,
    /// `submit_keyed`, `submit_pure`, `submit_after`).
    fn submit_after<R>(&self, call: After<R>) -> Result<TaskFuture<R>, FlowError>
    where
        R: DeserializeOwned + Send + 'static;
}

impl SubmitAfter for Client {
    fn submit_after<R>(&self, call: After<R>) -> Result<TaskFuture<R>, FlowError>
    where
        R: DeserializeOwned + Send + 'static,
    {
        call.check().map_err(FlowError::Invalid)?;
        // The futures' holds on their results live until the call is registered below.
        let (call_args, _keeps): (Vec<AfterArg>, Vec<_>) =
            call.args.into_iter().map(AfterArg::unkept).unzip();
        // The call is the last node; a list of futures is a collection node before it.
        let lists = call_args
            .iter()
            .filter(|a| matches!(a, AfterArg::Futures(ids) if !ids.is_empty()))
            .count();
        let me = lists as u32;
        let id = TaskId::new();
        let mut nodes = Vec::with_capacity(lists + 1);
        // (input task, node, which of the node's inputs it is)
        let mut waits: Vec<(TaskId, u32, u32)> = Vec::new();
        let (mut args, mut slots) = (Vec::new(), Vec::new());
        for a in call_args {
            match a {
                AfterArg::Value(v) => args.push(v),
                AfterArg::Futures(ids) if ids.is_empty() => args.push(Value::Array(Vec::new())),
                AfterArg::Future(input) => {
                    waits.push((input, me, slots.len() as u32));
                    slots.push(args.len() as u32);
                    args.push(Value::Null);
                }
                AfterArg::Futures(ids) => {
                    let c = nodes.len() as u32;
                    let collect = TaskId::new();
                    nodes.push(StoredNode {
                        id: collect,
                        key: task_key("lovage.graph.collect", collect),
                        op: StoredOp::Collect,
                        inputs: ids.len() as u32,
                        next: vec![(me, slots.len() as u32)],
                        held: false,
                        awaited: false,
                        fused: Vec::new(),
                    });
                    waits.extend(ids.into_iter().enumerate().map(|(j, t)| (t, c, j as u32)));
                    slots.push(args.len() as u32);
                    args.push(Value::Null);
                }
                AfterArg::Invalid(reason) => return Err(FlowError::Invalid(reason)),
                // `unkept` took every keep off above.
                AfterArg::Kept(..) => {
                    return Err(FlowError::Invalid("an argument kept twice".into()))
                }
            }
        }
        // Per-call options travel in the stored node, as a graph node's do.
        let options = if call.options == lovage_core::TaskOptions::default() {
            None
        } else {
            Some(
                serde_json::to_string(&call.options)
                    .map_err(|e| FlowError::Invalid(e.to_string()))?,
            )
        };
        let app = self.app();
        let backend = app.backend();
        if slots.is_empty() {
            let bytes = call
                .codec
                .encode(&Value::Array(args), "task arguments")
                .map_err(|e| FlowError::Invalid(e.to_string()))?;
            let sig = graph::node_signature(call.task, bytes, call.codec, options.as_deref())
                .map_err(FlowError::Invalid)?;
            let mut env = Envelope::from_signature(sig);
            env.id = id;
            env.flow = vec![Frame::Awaited];
            let future = self.sent_future(id);
            backend.broker().enqueue(std::slice::from_ref(&env))?;
            return Ok(future);
        }
        let inputs = slots.len() as u32;
        nodes.push(StoredNode {
            id,
            key: task_key(call.task, id),
            op: StoredOp::Task {
                task: call.task.to_owned(),
                codec: call.codec,
                args,
                slots,
                options,
            },
            inputs,
            next: Vec::new(),
            held: false,
            awaited: true,
            fused: Vec::new(),
        });
        let stored = StoredGraph { nodes };
        let graph = TaskId::new();
        let bytes = stored.encode().map_err(FlowError::Invalid)?;
        backend.results().put_blob(graph, &bytes)?;
        // Watched before anything can finish it.
        let future = self.sent_future(id);
        for &(input, node, index) in &waits {
            backend.shared().dict_set(
                &waiting_dict(input),
                &[(encode_entry(graph, node, index), Vec::new())],
            )?;
        }
        let inputs: Vec<TaskId> = waits.iter().map(|w| w.0).collect();
        // An input this client did not send (`app.send`, a graph's node, another client's
        // task) may carry no marker: no worker would serve its list, so this client does once
        // its record is final (a marked one is served twice, harmlessly).
        let mut relayed = std::collections::HashSet::new();
        for &input in &inputs {
            if !self.holds(input) && relayed.insert(input) {
                self.on_final(input, relay);
            }
        }
        // Inputs that finished before their entries were there: their slots are filled here.
        let records = backend.results().get_many(&inputs)?;
        let ctx = Context {
            backend,
            result_ttl: None,
            worker: None,
            sent_events: false,
            steal_after: None,
        };
        let mut run = Advance::new(&ctx);
        // The entries of the inputs found finished: this call serves them, not their workers.
        let mut served = Vec::new();
        for (&(input, node, index), rec) in waits.iter().zip(records) {
            let Some(rec) = rec.filter(|r| r.state.is_final()) else {
                continue;
            };
            served.push((input, encode_entry(graph, node, index)));
            if rec.state == TaskState::Success {
                let value = record_value(&rec)?;
                run.graph_input(graph, node, index, &value)?;
            } else {
                let error = rec.error.clone().unwrap_or_else(|| {
                    TaskError::new(lovage_core::kinds::FAILED, format!("{:?}", rec.state))
                });
                // An input that did not run for a failure upstream passes that failure on, so
                // the error names the task that failed (as a graph's does).
                let error = if error.kind == graph::DEPENDENCY_FAILED {
                    error
                } else {
                    graph::dependency_failed(&task_key(&rec.task, rec.id), &error)
                };
                run.failed(id, call.task, error);
                break;
            }
        }
        run.settle_joins()?;
        run.store()?;
        if !run.out.is_empty() {
            backend.broker().enqueue_once(&run.out)?;
        }
        for (input, entry) in served {
            backend.shared().dict_remove(&waiting_dict(input), &entry)?;
        }
        consumed(backend, &run.consumed)?;
        Ok(future)
    }
}

/// A successful record's value as JSON.
fn record_value(rec: &ResultRecord) -> Result<Value, FlowError> {
    match &rec.value {
        Some(b) => rec
            .codec
            .decode::<Value>(b, "task result")
            .map_err(|e| FlowError::Invalid(e.to_string())),
        None => Ok(Value::Null),
    }
}

/// Serves the calls waiting for a task sent without the marker, from its final record, on
/// the client's watcher thread: what a worker does for a marked task. A failure is logged
/// (the calls then wait for the stored graph's time to live).
fn relay(rec: &ResultRecord, backend: &Backend) {
    if let Err(e) = serve(rec, backend) {
        tracing::warn!(task_id = %rec.id, error = %e, "could not release the calls waiting for a task");
    }
}

fn serve(rec: &ResultRecord, backend: &Backend) -> Result<(), FlowError> {
    let ctx = Context {
        backend,
        result_ttl: None,
        worker: None,
        sent_events: false,
        steal_after: None,
    };
    let mut run = Advance::new(&ctx);
    if rec.state == TaskState::Success {
        run.awaited_done(rec.id, &record_value(rec)?)?;
    } else {
        let error = rec.error.clone().unwrap_or_else(|| {
            TaskError::new(lovage_core::kinds::FAILED, format!("{:?}", rec.state))
        });
        run.awaited_failed
            .push((rec.id, task_key(&rec.task, rec.id), error));
    }
    run.settle_joins()?;
    run.store()?;
    if !run.out.is_empty() {
        backend.broker().enqueue_once(&run.out)?;
    }
    consumed(backend, &run.consumed)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_read_back() {
        let g = TaskId::new();
        assert_eq!(decode_entry(&encode_entry(g, 3, 7)), Some((g, 3, 7)));
        assert_eq!(decode_entry(b"short"), None);
    }
}
