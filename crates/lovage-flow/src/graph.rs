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

use lovage_core::{kinds, Codec, TaskError, TaskId};
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
    /// On the head of a fused chain: the nodes that run after it in the same dispatch, in
    /// order (each the only reader of the one before, see [`CHAIN_TASK`]). Empty for every
    /// other node, and left out then, so a graph without fusion is written as before and an
    /// older stored graph (which has no such field) still runs, unfused.
    ///
    /// The graph is MessagePack with fields by position, so only the **last** field may be
    /// left out (a decoder fills what is missing at the end from the defaults; one missing in
    /// the middle would shift the rest): keep this one last, and add new fields before it,
    /// always written.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fused: Vec<u32>,
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
///
/// Dependents that take one element each (`getitem`) pass on a reference to their element
/// alone (the same kept value, see [`kept_element`]): their own task readers count instead,
/// when those are all tasks and no caller holds the element.
pub fn kept_readers(g: &StoredGraph, node: u32) -> u32 {
    let Some(n) = g.nodes.get(node as usize) else {
        return 0;
    };
    let is_task = |d: u32| {
        matches!(
            g.nodes.get(d as usize).map(|x| &x.op),
            Some(StoredOp::Task { .. })
        )
    };
    let mut readers = u32::from(n.held);
    for &(d, _) in &n.next {
        let Some(dep) = g.nodes.get(d as usize) else {
            return 0;
        };
        match dep.op {
            StoredOp::Task { .. } => readers += 1,
            StoredOp::Item(_) if !dep.held && dep.next.iter().all(|&(t, _)| is_task(t)) => {
                readers += dep.next.len() as u32;
            }
            _ => return 0,
        }
    }
    readers
}

/// Whether some dependent of `node` takes one element of its value (`getitem`).
pub fn elements_read(g: &StoredGraph, node: u32) -> bool {
    g.nodes.get(node as usize).is_some_and(|n| {
        n.next.iter().any(|&(d, _)| {
            matches!(
                g.nodes.get(d as usize).map(|x| &x.op),
                Some(StoredOp::Item(_))
            )
        })
    })
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

/// The built-in task that runs a fused chain of graph nodes in one dispatch: a chain of task
/// nodes in which each node's only reader is the next, and whose call options are the same
/// (queue, priority, retries, resources…), goes to the workers as one message of this task
/// rather than one message per node. Its id is the last node's, its flow the last node's
/// `Frame::Graph`, so its result is stored and its dependents released as that node's
/// would be; the values between the links stay in the worker's memory and are not stored.
///
/// A link that fails ends the chain with that link's error (so the retry policy, the same
/// for every link, sees the real error kind; a retry runs the chain again from its first
/// link). The error carries a last cause naming the link ([`chain_failure`]): once the
/// failure is final, the worker records the chain's last node as a
/// [`DEPENDENCY_FAILED`] on that link (or the error itself when the last link failed), and
/// the workflow step records the failed link and marks every node after it failed, as an
/// unfused graph would have recorded them.
pub const CHAIN_TASK: &str = "lovage.graph.chain";

/// One link of a [`CHAIN_TASK`] message.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChainLink {
    /// The registered task's name.
    pub task: String,
    /// How its arguments and result are encoded.
    pub codec: Codec,
    /// Its arguments: complete for the first link; for the others, a template with the
    /// previous link's value put at `slot`.
    pub args: Vec<Value>,
    /// Where the previous link's value goes among `args` (unused for the first link).
    pub slot: u32,
    /// The link's node index in its graph, to name it when it fails.
    pub node: u32,
    /// The link's key, for the error of the nodes after it.
    pub key: String,
}

/// The task names of a [`CHAIN_TASK`] message's links, in order (for counting what ran:
/// `inspect stats`); `None` when `args` are not a chain's. Reads only the names: the rest of
/// each link is skipped, not built.
pub fn chain_link_names(args: &[u8], codec: Codec) -> Option<Vec<String>> {
    #[derive(Deserialize)]
    struct Name {
        task: String,
    }
    let (links,): (Vec<Name>,) = codec.decode(args, "a fused chain's links").ok()?;
    Some(links.into_iter().map(|l| l.task).collect())
}

/// The start of the last cause of a chain's error, which names the link that failed.
const CHAIN_MARK: &str = "lovage.graph.chain failed at node ";

/// What [`chain_failure`] reads from a fused chain's error.
#[derive(Debug, Clone, PartialEq)]
pub struct ChainFailure {
    /// The failed link's node index.
    pub node: u32,
    /// Whether it is the chain's last link.
    pub last: bool,
    /// Its key.
    pub key: String,
    /// Its own error (the mark taken off).
    pub error: TaskError,
}

/// The failed link of a fused chain's error, or `None` for an error that is not one (a
/// chain lost with its worker, revoked, past its time limit: blamed on its last node).
pub fn chain_failure(error: &TaskError) -> Option<ChainFailure> {
    let mark = error.causes.last()?.strip_prefix(CHAIN_MARK)?;
    let (node, rest) = mark.split_once(' ')?;
    let (last, key) = rest.split_once(' ')?;
    let mut own = error.clone();
    own.causes.pop();
    Some(ChainFailure {
        node: node.parse().ok()?,
        last: last == "last",
        key: key.to_owned(),
        error: own,
    })
}

/// The error recorded for a fused chain's last node once the chain failed for good: a
/// [`DEPENDENCY_FAILED`] on the link that failed, or that link's own error when it is the
/// last; any other error as it is.
pub fn chain_recorded_error(error: &TaskError) -> TaskError {
    match chain_failure(error) {
        Some(f) if f.last => f.error,
        Some(f) => dependency_failed(&f.key, &f.error),
        None => error.clone(),
    }
}

/// The body of [`CHAIN_TASK`]: its one argument is the list of links.
fn chain_body(args: &[u8], codec: Codec) -> Result<Vec<u8>, TaskError> {
    let (links,): (Vec<ChainLink>,) = codec.decode(args, "a fused chain's links")?;
    run_chain(&links)
}

/// Runs `links` one after the other on this thread, each given the value of the one before;
/// the last link's result as its task encoded it.
pub fn run_chain(links: &[ChainLink]) -> Result<Vec<u8>, TaskError> {
    let registry = lovage_core::Registry::global();
    let mut previous: Option<Value> = None;
    for (i, link) in links.iter().enumerate() {
        let last = i + 1 == links.len();
        let fail = |mut e: TaskError| {
            let which = if last { "last" } else { "inner" };
            e.causes
                .push(format!("{CHAIN_MARK}{} {which} {}", link.node, link.key));
            e
        };
        let args = match previous.take() {
            None => Value::Array(link.args.clone()),
            Some(v) => fill_args(&link.args, &[link.slot], vec![v])
                .map_err(|reason| fail(TaskError::new(kinds::CODEC, reason)))?,
        };
        let bytes = link
            .codec
            .encode(&args, "task arguments")
            .map_err(|e| fail(e.into()))?;
        let entry = registry.get(&link.task).map_err(fail)?;
        let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            entry.call_blocking(&bytes, link.codec)
        }))
        .unwrap_or_else(|p| Err(TaskError::from_panic(&*p)))
        .map_err(fail)?;
        if last {
            return Ok(out);
        }
        previous = Some(
            link.codec
                .decode::<Value>(&out, "task result")
                .map_err(|e| fail(e.into()))?,
        );
    }
    Err(TaskError::new(kinds::FAILED, "a fused chain of no links"))
}

fn chain_options() -> lovage_core::TaskOptions {
    lovage_core::TaskOptions::default()
}

lovage_core::__private::inventory::submit! {
    lovage_core::__private::TaskEntry {
        name: CHAIN_TASK,
        run: lovage_core::__private::TaskFn::Blocking(chain_body),
        options: chain_options,
    }
}

/// The signature of the fused chain whose head is `head`, given the head's arguments: one
/// [`CHAIN_TASK`] call with the links' common options, encoded with the last link's codec
/// (the codec its result is read with).
pub fn chain_signature(
    g: &StoredGraph,
    head: u32,
    head_args: Value,
) -> Result<lovage_core::Signature, String> {
    let mut links = Vec::new();
    let mut options = None;
    let mut codec = Codec::Json;
    for (i, &n) in std::iter::once(&head)
        .chain(g.nodes.get(head as usize).map_or(&[][..], |h| &h.fused[..]))
        .enumerate()
    {
        let node = g
            .nodes
            .get(n as usize)
            .ok_or_else(|| format!("a fused chain names node {n}, which the graph has not"))?;
        let StoredOp::Task {
            task,
            codec: c,
            args,
            slots,
            options: o,
        } = &node.op
        else {
            return Err(format!("a fused chain names node {n}, which is not a task"));
        };
        if i == 0 {
            options = o.clone();
        }
        codec = *c;
        let (args, slot) = if i == 0 {
            match &head_args {
                Value::Array(a) => (a.clone(), 0),
                _ => return Err("a fused chain's first arguments are not a list".into()),
            }
        } else {
            match slots[..] {
                [slot] => (args.clone(), slot),
                _ => return Err(format!("node {n} of a fused chain has not one input")),
            }
        };
        links.push(ChainLink {
            task: task.clone(),
            codec: *c,
            args,
            slot,
            node: n,
            key: node.key.clone(),
        });
    }
    let first = links.first().ok_or("a fused chain of no links")?;
    let task = first.task.clone();
    let bytes = chain_args(&links, codec)?;
    // The options the links share, as the first link's node gives them.
    let mut sig = node_signature(&task, bytes, codec, options.as_deref())?;
    sig.task = CHAIN_TASK.to_owned();
    Ok(sig)
}

/// The arguments of a [`CHAIN_TASK`] call running `links`, encoded with `codec` (the last
/// link's, which its result is read with).
pub fn chain_args(links: &[ChainLink], codec: Codec) -> Result<Vec<u8>, String> {
    let links = serde_json::to_value(links).map_err(|e| e.to_string())?;
    codec
        .encode(&Value::Array(vec![links]), "a fused chain")
        .map_err(|e| e.to_string())
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

/// An element node's value without fetching anything, when its input is a kept value indexed
/// per element: a reference to the element's bytes alone, so its readers fetch only those.
pub(crate) fn kept_element(op: &StoredOp, inputs: &[Value]) -> Option<Value> {
    let StoredOp::Item(i) = op else {
        return None;
    };
    let [whole] = inputs else {
        return None;
    };
    let r = lovage_broker::ResultRef::from_value(whole)?;
    Some(r.element(*i)?.to_value())
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

    #[lovage_macros::task(crate = lovage_core, name = "lovage.flow.test.halve")]
    fn halve(x: i64) -> Result<i64, String> {
        if x % 2 != 0 {
            return Err(format!("{x} is odd"));
        }
        Ok(x / 2)
    }

    fn halving(codec: Codec, start: i64, links: u32) -> Vec<ChainLink> {
        (0..links)
            .map(|i| ChainLink {
                task: "lovage.flow.test.halve".into(),
                codec,
                args: vec![if i == 0 { start.into() } else { Value::Null }],
                slot: 0,
                node: 10 + i,
                key: format!("halve-{i}"),
            })
            .collect()
    }

    #[test]
    fn a_chain_runs_its_links_in_order_in_either_codec() {
        for codec in [Codec::Json, Codec::Msgpack] {
            let args = chain_args(&halving(codec, 40, 3), codec).unwrap();
            let out = chain_body(&args, codec).unwrap();
            assert_eq!(codec.decode::<i64>(&out, "result").unwrap(), 5);
        }
    }

    #[test]
    fn a_failed_link_is_named_and_recorded_as_unfused() {
        // 12 → 6 → 3 → fails at the third link (node 12) of four.
        let err = run_chain(&halving(Codec::Json, 12, 4)).unwrap_err();
        let f = chain_failure(&err).unwrap();
        assert_eq!((f.node, f.last, f.key.as_str()), (12, false, "halve-2"));
        assert_eq!(f.error.message, "3 is odd");
        assert!(f.error.causes.is_empty(), "{:?}", f.error.causes);
        let recorded = chain_recorded_error(&err);
        assert_eq!(recorded.kind, DEPENDENCY_FAILED);
        assert!(recorded.message.contains("halve-2"), "{recorded}");
        // The last link failing: its own error, unmarked.
        let err = run_chain(&halving(Codec::Json, 12, 3)).unwrap_err();
        assert!(chain_failure(&err).unwrap().last);
        assert_eq!(chain_recorded_error(&err).message, "3 is odd");
        // Any other error passes as it is.
        let plain = TaskError::new("WorkerLost", "gone");
        assert_eq!(chain_failure(&plain), None);
        assert_eq!(chain_recorded_error(&plain), plain);
    }

    #[test]
    fn nodes_round_trip_with_and_without_a_fused_chain() {
        let node = |awaited: bool, fused: Vec<u32>| StoredNode {
            id: TaskId::new(),
            key: "k".into(),
            op: StoredOp::Collect,
            inputs: 0,
            next: vec![(1, 0)],
            held: true,
            awaited,
            fused,
        };
        let g = StoredGraph {
            nodes: vec![
                node(true, Vec::new()),
                node(false, vec![2, 3]),
                node(true, vec![4]),
            ],
        };
        let back = StoredGraph::decode(&g.encode().unwrap()).unwrap();
        let seen: Vec<(bool, Vec<u32>, bool)> = back
            .nodes
            .iter()
            .map(|n| (n.awaited, n.fused.clone(), n.held))
            .collect();
        assert_eq!(
            seen,
            [
                (true, vec![], true),
                (false, vec![2, 3], true),
                (true, vec![4], true)
            ]
        );
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
            fused: Vec::new(),
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
