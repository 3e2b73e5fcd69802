//! One run of a graph: cull, the reverse edges, per-node counters and result slots, and the
//! three local schedulers over them.

use std::cell::UnsafeCell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};

use lovage_broker::Client;
use lovage_core::{Signature, TaskError};
use lovage_pool::{ProcessPool, Scope, ThreadPool};

use crate::graph::{Inner, Inputs, NodeKind, Progress, Stats, Stored, Value};
use crate::GraphError;

mod workers;

/// Where a graph runs.
#[derive(Clone, Copy)]
pub enum Scheduler<'a> {
    /// On the calling thread, depth-first (Dask's synchronous scheduler).
    Inline,
    /// On a thread pool's workers; closures allowed.
    Threads(&'a ThreadPool),
    /// Registered tasks on a process pool's children; constants, collections and tuple
    /// elements are handled in this process. Closures are refused.
    Processes(&'a ProcessPool),
    /// Registered tasks run by a broker's workers, on any host: the graph is stored in the
    /// broker once and the workers release each node's dependents as its inputs finish,
    /// passing values worker to worker through the result store (`lovage_flow::graph`).
    /// This process waits only for the tasks its outputs read. Closures that a task reads
    /// are refused; a graph the workers cannot evaluate (a `collect_map`, or a collection
    /// mixing values of this process with task results) runs as [`BrokerFromCaller`]
    /// instead.
    ///
    /// [`BrokerFromCaller`]: Scheduler::BrokerFromCaller
    Broker(&'a Client),
    /// Registered tasks sent through a broker's workers, scheduled by this process: it sends
    /// each node when its inputs are in and keeps the values (so an intermediate value
    /// travels worker → store → here → broker → worker, and this process must stay up).
    /// Closures are refused.
    BrokerFromCaller(&'a Client),
}

impl std::fmt::Debug for Scheduler<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Scheduler::Inline => "Inline",
            Scheduler::Threads(_) => "Threads",
            Scheduler::Processes(_) => "Processes",
            Scheduler::Broker(_) => "Broker",
            Scheduler::BrokerFromCaller(_) => "BrokerFromCaller",
        })
    }
}

/// Why a node has no value: the node that failed first on its path, and that node's error.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) origin: u32,
    pub(crate) error: TaskError,
}

type Outcome = Result<Value, Arc<Failure>>;

/// A node's result cell, written once by the thread that ran the node.
struct Slot(UnsafeCell<Option<Outcome>>);

// SAFETY: a slot is written once, by the one thread that runs its node, before that thread
// decrements the in-degree of the node's dependents (AcqRel); a reader runs only after
// observing such a decrement reach zero (or, for outputs, after the run has joined), so every
// read happens after the write. It is dropped only by the thread whose consumer decrement
// reached zero, after every reader has decremented (AcqRel), so nobody reads it any more.
unsafe impl Sync for Slot {}

pub(crate) struct Plan<'g> {
    pub(crate) g: &'g Inner,
    in_deg: Vec<AtomicU32>,
    consumers: Vec<AtomicU32>,
    out_start: Vec<u32>,
    outs: Vec<u32>,
    slots: Vec<Slot>,
    roots: Vec<u32>,
    needed: Vec<bool>,
    /// The requested outputs.
    wanted: Vec<u32>,
    ran: AtomicUsize,
    dispatches: AtomicUsize,
    failed: AtomicUsize,
    pub(crate) progress: Option<Arc<Progress>>,
}

impl<'g> Plan<'g> {
    /// The plan for `wanted`: only their ancestors (cull), each with its in-degree and the
    /// number of dependents that will read its result (plus one for an output, which keeps
    /// its value to the end).
    pub(crate) fn new(g: &'g Inner, wanted: &[u32]) -> Self {
        let n = g.len();
        let mut needed = vec![false; n];
        let mut stack: Vec<u32> = Vec::new();
        for &w in wanted {
            if !needed[w as usize] {
                needed[w as usize] = true;
                stack.push(w);
            }
        }
        while let Some(x) = stack.pop() {
            for &d in g.deps_of(x) {
                if !needed[d as usize] {
                    needed[d as usize] = true;
                    stack.push(d);
                }
            }
        }
        let in_deg: Vec<AtomicU32> = (0..n).map(|_| AtomicU32::new(0)).collect();
        let mut consumers: Vec<AtomicU32> = (0..n).map(|_| AtomicU32::new(0)).collect();
        let mut out_start = vec![0u32; n + 1];
        let mut roots = Vec::new();
        for x in 0..n {
            if !needed[x] {
                continue;
            }
            let deps = g.deps_of(x as u32);
            in_deg[x].store(deps.len() as u32, Ordering::Relaxed);
            if deps.is_empty() {
                roots.push(x as u32);
            }
            for &d in deps {
                out_start[d as usize + 1] += 1;
                *consumers[d as usize].get_mut() += 1;
            }
        }
        for &w in wanted {
            *consumers[w as usize].get_mut() += 1;
        }
        for i in 0..n {
            out_start[i + 1] += out_start[i];
        }
        let mut fill: Vec<u32> = out_start[..n].to_vec();
        let mut outs = vec![0u32; out_start[n] as usize];
        for (x, _) in needed.iter().enumerate().filter(|(_, &w)| w) {
            for &d in g.deps_of(x as u32) {
                outs[fill[d as usize] as usize] = x as u32;
                fill[d as usize] += 1;
            }
        }
        Plan {
            g,
            in_deg,
            consumers,
            out_start,
            outs,
            slots: (0..n).map(|_| Slot(UnsafeCell::new(None))).collect(),
            roots,
            needed,
            wanted: wanted.to_vec(),
            ran: AtomicUsize::new(0),
            dispatches: AtomicUsize::new(0),
            failed: AtomicUsize::new(0),
            progress: None,
        }
    }

    pub(crate) fn stats(&self) -> Stats {
        Stats {
            nodes: self.g.len(),
            ran: self.ran.load(Ordering::Relaxed),
            dispatches: self.dispatches.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
        }
    }

    fn outcome(&self, n: u32) -> Option<&Outcome> {
        // SAFETY: see `Slot`: callers read only nodes that finished before them.
        unsafe { (*self.slots[n as usize].0.get()).as_ref() }
    }

    /// The value of a finished node (None if it failed or has not run).
    pub(crate) fn value(&self, n: u32) -> Option<&Value> {
        self.outcome(n).and_then(|o| o.as_ref().ok())
    }

    /// The result of an output after the run: its value, or the failure on its path.
    pub(crate) fn result(&self, n: u32) -> Result<&Value, GraphError> {
        match self.outcome(n) {
            Some(Ok(v)) => Ok(v),
            Some(Err(f)) if f.origin == n => Err(GraphError::Failed {
                key: self.g.key(n),
                error: f.error.clone(),
            }),
            Some(Err(f)) => Err(GraphError::DependencyFailed {
                key: self.g.key(f.origin),
                cause: f.error.clone(),
            }),
            None => Err(GraphError::Internal(format!(
                "node {} has no result after the run",
                self.g.key(n)
            ))),
        }
    }

    fn failure(&self, n: u32) -> Option<Arc<Failure>> {
        match self.outcome(n) {
            Some(Err(f)) => Some(f.clone()),
            _ => None,
        }
    }

    /// Runs node `n` here and records its outcome.
    fn run_node(&self, n: u32) {
        let deps = self.g.deps_of(n);
        let outcome = match deps.iter().find_map(|&d| self.failure(d)) {
            Some(f) => Err(f),
            None => {
                let inputs = Inputs { plan: self, deps };
                let op = &self.g.ops[n as usize];
                let res = catch_unwind(AssertUnwindSafe(|| op.run(&inputs)))
                    .unwrap_or_else(|p| Err(TaskError::from_panic(&*p)));
                res.map_err(|error| Arc::new(Failure { origin: n, error }))
            }
        };
        self.complete(n, outcome);
    }

    /// Stores `n`'s outcome and releases the results it read.
    fn complete(&self, n: u32, outcome: Outcome) {
        if outcome.is_err() {
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
        self.ran.fetch_add(1, Ordering::Relaxed);
        if let Some(p) = &self.progress {
            p.done.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: see `Slot`: only the thread that runs `n` writes its slot, once.
        unsafe { *self.slots[n as usize].0.get() = Some(outcome) };
        for &d in self.g.deps_of(n) {
            if self.consumers[d as usize].fetch_sub(1, Ordering::AcqRel) == 1 {
                // SAFETY: every reader of `d` has finished (its decrement came before ours).
                unsafe { *self.slots[d as usize].0.get() = None };
            }
        }
    }

    /// Calls `ready` for each dependent of `n` whose last dependency this was.
    fn ready_dependents(&self, n: u32, mut ready: impl FnMut(u32)) {
        let (a, b) = (
            self.out_start[n as usize] as usize,
            self.out_start[n as usize + 1] as usize,
        );
        for &d in &self.outs[a..b] {
            if self.in_deg[d as usize].fetch_sub(1, Ordering::AcqRel) == 1 {
                ready(d);
            }
        }
    }

    pub(crate) fn execute(&self, scheduler: Scheduler<'_>) -> Result<(), GraphError> {
        match scheduler {
            Scheduler::Inline => {
                self.inline();
                Ok(())
            }
            Scheduler::Threads(pool) => {
                self.threads(pool);
                Ok(())
            }
            Scheduler::Processes(pool) => self.remote(Remote::Pool(pool)),
            Scheduler::Broker(client) => {
                if self.on_workers(client)? {
                    Ok(())
                } else {
                    self.remote(Remote::Client(client))
                }
            }
            Scheduler::BrokerFromCaller(client) => self.remote(Remote::Client(client)),
        }
    }

    fn inline(&self) {
        // A stack: the dependents a node makes ready run next (depth-first).
        let mut stack: Vec<u32> = self.roots.iter().rev().copied().collect();
        while let Some(n) = stack.pop() {
            self.run_node(n);
            self.ready_dependents(n, |d| stack.push(d));
        }
    }

    fn threads(&self, pool: &ThreadPool) {
        // Roots go out in chunks (a million leaves are not a million jobs); each chunk's
        // job then follows what its nodes make ready.
        let split = pool.workers().max(1) * 8;
        let chunk = (self.roots.len() / split).max(1);
        pool.scope(|s| {
            for roots in self.roots.chunks(chunk) {
                self.dispatches.fetch_add(1, Ordering::Relaxed);
                s.spawn(move || {
                    for &r in roots {
                        self.follow(s, r, split);
                    }
                });
            }
        });
    }

    /// Runs `n`, then keeps going with the first dependent it makes ready (so a chain is one
    /// dispatch and memory is freed depth-first); the other ready dependents become pool jobs,
    /// in at most `split` chunks (a fan-out of a million is not a million jobs).
    fn follow<'s>(&'s self, s: &'s Scope<'s, '_>, mut n: u32, split: usize) {
        let mut rest: Vec<u32> = Vec::new();
        loop {
            self.run_node(n);
            let mut next = None;
            self.ready_dependents(n, |d| {
                if next.is_none() {
                    next = Some(d);
                } else {
                    rest.push(d);
                }
            });
            if !rest.is_empty() {
                let chunk = (rest.len() / split).max(1);
                let mut it = std::mem::take(&mut rest).into_iter();
                loop {
                    let part: Vec<u32> = it.by_ref().take(chunk).collect();
                    if part.is_empty() {
                        break;
                    }
                    self.dispatches.fetch_add(1, Ordering::Relaxed);
                    s.spawn(move || {
                        for d in part {
                            self.follow(s, d, split);
                        }
                    });
                }
            }
            match next {
                Some(d) => n = d,
                None => return,
            }
        }
    }

    /// Runs the plan's task nodes elsewhere (a process pool's children, a broker's workers),
    /// sending each once its inputs are in; other nodes run here.
    fn remote(&self, to: Remote<'_>) -> Result<(), GraphError> {
        for (x, op) in self.g.ops.iter().enumerate() {
            if op.kind() == NodeKind::Local && self.in_plan(x as u32) {
                return Err(GraphError::NotRegistered {
                    key: self.g.key(x as u32),
                });
            }
        }
        let (tx, rx) = mpsc::channel::<(u32, Result<Vec<u8>, TaskError>)>();
        let mut ready: Vec<u32> = self.roots.iter().rev().copied().collect();
        let mut in_flight = 0usize;
        // Enough queued to keep every worker's batches full, few enough that a million ready
        // nodes cost a million indices, not a million requests.
        let cap = to.slots() * 1024;
        let mut batch: Vec<(u32, Signature)> = Vec::new();
        // Single-consumer chains go as one request each (fusion): their heads, with the
        // nodes of each chain in order.
        let mut wanted = vec![false; self.g.len()];
        for &w in &self.wanted {
            wanted[w as usize] = true;
        }
        let mut chains: std::collections::HashMap<u32, Vec<u32>> = Default::default();
        loop {
            while in_flight + batch.len() < cap {
                let Some(n) = ready.pop() else { break };
                let op = &self.g.ops[n as usize];
                if op.kind() != NodeKind::Task {
                    self.run_node(n);
                    self.ready_dependents(n, |d| ready.push(d));
                    continue;
                }
                let deps = self.g.deps_of(n);
                let sig = match deps.iter().find_map(|&d| self.failure(d)) {
                    Some(f) => Err(f),
                    None => op
                        .signature(&Inputs { plan: self, deps })
                        .map(|mut sig| {
                            if let Some(o) = self.g.options.get(&n) {
                                sig.options = o.clone();
                            }
                            sig
                        })
                        .map_err(|error| Arc::new(Failure { origin: n, error })),
                };
                match sig {
                    Err(f) => {
                        self.complete(n, Err(f));
                        self.ready_dependents(n, |d| ready.push(d));
                    }
                    Ok(sig) => match self.fused_chain(n, &wanted) {
                        Some((nodes, chain)) => {
                            chains.insert(n, nodes);
                            batch.push((n, chain));
                        }
                        None => batch.push((n, sig)),
                    },
                }
            }
            if !batch.is_empty() {
                let sent = batch.len();
                self.dispatches.fetch_add(sent, Ordering::Relaxed);
                in_flight += sent;
                to.send(std::mem::take(&mut batch), &tx);
            }
            if in_flight == 0 {
                return Ok(());
            }
            let Ok((n, reply)) = rx.recv() else {
                return Err(GraphError::Internal(
                    "a node's callback was dropped before it answered".into(),
                ));
            };
            in_flight -= 1;
            if let Some(nodes) = chains.remove(&n) {
                self.chain_replied(&nodes, reply, |d| ready.push(d));
                continue;
            }
            let op = &self.g.ops[n as usize];
            let outcome = reply
                .and_then(|bytes| op.decode(&bytes))
                .map_err(|error| Arc::new(Failure { origin: n, error }));
            self.complete(n, outcome);
            self.ready_dependents(n, |d| ready.push(d));
        }
    }

    /// The node fused after `n` on a process pool: its only reader, a task reading nothing
    /// else, with the same options, when `n` is not an output.
    fn next_link(&self, n: u32, wanted: &[bool]) -> Option<u32> {
        if wanted.get(n as usize).copied().unwrap_or(true) {
            return None;
        }
        let (a, b) = (
            self.out_start[n as usize] as usize,
            self.out_start[n as usize + 1] as usize,
        );
        let &[d] = &self.outs[a..b] else {
            return None;
        };
        let fusable = self.g.ops[d as usize].kind() == NodeKind::Task
            && self.g.deps_of(d).len() == 1
            && self.g.options.get(&n) == self.g.options.get(&d);
        fusable.then_some(d)
    }

    /// The chain starting at task node `head` (its inputs in) as one request of
    /// `lovage_flow::graph::CHAIN_TASK`: its nodes in order and the request. `None` when
    /// nothing follows `head`, or a link's arguments are not JSON (it then goes alone).
    fn fused_chain(&self, head: u32, wanted: &[bool]) -> Option<(Vec<u32>, Signature)> {
        use lovage_flow::graph::{chain_args, ChainLink, CHAIN_TASK};
        let mut nodes = vec![head];
        let mut at = head;
        while let Some(d) = self.next_link(at, wanted) {
            nodes.push(d);
            at = d;
        }
        if nodes.len() < 2 {
            return None;
        }
        let mut links = Vec::with_capacity(nodes.len());
        let mut codec = lovage_core::Codec::Json;
        for (i, &x) in nodes.iter().enumerate() {
            let deps = self.g.deps_of(x);
            let Ok(Stored::Task {
                task,
                codec: c,
                args,
                slots,
            }) = self.g.ops[x as usize].stored(&Inputs { plan: self, deps })
            else {
                return None;
            };
            let slot = match (i, &slots[..]) {
                (0, []) => 0,
                (0, _) => return None,
                (_, &[slot]) => slot,
                _ => return None,
            };
            codec = c;
            links.push(ChainLink {
                task: task.to_owned(),
                codec: c,
                args,
                slot,
                node: x,
                key: self.g.key(x),
            });
        }
        let bytes = chain_args(&links, codec).ok()?;
        let mut sig = Signature::from_encoded(CHAIN_TASK.to_owned(), bytes, codec);
        if let Some(o) = self.g.options.get(&head) {
            sig.options = o.clone();
        }
        Some((nodes, sig))
    }

    /// A fused chain's request answered: its nodes complete in order, as if each had been
    /// its own request. On a failure, the links before the failed one ran (their values
    /// stayed in the child: nothing reads them but the next link) and those after it did
    /// not run.
    fn chain_replied(
        &self,
        nodes: &[u32],
        reply: Result<Vec<u8>, TaskError>,
        mut ready: impl FnMut(u32),
    ) {
        let Some(&tail) = nodes.last() else {
            return;
        };
        let ran = || Ok(Box::new(()) as Value);
        let (failed_at, failure) = match reply {
            Ok(bytes) => {
                let outcome = self.g.ops[tail as usize].decode(&bytes).map_err(|error| {
                    Arc::new(Failure {
                        origin: tail,
                        error,
                    })
                });
                for &x in &nodes[..nodes.len() - 1] {
                    self.complete(x, ran());
                    self.ready_dependents(x, |_| {});
                }
                self.complete(tail, outcome);
                self.ready_dependents(tail, ready);
                return;
            }
            Err(e) => match lovage_flow::graph::chain_failure(&e) {
                Some(f) => match nodes.iter().position(|&x| x == f.node) {
                    Some(k) => (k, f.error),
                    None => (0, e),
                },
                // Not a link's own failure (the child died, say): blamed on the first link.
                None => (0, e),
            },
        };
        let failure = Arc::new(Failure {
            origin: nodes[failed_at],
            error: failure,
        });
        for (i, &x) in nodes.iter().enumerate() {
            self.complete(
                x,
                if i < failed_at {
                    ran()
                } else {
                    Err(failure.clone())
                },
            );
            if x == tail {
                self.ready_dependents(x, &mut ready);
            } else {
                self.ready_dependents(x, |_| {});
            }
        }
    }

    /// How many nodes this plan runs.
    pub(crate) fn needed_count(&self) -> usize {
        self.needed.iter().filter(|&&w| w).count()
    }

    /// True when `n` runs in this plan (an ancestor of an output).
    fn in_plan(&self, n: u32) -> bool {
        self.needed[n as usize]
    }
}

/// Where [`Plan::remote`] sends task nodes.
enum Remote<'a> {
    Pool(&'a ProcessPool),
    Client(&'a Client),
}

impl Remote<'_> {
    /// How many calls run at once there (for how many to keep queued).
    fn slots(&self) -> usize {
        match self {
            Remote::Pool(pool) => pool.workers().max(1),
            // The broker's workers are not known here; 8 × 1024 queued keeps a few hosts busy.
            Remote::Client(_) => 8,
        }
    }

    /// Sends `calls`; each answers on `tx` with its node index. A batch the broker refuses
    /// answers at once with the broker's error for every node in it.
    fn send(
        &self,
        calls: Vec<(u32, Signature)>,
        tx: &mpsc::Sender<(u32, Result<Vec<u8>, TaskError>)>,
    ) {
        match self {
            Remote::Pool(pool) => {
                for (n, sig) in calls {
                    let tx = tx.clone();
                    pool.submit_raw(sig).add_done_callback(move |r| {
                        // The receiver lives until every dispatched node has answered.
                        let _ = tx.send((n, r.clone()));
                    });
                }
            }
            Remote::Client(client) => {
                let (nodes, sigs): (Vec<u32>, Vec<Signature>) = calls.into_iter().unzip();
                match client.submit_raw_many(sigs) {
                    Ok(futures) => {
                        for (n, f) in nodes.into_iter().zip(futures) {
                            let tx = tx.clone();
                            f.add_done_callback(move |r| {
                                let _ = tx.send((n, r.clone()));
                            });
                        }
                    }
                    Err(e) => {
                        let err = TaskError::new(
                            lovage_core::kinds::BROKER,
                            format!("sending the graph's tasks failed: {e}"),
                        );
                        for n in nodes {
                            let _ = tx.send((n, Err(err.clone())));
                        }
                    }
                }
            }
        }
    }
}
