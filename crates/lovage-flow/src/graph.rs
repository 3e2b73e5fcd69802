//! Task graphs continued by the workers (issue 16, item 6): no central scheduler.
//!
//! A graph sent to a broker is stored once as a blob ([`StoredGraph`], MessagePack) under the
//! graph's id; its roots go out as tasks carrying `Frame::Graph { graph, node }`. The worker
//! that finishes node `i` reads the stored graph (once per process), and for each dependent
//! records `i`'s value in the dependent's join (`ResultStore::join`, one slot per input, so a
//! redelivered task never counts twice); whoever completes a join builds the dependent's
//! arguments from the joined values and sends it with `enqueue_once` under its fixed id. A
//! dependent with a single input needs no join: `enqueue_once` alone makes a repeat harmless.
//! Structural nodes (a collection of results, an element of a tuple) are evaluated right there
//! on JSON values and stored as records of their own, so no task runs for them.
//!
//! A node that fails for good marks every node downstream of it FAILURE with
//! [`DEPENDENCY_FAILED`], naming the failed node's key; the other branches go on.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use lovage_core::{Codec, TaskError, TaskId};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The error kind recorded for graph nodes that did not run because a node upstream failed.
pub const DEPENDENCY_FAILED: &str = "lovage.DependencyFailed";

/// A task graph as the workers continue it: its nodes in topological order.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredGraph {
    /// Every node the workers run or evaluate.
    pub nodes: Vec<StoredNode>,
}

/// One node of a [`StoredGraph`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredNode {
    /// The id its result is stored under (fixed when the graph is sent).
    pub id: TaskId,
    /// Its key in the graph (`name-<hash>` or the user's), for errors and `lovage graph`.
    pub key: String,
    /// What it does.
    pub op: StoredOp,
    /// How many of its inputs come from other stored nodes (the size of its join).
    pub inputs: u32,
    /// Its dependents: (node index, which of that node's inputs this node's value is).
    pub next: Vec<(u32, u32)>,
    /// Whether the caller reads its result too (an output, or a task an output reads): a
    /// value its worker keeps is then freed only once the caller's future lets it go.
    #[serde(default)]
    pub held: bool,
    /// Whether a futures client hands out a future on it (`SubmitAfter::submit_after`): its
    /// task then carries `Frame::Awaited`, so calls given that future wait for it.
    #[serde(default)]
    pub awaited: bool,
}

/// What a stored node does with its inputs (in input order).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum StoredOp {
    /// Runs the registered task `task`: its positional arguments are `args`, with input `k`
    /// put at position `slots[k]`.
    Task {
        /// The registered task's name.
        task: String,
        /// How its arguments are encoded.
        codec: Codec,
        /// The arguments known when the graph was sent (placeholders at the inputs' places).
        args: Vec<Value>,
        /// Where each input goes among `args`.
        slots: Vec<u32>,
        /// The node's own call options (`Graph::set_options`: priority, retry, resources…)
        /// as JSON, laid over the registered task's; None for most nodes. JSON because the
        /// graph itself is positional MessagePack, which options' skipped fields would shift.
        /// Left out when None (it is the last field), so a node without options is written
        /// as before and a worker of an older build still reads it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        options: Option<String>,
    },
    /// The list of its inputs (a collection of results, or a tuple).
    Collect,
    /// Element `index` of its one input (a list or a tuple).
    Item(u32),
}

impl StoredGraph {
    /// Encodes it for the result store.
    pub fn encode(&self) -> Result<Vec<u8>, String> {
        rmp_serde::to_vec(self).map_err(|e| format!("encoding a task graph: {e}"))
    }

    /// Decodes what [`StoredGraph::encode`] wrote.
    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        lovage_core::codec::from_msgpack(bytes).map_err(|e| format!("a stored task graph: {e}"))
    }

    /// Every node downstream of `node` (not `node` itself), each once.
    pub fn descendants(&self, node: u32) -> Vec<u32> {
        let mut seen = vec![false; self.nodes.len()];
        let mut stack = vec![node];
        let mut out = Vec::new();
        while let Some(n) = stack.pop() {
            let Some(stored) = self.nodes.get(n as usize) else {
                continue;
            };
            for &(d, _) in &stored.next {
                if let Some(s) = seen.get_mut(d as usize) {
                    if !*s {
                        *s = true;
                        out.push(d);
                        stack.push(d);
                    }
                }
            }
        }
        out
    }

    /// The task or operation name shown for `node` (its key up to the hash).
    pub fn name_of(&self, node: u32) -> &str {
        match self.nodes.get(node as usize).map(|n| &n.op) {
            Some(StoredOp::Task { task, .. }) => task,
            Some(StoredOp::Collect) => "lovage.graph.collect",
            Some(StoredOp::Item(_)) => "lovage.graph.getitem",
            None => "lovage.graph",
        }
    }
}

/// How many readers free a kept result of graph node `node` (see
/// [`lovage_broker::ResultRef::readers`]): its dependents, plus the caller when it holds it;
/// 0 (never freed by count) when a dependent is a collection or an element, which pass the
/// reference on to readers of their own.
pub fn kept_readers(g: &StoredGraph, node: u32) -> u32 {
    let Some(n) = g.nodes.get(node as usize) else {
        return 0;
    };
    let all_tasks = n.next.iter().all(|&(d, _)| {
        matches!(
            g.nodes.get(d as usize).map(|x| &x.op),
            Some(StoredOp::Task { .. })
        )
    });
    if !all_tasks {
        return 0;
    }
    n.next.len() as u32 + u32::from(n.held)
}

/// The error recorded for a node that did not run because `origin_key`'s node failed.
pub fn dependency_failed(origin_key: &str, error: &TaskError) -> TaskError {
    TaskError::new(
        DEPENDENCY_FAILED,
        format!("not run: graph node {origin_key} failed"),
    )
    .with_cause(error.to_string())
}

/// A task node's signature: `task` with `args`, its own `options` (JSON) over the registered
/// task's. Options that do not decode are an error naming them.
pub fn node_signature(
    task: &str,
    args: Vec<u8>,
    codec: Codec,
    options: Option<&str>,
) -> Result<lovage_core::Signature, String> {
    let mut sig = lovage_core::Signature::from_encoded(task.to_owned(), args, codec);
    if let Some(json) = options {
        sig.options = serde_json::from_str(json).map_err(|e| format!("its options: {e}"))?;
    }
    if let Ok(entry) = lovage_core::Registry::global().get(&sig.task) {
        sig.options = sig.options.merged_over(&(entry.options)());
    }
    Ok(sig)
}

/// A node's arguments once every input is in: the template with each input at its place.
pub(crate) fn fill_args(
    args: &[Value],
    slots: &[u32],
    mut inputs: Vec<Value>,
) -> Result<Value, String> {
    if inputs.len() != slots.len() {
        return Err(format!(
            "{} inputs for {} argument places",
            inputs.len(),
            slots.len()
        ));
    }
    let mut args = args.to_vec();
    for (k, &slot) in slots.iter().enumerate() {
        let place = args
            .get_mut(slot as usize)
            .ok_or_else(|| format!("input {k} goes to argument {slot}, past the last one"))?;
        *place = std::mem::take(&mut inputs[k]);
    }
    Ok(Value::Array(args))
}

/// What a structural node's value is, given its inputs.
pub(crate) fn evaluate(op: &StoredOp, mut inputs: Vec<Value>) -> Result<Value, String> {
    match op {
        StoredOp::Collect => Ok(Value::Array(inputs)),
        StoredOp::Item(i) => {
            let whole = inputs
                .pop()
                .ok_or("an element of nothing: the node has no input")?;
            match whole {
                Value::Array(mut items) if (*i as usize) < items.len() => {
                    Ok(items.swap_remove(*i as usize))
                }
                other => Err(format!(
                    "element {i} of a value that has none: {}",
                    short(&other)
                )),
            }
        }
        StoredOp::Task { .. } => Err("a task is run, not evaluated".into()),
    }
}

/// The inputs of a structural node, with kept values fetched where the node must look inside
/// them (an element of a kept tuple); a collection keeps its references as they are. A value
/// that cannot be fetched stays a reference, and [`evaluate`] says it has no such element.
pub(crate) fn fetched_for(op: &StoredOp, mut inputs: Vec<Value>) -> Vec<Value> {
    if matches!(op, StoredOp::Item(_)) {
        for v in &mut inputs {
            if let Some(r) = lovage_broker::ResultRef::from_value(v) {
                match r.fetch_value() {
                    Ok(got) => *v = got,
                    Err(e) => tracing::warn!(error = %e, "an element of a kept value"),
                }
            }
        }
    }
    inputs
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.chars().count() > 80 {
        format!("{}…", s.chars().take(80).collect::<String>())
    } else {
        s
    }
}

/// Stored graphs this process read lately: a graph is read from the store once per worker,
/// not once per node.
static GRAPHS: Mutex<Option<HashMap<TaskId, Arc<StoredGraph>>>> = Mutex::new(None);
/// Graphs kept in [`GRAPHS`]; past this the cache starts over.
const GRAPHS_KEPT: usize = 16;

/// The cached graph `id`, if this process has it.
pub(crate) fn cached(id: TaskId) -> Option<Arc<StoredGraph>> {
    GRAPHS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .as_ref()
        .and_then(|m| m.get(&id).cloned())
}

/// Keeps `graph` in this process's cache.
pub(crate) fn remember(id: TaskId, graph: Arc<StoredGraph>) {
    let mut cache = GRAPHS.lock().unwrap_or_else(|p| p.into_inner());
    let map = cache.get_or_insert_with(HashMap::new);
    if map.len() >= GRAPHS_KEPT {
        map.clear();
    }
    map.insert(id, graph);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inputs_go_to_their_places() {
        let args = vec![Value::Null, serde_json::json!(5), Value::Null];
        let filled = fill_args(&args, &[2, 0], vec![1.into(), 2.into()]).unwrap();
        assert_eq!(filled, serde_json::json!([2, 5, 1]));
        assert!(fill_args(&args, &[7], vec![1.into()]).is_err());
        assert!(fill_args(&args, &[0, 1], vec![1.into()]).is_err());
    }

    #[test]
    fn structural_nodes_evaluate_on_json() {
        let list = evaluate(&StoredOp::Collect, vec![1.into(), 2.into()]).unwrap();
        assert_eq!(list, serde_json::json!([1, 2]));
        let second = evaluate(&StoredOp::Item(1), vec![serde_json::json!([7, 8])]).unwrap();
        assert_eq!(second, serde_json::json!(8));
        assert!(evaluate(&StoredOp::Item(2), vec![serde_json::json!([7, 8])]).is_err());
    }

    #[test]
    fn descendants_are_each_listed_once() {
        let node = |next: Vec<(u32, u32)>| StoredNode {
            id: TaskId::new(),
            key: "k".into(),
            op: StoredOp::Collect,
            inputs: 1,
            next,
            held: false,
            awaited: false,
        };
        // 0 → 1, 0 → 2, 1 → 3, 2 → 3 (a diamond), 3 → 4.
        let g = StoredGraph {
            nodes: vec![
                node(vec![(1, 0), (2, 0)]),
                node(vec![(3, 0)]),
                node(vec![(3, 1)]),
                node(vec![(4, 0)]),
                node(vec![]),
            ],
        };
        let mut d = g.descendants(0);
        d.sort();
        assert_eq!(d, vec![1, 2, 3, 4]);
        assert_eq!(g.descendants(4), Vec::<u32>::new());
    }
}
