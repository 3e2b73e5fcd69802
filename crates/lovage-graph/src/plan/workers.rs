//! A graph run by a broker's workers (issue 16, item 6): this process sends the graph once and
//! the workers release each node's dependents as its inputs finish (`lovage_flow::graph`).
//!
//! The plan's nodes fall in three sets. *Before*: nodes that need no task (constants,
//! persisted values, closures over them) run here first; their values are written into the
//! arguments of the tasks that read them. *Workers*: every task, and every collection or tuple
//! element between tasks, goes into the stored graph with a fixed result id. *After*: what the
//! outputs need beyond the tasks (a collection of results, a closure over them, a task marked
//! with `Graph::finish_on_caller` that no task there reads) runs here from the results of the
//! tasks it reads, once they are in. A graph whose workers' part holds
//! something they cannot evaluate (a map, a constant of a type that is not serialised here)
//! is run from this process instead (`Ok(false)`).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use lovage_broker::Client;
use lovage_core::canvas::Frame;
use lovage_core::{kinds, TaskError, TaskId, TaskState};
use lovage_flow::graph::{StoredGraph, StoredNode, StoredOp, DEPENDENCY_FAILED};

use super::{Failure, Plan};
use crate::graph::{Inputs, NodeKind, Stored};
use crate::GraphError;

/// How many root tasks go to the broker in one write.
const SEND_BATCH: usize = 1000;

/// The graph as stored and sent: ids by plan node (nil for nodes not on the workers).
pub(crate) struct Sent {
    /// The stored graph's key.
    pub(crate) graph: TaskId,
    /// Each plan node's result id on the workers (nil for nodes run here).
    pub(crate) ids: Vec<TaskId>,
}

fn broker_error(what: &str, e: impl std::fmt::Display) -> GraphError {
    GraphError::Failed {
        key: "graph".into(),
        error: TaskError::new(kinds::BROKER, format!("{what}: {e}")),
    }
}

impl Plan<'_> {
    /// Runs the plan on `client`'s broker with the workers resolving dependencies; `Ok(false)`
    /// when the graph cannot be stored for them (nothing was sent then).
    pub(crate) fn on_workers(&self, client: &Client) -> Result<bool, GraphError> {
        let Some(sent) = self.send_to_workers(client, false)? else {
            return Ok(false);
        };
        self.collect_after(client, &sent)?;
        Ok(true)
    }

    /// Which plan nodes depend on a task (tasks included).
    fn tainted(&self) -> Vec<bool> {
        let n = self.g.len();
        let mut tainted = vec![false; n];
        // Node indices are topological: a node's dependencies were added before it.
        for x in 0..n {
            if !self.needed[x] {
                continue;
            }
            tainted[x] = self.g.ops[x].kind() == NodeKind::Task
                || self
                    .g
                    .deps_of(x as u32)
                    .iter()
                    .any(|&d| tainted[d as usize]);
        }
        tainted
    }

    /// Stores the graph for the workers and sends its roots. With `detach`, the outputs
    /// themselves go to the workers too (so their records exist without this process).
    /// `None`: the graph cannot run there (nothing was sent).
    pub(crate) fn send_to_workers(
        &self,
        client: &Client,
        detach: bool,
    ) -> Result<Option<Sent>, GraphError> {
        let n = self.g.len();
        let tainted = self.tainted();
        // The workers' nodes: every task, and what tasks (or, detached, the outputs) read
        // from other tasks.
        let mut on_workers = vec![false; n];
        // A task that finishes on the caller goes there only if a task there reads it.
        let mut stack: Vec<u32> = (0..n as u32)
            .filter(|&x| {
                tainted[x as usize]
                    && self.g.ops[x as usize].kind() == NodeKind::Task
                    && (detach || !self.g.on_caller.contains(&x))
            })
            .collect();
        if detach {
            for &w in &self.wanted {
                if !tainted[w as usize] {
                    return Err(GraphError::Internal(format!(
                        "output {} needs no task: nothing to send to the workers",
                        self.g.key(w)
                    )));
                }
                stack.push(w);
            }
        }
        while let Some(x) = stack.pop() {
            if std::mem::replace(&mut on_workers[x as usize], true) {
                continue;
            }
            match self.g.ops[x as usize].kind() {
                NodeKind::Local => return Err(GraphError::NotRegistered { key: self.g.key(x) }),
                NodeKind::Structural => {
                    // A structural node there reads only values there (JSON), never one of
                    // this process's typed values.
                    if self.g.deps_of(x).iter().any(|&d| !tainted[d as usize]) {
                        return Ok(None);
                    }
                }
                NodeKind::Task => {}
            }
            stack.extend(
                self.g
                    .deps_of(x)
                    .iter()
                    .filter(|&&d| tainted[d as usize] && !on_workers[d as usize]),
            );
        }
        // Before: what needs no task runs here now.
        for x in 0..n as u32 {
            if self.needed[x as usize] && !tainted[x as usize] {
                self.run_node(x);
                if self.failure(x).is_some() {
                    // Failures before any task are the caller's scheduler's business.
                    return Ok(None);
                }
            }
        }
        // What the caller reads: the outputs, and the tasks they read through nodes that
        // run here (as `collect_after` finds them).
        let mut held = vec![false; n];
        let mut stack: Vec<u32> = self.wanted.clone();
        while let Some(x) = stack.pop() {
            if std::mem::replace(&mut held[x as usize], true) {
                continue;
            }
            if self.g.ops[x as usize].kind() != NodeKind::Task || !on_workers[x as usize] {
                stack.extend(self.g.deps_of(x).iter().copied());
            }
        }
        // The stored graph, in plan order (topological).
        let mut index = vec![u32::MAX; n];
        let mut ids = vec![TaskId::nil(); n];
        let mut nodes: Vec<StoredNode> = Vec::new();
        for x in 0..n {
            if !on_workers[x] {
                continue;
            }
            let deps = self.g.deps_of(x as u32);
            let inputs = Inputs { plan: self, deps };
            let op = match self.g.ops[x].stored(&inputs) {
                Err(error) => {
                    return Err(GraphError::Failed {
                        key: self.g.key(x as u32),
                        error,
                    })
                }
                Ok(Stored::Opaque) => return Ok(None),
                Ok(Stored::Collect) => StoredOp::Collect,
                Ok(Stored::Item(i)) => StoredOp::Item(i),
                Ok(Stored::Task {
                    task,
                    codec,
                    args,
                    slots,
                }) => StoredOp::Task {
                    task: task.to_owned(),
                    codec,
                    args,
                    slots,
                    options: match self.g.options.get(&(x as u32)) {
                        None => None,
                        Some(o) => Some(serde_json::to_string(o).map_err(|e| {
                            GraphError::InvalidOptions {
                                key: self.g.key(x as u32),
                                reason: e.to_string(),
                            }
                        })?),
                    },
                },
            };
            let me = nodes.len() as u32;
            let mut inputs = 0u32;
            for &d in deps.iter().filter(|&&d| on_workers[d as usize]) {
                nodes[index[d as usize] as usize].next.push((me, inputs));
                inputs += 1;
            }
            index[x] = me;
            ids[x] = TaskId::new();
            nodes.push(StoredNode {
                id: ids[x],
                key: self.g.key(x as u32),
                op,
                inputs,
                next: Vec::new(),
                held: held[x],
                fused: Vec::new(),
                awaited: false,
            });
        }
        let messages = fuse(&mut nodes);
        if nodes.is_empty() {
            // No task in the plan: nothing to store or send.
            return Ok(Some(Sent {
                graph: TaskId::nil(),
                ids,
            }));
        }
        let stored = StoredGraph { nodes };
        let graph = TaskId::new();
        let bytes = stored
            .encode()
            .map_err(|e| broker_error("storing the graph", e))?;
        let app = client.app();
        app.backend()
            .results()
            .put_blob(graph, &bytes)
            .map_err(|e| broker_error("storing the graph", e))?;
        // Its roots: tasks whose arguments are all known.
        let mut batch = Vec::with_capacity(SEND_BATCH);
        for (s, node) in stored.nodes.iter().enumerate() {
            let StoredOp::Task {
                task,
                codec,
                args,
                slots,
                options,
            } = &node.op
            else {
                continue;
            };
            if node.inputs > 0 {
                continue;
            }
            if let Some(&tail) = node.fused.last() {
                // A fused chain: one message, under its last node's id.
                let sig = lovage_flow::graph::chain_signature(
                    &stored,
                    s as u32,
                    serde_json::Value::Array(args.clone()),
                )
                .map_err(|reason| GraphError::InvalidOptions {
                    key: node.key.clone(),
                    reason,
                })?;
                let mut env = app.envelope(sig);
                env.id = stored.nodes[tail as usize].id;
                env.flow = vec![Frame::Graph { graph, node: tail }];
                batch.push(env);
                if batch.len() == SEND_BATCH {
                    send_roots(app, &std::mem::take(&mut batch))?;
                }
                continue;
            }
            let bytes = codec
                .encode(&serde_json::Value::Array(args.clone()), "task arguments")
                .map_err(|e| GraphError::Failed {
                    key: node.key.clone(),
                    error: e.into(),
                })?;
            debug_assert!(slots.is_empty());
            let sig = lovage_flow::graph::node_signature(task, bytes, *codec, options.as_deref())
                .map_err(|reason| GraphError::InvalidOptions {
                key: node.key.clone(),
                reason,
            })?;
            let mut env = app.envelope(sig);
            env.id = node.id;
            env.flow = vec![Frame::Graph {
                graph,
                node: s as u32,
            }];
            batch.push(env);
            if batch.len() == SEND_BATCH {
                send_roots(app, &std::mem::take(&mut batch))?;
            }
        }
        if !batch.is_empty() {
            send_roots(app, &batch)?;
        }
        self.dispatches.fetch_add(messages, Ordering::Relaxed);
        self.ran.fetch_add(stored.nodes.len(), Ordering::Relaxed);
        Ok(Some(Sent { graph, ids }))
    }

    /// After: waits for the tasks the outputs read and runs what lies between them here.
    fn collect_after(&self, client: &Client, sent: &Sent) -> Result<(), GraphError> {
        let n = self.g.len();
        let on_workers = |x: u32| sent.ids[x as usize] != TaskId::nil();
        let mut here = vec![false; n];
        let mut frontier = Vec::new();
        let mut stack: Vec<u32> = self.wanted.clone();
        while let Some(x) = stack.pop() {
            if std::mem::replace(&mut here[x as usize], true) {
                continue;
            }
            if self.g.ops[x as usize].kind() == NodeKind::Task && on_workers(x) {
                frontier.push(x);
                continue;
            }
            if self.value(x).is_some() || self.failure(x).is_some() {
                continue; // ran before the tasks
            }
            stack.extend(self.g.deps_of(x).iter().copied());
        }
        let futures: Vec<_> = frontier
            .iter()
            .map(|&x| (x, client.future_raw(sent.ids[x as usize])))
            .collect();
        let mut any_failed = false;
        for (x, future) in futures {
            let op = &self.g.ops[x as usize];
            let outcome = match future.result() {
                Ok(bytes) => op
                    .decode(&bytes)
                    .map_err(|error| Arc::new(Failure { origin: x, error })),
                Err(e) if e.kind == DEPENDENCY_FAILED => {
                    Err(Arc::new(self.origin(client, sent, x, e)))
                }
                Err(error) => Err(Arc::new(Failure { origin: x, error })),
            };
            any_failed |= outcome.is_err();
            // Counted when sent; `complete` counts it again.
            self.ran.fetch_sub(1, Ordering::Relaxed);
            if outcome.is_err() {
                self.failed.fetch_sub(1, Ordering::Relaxed);
            }
            self.complete(x, outcome);
        }
        let mut rerun = 0;
        for x in 0..n as u32 {
            // Collections on the workers that an output reads are evaluated here again, on
            // typed values (the workers' copy is JSON); they were counted when sent. Tasks
            // that finish on the caller run here (in topological order, like the rest).
            if here[x as usize]
                && (self.g.ops[x as usize].kind() != NodeKind::Task || !on_workers(x))
                && self.value(x).is_none()
                && self.failure(x).is_none()
            {
                self.run_node(x);
                if on_workers(x) {
                    rerun += 1;
                    if self.failure(x).is_some() {
                        self.failed.fetch_sub(1, Ordering::Relaxed);
                    }
                }
            }
        }
        self.ran.fetch_sub(rerun, Ordering::Relaxed);
        if any_failed {
            // A failure anywhere on the workers reaches an output's task: only then are the
            // workers' records read, to count the nodes that failed or did not run.
            let ids: Vec<TaskId> = sent
                .ids
                .iter()
                .copied()
                .filter(|&id| id != TaskId::nil())
                .collect();
            let results = client.app().backend().results();
            for chunk in ids.chunks(1000) {
                let records = results
                    .get_many(chunk)
                    .map_err(|e| broker_error("reading the graph's results", e))?;
                let failed = records
                    .iter()
                    .flatten()
                    .filter(|r| r.state == TaskState::Failure)
                    .count();
                self.failed.fetch_add(failed, Ordering::Relaxed);
            }
        }
        Ok(())
    }

    /// The node whose failure kept `x` from running: its first failed dependency in argument
    /// order, followed upstream (as a local run reports it). Each dependency on the way is
    /// waited for, so the answer does not depend on which failure reached the workers first.
    fn origin(&self, client: &Client, sent: &Sent, x: u32, error: TaskError) -> Failure {
        let mut at = x;
        let mut last = error;
        'up: loop {
            for &d in self.g.deps_of(at) {
                let id = sent.ids[d as usize];
                if id == TaskId::nil() {
                    continue;
                }
                match client.future_raw(id).result() {
                    Ok(_) => continue,
                    Err(e) if e.kind == DEPENDENCY_FAILED => {
                        at = d;
                        last = e;
                        continue 'up;
                    }
                    Err(e) => {
                        return Failure {
                            origin: d,
                            error: e,
                        }
                    }
                }
            }
            // No failed dependency on the workers: blame what the record says.
            return Failure {
                origin: at,
                error: last,
            };
        }
    }
}

/// Enqueues a batch of a graph's roots and tells of them as sent (`task-sent`, when the app
/// opts in), as a send does; the workers tell of the nodes they send later.
fn send_roots(
    app: &lovage_broker::App,
    roots: &[lovage_broker::Envelope],
) -> Result<(), GraphError> {
    app.backend()
        .broker()
        .enqueue(roots)
        .map_err(|e| broker_error("sending the graph's roots", e))?;
    app.publish_sent(roots);
    Ok(())
}

/// Fuses the graph's single-consumer chains (issue 16, item 3: always on brokers): a task
/// node whose only reader is a task with no other input from the graph, whose value the
/// caller does not read, and whose call options are the same as its reader's, runs in one
/// message with it ([`lovage_flow::graph::CHAIN_TASK`]). Each maximal chain is marked on its
/// head (`fused`: the nodes after it). Returns how many messages the graph's tasks take.
fn fuse(nodes: &mut [StoredNode]) -> usize {
    // Each task node's effective options, to compare (a node whose options do not decode
    // is not fused: sending it alone reports the error as before).
    let options: Vec<Option<lovage_core::TaskOptions>> = nodes
        .iter()
        .map(|n| match &n.op {
            StoredOp::Task {
                task,
                codec,
                options,
                ..
            } => lovage_flow::graph::node_signature(task, Vec::new(), *codec, options.as_deref())
                .ok()
                .map(|sig| sig.options),
            _ => None,
        })
        .collect();
    // `follows[a]`: the node fused after `a`, if any.
    let follows: Vec<Option<u32>> = nodes
        .iter()
        .enumerate()
        .map(|(a, n)| {
            let [(b, _)] = n.next[..] else {
                return None;
            };
            let reader = nodes.get(b as usize)?;
            let fusable = !n.held
                && reader.inputs == 1
                && matches!(reader.op, StoredOp::Task { ref slots, .. } if slots.len() == 1)
                && options[a].is_some()
                && options[a] == options[b as usize];
            fusable.then_some(b)
        })
        .collect();
    let mut inside = vec![false; nodes.len()];
    for b in follows.iter().flatten() {
        inside[*b as usize] = true;
    }
    let mut messages = 0;
    for a in 0..nodes.len() {
        if !matches!(nodes[a].op, StoredOp::Task { .. }) || inside[a] {
            continue;
        }
        messages += 1;
        let mut chain = Vec::new();
        let mut at = a;
        while let Some(b) = follows[at] {
            chain.push(b);
            at = b as usize;
        }
        nodes[a].fused = chain;
    }
    messages
}
