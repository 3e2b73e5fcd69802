//! The arena: nodes, their dependencies in CSR form, keys; building and the run entry points.

use std::any::Any;
use std::cell::{Cell, Ref, RefCell};
use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use lovage_core::{kinds, Codec, Signature, TaskError};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::args::{Arg, ArgTuple, TaskArgs};
use crate::outputs::{Kept, Outputs, Results};
use crate::plan::{Plan, Scheduler};
use crate::GraphError;

/// A node's result while a graph runs: any `Send + Sync` value.
pub(crate) type Value = Box<dyn Any + Send + Sync>;

/// Computes a pure node's hash from its arguments and the graph built so far.
type PureHash<A> = dyn Fn(&A, &Inner) -> Result<u64, GraphError>;

/// A typed handle to one node of a [`Graph`]: 8 bytes, `Copy`.
pub struct Delayed<T> {
    pub(crate) graph: u32,
    pub(crate) node: u32,
    _t: PhantomData<fn() -> T>,
}

impl<T> Clone for Delayed<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for Delayed<T> {}

impl<T> std::fmt::Debug for Delayed<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Delayed(graph {}, node {})", self.graph, self.node)
    }
}

impl<T> Delayed<T> {
    pub(crate) fn new(graph: u32, node: u32) -> Self {
        Delayed {
            graph,
            node,
            _t: PhantomData,
        }
    }

    /// The node index, after checking the handle belongs to `graph`.
    pub(crate) fn checked(&self, graph: u32) -> Result<u32, GraphError> {
        if self.graph == graph {
            Ok(self.node)
        } else {
            Err(GraphError::ForeignHandle {
                handle_graph: self.graph,
                graph,
            })
        }
    }

    /// The node's index in its graph (stable while the graph lives).
    pub fn index(&self) -> usize {
        self.node as usize
    }
}

/// What sort of node: where it may run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeKind {
    /// A registered task: runs anywhere, a process pool included.
    Task,
    /// A closure: runs inline or on a thread pool only.
    Local,
    /// A constant, a collection of results or an element of a tuple: runs where the scheduler
    /// is (in the parent for a process pool), never dispatched.
    Structural,
}

/// The results of a node's dependencies, in argument order, while it runs.
pub struct Inputs<'a> {
    pub(crate) plan: &'a Plan<'a>,
    pub(crate) deps: &'a [u32],
}

impl Inputs<'_> {
    /// Dependency `i`'s result, cloned.
    pub fn get<T: Clone + 'static>(&self, i: usize) -> Result<T, TaskError> {
        let mismatch = || {
            TaskError::new(
                kinds::FAILED,
                format!("internal: dependency {i} of a node has no result of the expected type"),
            )
        };
        let node = *self.deps.get(i).ok_or_else(mismatch)?;
        self.plan
            .value(node)
            .and_then(|v| v.downcast_ref::<T>())
            .cloned()
            .ok_or_else(mismatch)
    }

    /// Dependency `i`'s result if it has one here (a node run in this process).
    pub(crate) fn known<T: 'static>(&self, i: usize) -> Option<&T> {
        let node = *self.deps.get(i)?;
        self.plan.value(node).and_then(|v| v.downcast_ref::<T>())
    }

    /// Number of dependencies.
    pub fn len(&self) -> usize {
        self.deps.len()
    }

    /// True for a node without dependencies.
    pub fn is_empty(&self) -> bool {
        self.deps.is_empty()
    }
}

/// What a node does. One boxed value per node; its arguments live inside it.
pub(crate) trait NodeOp: Send + Sync {
    fn name(&self) -> &'static str;
    fn kind(&self) -> NodeKind;
    /// Runs here, on this thread.
    fn run(&self, inputs: &Inputs<'_>) -> Result<Value, TaskError>;
    /// A registered task's call with its dependencies' results encoded in, for a process pool.
    fn signature(&self, _inputs: &Inputs<'_>) -> Result<Signature, TaskError> {
        Err(TaskError::new(
            kinds::FAILED,
            "internal: only a registered task has a signature",
        ))
    }
    /// Decodes the result a process pool sent back.
    fn decode(&self, _bytes: &[u8]) -> Result<Value, TaskError> {
        Err(TaskError::new(
            kinds::FAILED,
            "internal: only a registered task's result is decoded",
        ))
    }
    /// What the node is to a broker's workers (see `lovage_flow::graph`): a task with its
    /// arguments known so far (the results of dependencies without a value here left as
    /// places), a structural operation on JSON values, or nothing they can run.
    fn stored(&self, _inputs: &Inputs<'_>) -> Result<Stored, TaskError> {
        Ok(Stored::Opaque)
    }
}

/// A node as a broker's workers see it.
pub(crate) enum Stored {
    /// A registered task; `slots` are where the dependencies without a value go in `args`.
    Task {
        task: &'static str,
        codec: Codec,
        args: Vec<serde_json::Value>,
        slots: Vec<u32>,
    },
    /// The list of its inputs.
    Collect,
    /// Element `i` of its one input.
    Item(u32),
    /// Only this process can evaluate it (a closure, a map, a constant of any type).
    Opaque,
}

/// What a structural node is, to a broker's workers.
#[derive(Clone, Copy)]
pub(crate) enum Form {
    /// Not expressible on JSON values.
    Opaque,
    /// The list (or tuple) of its inputs.
    Collect,
    /// Element `i` of its input.
    Item(u32),
}

struct TaskOp<A: ArgTuple, R> {
    name: &'static str,
    codec: Codec,
    args: A,
    call: fn(A::Values) -> Result<R, TaskError>,
}

impl<A, R> NodeOp for TaskOp<A, R>
where
    A: TaskArgs,
    R: Serialize + DeserializeOwned + Send + Sync + 'static,
{
    fn name(&self) -> &'static str {
        self.name
    }
    fn kind(&self) -> NodeKind {
        NodeKind::Task
    }
    fn run(&self, inputs: &Inputs<'_>) -> Result<Value, TaskError> {
        let values = self.args.resolve(inputs)?;
        Ok(Box::new((self.call)(values)?))
    }
    fn signature(&self, inputs: &Inputs<'_>) -> Result<Signature, TaskError> {
        let values = self.args.resolve(inputs)?;
        let bytes = A::encode(&values, self.codec)?;
        Ok(Signature::from_encoded(self.name, bytes, self.codec))
    }
    fn decode(&self, bytes: &[u8]) -> Result<Value, TaskError> {
        Ok(Box::new(self.codec.decode::<R>(bytes, "task result")?))
    }
    fn stored(&self, inputs: &Inputs<'_>) -> Result<Stored, TaskError> {
        let (mut args, mut slots) = (Vec::new(), Vec::new());
        self.args.template(inputs, &mut args, &mut slots)?;
        Ok(Stored::Task {
            task: self.name,
            codec: self.codec,
            args,
            slots,
        })
    }
}

/// A closure node (local graphs) or a structural one; `f` gets the inputs directly.
pub(crate) struct FnOp<F> {
    pub(crate) name: &'static str,
    pub(crate) kind: NodeKind,
    pub(crate) form: Form,
    pub(crate) f: F,
}

impl<F> NodeOp for FnOp<F>
where
    F: Fn(&Inputs<'_>) -> Result<Value, TaskError> + Send + Sync,
{
    fn name(&self) -> &'static str {
        self.name
    }
    fn kind(&self) -> NodeKind {
        self.kind
    }
    fn run(&self, inputs: &Inputs<'_>) -> Result<Value, TaskError> {
        (self.f)(inputs)
    }
    fn stored(&self, _inputs: &Inputs<'_>) -> Result<Stored, TaskError> {
        Ok(match self.form {
            Form::Opaque => Stored::Opaque,
            Form::Collect => Stored::Collect,
            Form::Item(i) => Stored::Item(i),
        })
    }
}

/// FNV-1a, 64 bits: stable across processes and Rust releases, so keys are too. Not a public
/// API (it appears in [`TaskArgs`](crate::args::TaskArgs)).
#[doc(hidden)]
pub struct Fnv(u64);

impl Fnv {
    pub(crate) fn new() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
    /// Feeds one byte.
    pub fn byte(&mut self, b: u8) {
        self.0 ^= b as u64;
        self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
    }
    /// Feeds bytes.
    pub fn bytes(&mut self, bs: &[u8]) {
        for &b in bs {
            self.byte(b);
        }
    }
    /// Feeds a u64.
    pub fn u64(&mut self, v: u64) {
        self.bytes(&v.to_le_bytes());
    }
    pub(crate) fn finish(&self) -> u64 {
        self.0
    }
}

/// splitmix64: spreads a counter over 64 bits.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A hash no other impure node gets: a process-wide counter mixed with a per-process seed
/// (time and pid), as Dask gives impure calls a fresh uuid.
fn unique_hash() -> u64 {
    static SEED: OnceLock<u64> = OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let seed = *SEED.get_or_init(|| {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        mix(t ^ ((std::process::id() as u64) << 32))
    });
    mix(seed ^ NEXT.fetch_add(1, Ordering::Relaxed))
}

pub(crate) struct Inner {
    pub(crate) id: u32,
    pub(crate) ops: Vec<Box<dyn NodeOp>>,
    pub(crate) hashes: Vec<u64>,
    /// CSR: node i's dependencies are `deps[dep_start[i]..dep_start[i + 1]]`.
    pub(crate) dep_start: Vec<u32>,
    pub(crate) deps: Vec<u32>,
    /// Persisted nodes hold their value; their dependencies no longer count.
    pub(crate) persisted: Vec<bool>,
    pure_index: HashMap<u64, u32>,
    pub(crate) user_keys: HashMap<u32, String>,
    key_owner: HashMap<String, u32>,
    /// Per-call options of task nodes that have any ([`Graph::set_options`]); few nodes have
    /// them, so a map keeps the rest at no cost.
    pub(crate) options: HashMap<u32, lovage_core::TaskOptions>,
    /// Task nodes that finish on the caller when a broker's workers run the graph
    /// ([`Graph::finish_on_caller`]).
    pub(crate) on_caller: std::collections::HashSet<u32>,
    /// The first error met while building; computing reports it.
    pub(crate) error: Option<GraphError>,
}

impl Inner {
    pub(crate) fn len(&self) -> usize {
        self.ops.len()
    }

    /// `d`'s node index when it is a registered task's node; else `InvalidOptions` saying
    /// that only one `does` what was asked.
    fn task_node<T>(&self, d: Delayed<T>, does: &str) -> Result<u32, GraphError> {
        let n = d.checked(self.id)?;
        if self.ops[n as usize].kind() != NodeKind::Task {
            return Err(GraphError::InvalidOptions {
                key: self.key(n),
                reason: format!("only a registered task's node {does}"),
            });
        }
        Ok(n)
    }

    pub(crate) fn deps_of(&self, n: u32) -> &[u32] {
        if self.persisted[n as usize] {
            return &[];
        }
        let (a, b) = (
            self.dep_start[n as usize] as usize,
            self.dep_start[n as usize + 1] as usize,
        );
        &self.deps[a..b]
    }

    pub(crate) fn key(&self, n: u32) -> String {
        match self.user_keys.get(&n) {
            Some(k) => k.clone(),
            None => format!(
                "{}-{:016x}",
                self.ops[n as usize].name(),
                self.hashes[n as usize]
            ),
        }
    }

    fn push(&mut self, op: Box<dyn NodeOp>, hash: u64, deps: &[u32]) -> u32 {
        let n = self.ops.len() as u32;
        self.ops.push(op);
        self.hashes.push(hash);
        self.deps.extend_from_slice(deps);
        self.dep_start.push(self.deps.len() as u32);
        self.persisted.push(false);
        n
    }

    fn fail(&mut self, e: GraphError) {
        if self.error.is_none() {
            self.error = Some(e);
        }
    }
}

/// Counts from the last run of a graph.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Nodes in the graph.
    pub nodes: usize,
    /// Nodes that ran (after culling to the requested outputs' ancestors).
    pub ran: usize,
    /// Units of work handed to the scheduler's pool (a fused chain is one; inline: 0).
    pub dispatches: usize,
    /// Nodes that failed or did not run because a dependency failed.
    pub failed: usize,
}

/// A delayed task graph: build it with `task::delayed(&g, …)`, [`Graph::local`],
/// [`Graph::collect`], then [`compute`](Graph::compute) what you need.
///
/// Not `Sync`: a graph is built on one thread (it may move to another).
pub struct Graph {
    inner: RefCell<Inner>,
    stats: Cell<Stats>,
    progress: RefCell<Option<Arc<Progress>>>,
}

/// Counters a run updates as it goes, for a progress display on another thread: set with
/// [`Graph::set_progress`]. `total` is the number of nodes the run will run (after cull).
#[derive(Debug, Default)]
pub struct Progress {
    /// Nodes to run in the current run.
    pub total: AtomicUsize,
    /// Nodes finished so far (failed ones included).
    pub done: AtomicUsize,
}

impl Default for Graph {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Graph {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let g = self.inner.borrow();
        write!(
            f,
            "Graph(id {}, {} nodes, {} edges)",
            g.id,
            g.len(),
            g.deps.len()
        )
    }
}

// The scratch buffer for a node's dependencies while it is added (no allocation per node).
thread_local! {
    static DEPS: RefCell<Vec<u32>> = const { RefCell::new(Vec::new()) };
}

impl Graph {
    /// An empty graph.
    pub fn new() -> Self {
        static NEXT_ID: AtomicU32 = AtomicU32::new(1);
        Graph {
            inner: RefCell::new(Inner {
                id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
                ops: Vec::new(),
                hashes: Vec::new(),
                dep_start: vec![0],
                deps: Vec::new(),
                persisted: Vec::new(),
                pure_index: HashMap::new(),
                user_keys: HashMap::new(),
                options: HashMap::new(),
                on_caller: Default::default(),
                key_owner: HashMap::new(),
                error: None,
            }),
            stats: Cell::new(Stats::default()),
            progress: RefCell::new(None),
        }
    }

    /// Counters the next runs update (reset at each run's start); `None` stops it. Costs one
    /// atomic increment per node.
    pub fn set_progress(&self, progress: Option<Arc<Progress>>) {
        *self.progress.borrow_mut() = progress;
    }

    /// An empty graph with room for `nodes` nodes and `edges` dependencies.
    pub fn with_capacity(nodes: usize, edges: usize) -> Self {
        let g = Self::new();
        {
            let mut i = g.inner.borrow_mut();
            i.ops.reserve(nodes);
            i.hashes.reserve(nodes);
            i.dep_start.reserve(nodes);
            i.persisted.reserve(nodes);
            i.deps.reserve(edges);
        }
        g
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.inner.borrow().len()
    }

    /// True when no node was added.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of dependency edges.
    pub fn edges(&self) -> usize {
        self.inner.borrow().deps.len()
    }

    pub(crate) fn inner(&self) -> Ref<'_, Inner> {
        self.inner.borrow()
    }

    /// The names of the closure nodes that `outputs` need, each once, in the order the
    /// nodes were added (sources first); empty when every node they need is a registered
    /// task, a value or structural: a process pool or a broker's workers can run them only
    /// then. A collection asks this before it is sent, to name the step that cannot go.
    pub fn closure_steps<O: Outputs>(&self, outputs: &O) -> Result<Vec<&'static str>, GraphError> {
        let g = self.inner();
        let mut stack = Vec::new();
        outputs.nodes(g.id, &mut stack)?;
        let mut seen = vec![false; g.len()];
        while let Some(x) = stack.pop() {
            if !std::mem::replace(&mut seen[x as usize], true) {
                stack.extend(g.deps_of(x).iter().copied());
            }
        }
        let mut names: Vec<&'static str> = Vec::new();
        for (x, op) in g.ops.iter().enumerate() {
            if seen[x] && op.kind() == NodeKind::Local && !names.contains(&op.name()) {
                names.push(op.name());
            }
        }
        Ok(names)
    }

    /// Counts from the last `compute` or `persist`.
    pub fn last_stats(&self) -> Stats {
        self.stats.get()
    }

    /// A node's key: `name-<hash>`, or the key set with [`set_key`](Graph::set_key). For a
    /// `pure` task the hash covers the name and the encoded arguments (a dependency by its
    /// key), so identical calls share one key and one node; other nodes get a unique hash.
    pub fn key<T>(&self, d: Delayed<T>) -> Result<String, GraphError> {
        let g = self.inner.borrow();
        let n = d.checked(g.id)?;
        Ok(g.key(n))
    }

    /// Gives a node a key of your choosing; a key used by another node is refused. Pure
    /// calls added afterwards that take this node derive their keys from it.
    pub fn set_key<T>(&self, d: Delayed<T>, key: impl Into<String>) -> Result<(), GraphError> {
        let mut g = self.inner.borrow_mut();
        let n = d.checked(g.id)?;
        let key = key.into();
        match g.key_owner.get(&key) {
            Some(&other) if other != n => return Err(GraphError::DuplicateKey { key }),
            _ => {}
        }
        if let Some(old) = g.user_keys.insert(n, key.clone()) {
            g.key_owner.remove(&old);
        }
        // Pure calls made from now on that take this node hash its key, not its old hash, so
        // their keys do not depend on how this node was made.
        let mut h = Fnv::new();
        h.bytes(b"key:");
        h.bytes(key.as_bytes());
        g.hashes[n as usize] = h.finish();
        g.key_owner.insert(key, n);
        Ok(())
    }

    /// Sets a task node's per-call options, as `f::s(x).priority(5)` does for a single call
    /// (`priority`, `retry`, `resources`, `queue`, time limits…), over the registered task's.
    /// They apply where the node is sent to a broker (`Broker`, `BrokerFromCaller`,
    /// [`submit`](Self::submit)); the local schedulers run a node once, at once, wherever a
    /// slot is. Refused for a node that is not a registered task (`InvalidOptions`).
    pub fn set_options<T>(
        &self,
        d: Delayed<T>,
        options: lovage_core::TaskOptions,
    ) -> Result<(), GraphError> {
        let mut g = self.inner.borrow_mut();
        let n = g.task_node(d, "takes call options")?;
        if let Some(r) = &options.resources {
            lovage_core::options::check_resources(r).map_err(|reason| {
                GraphError::InvalidOptions {
                    key: g.key(n),
                    reason,
                }
            })?;
        }
        g.options.insert(n, options);
        Ok(())
    }

    /// Marks a task node as the graph's finishing step, run by the caller: when a broker's
    /// workers run the graph (`Scheduler::Broker`) and no task there reads this node, it runs
    /// in the calling process from its inputs' results, as Dask's `compute()` concatenates a
    /// collection's partitions on the client. So one worker does not make, keep and send a
    /// result as large as all its inputs together (a frame's `concat` of many partitions).
    /// Other schedulers run it like any task. Refused for a node that is not a registered
    /// task (`InvalidOptions`).
    pub fn finish_on_caller<T>(&self, d: Delayed<T>) -> Result<(), GraphError> {
        let mut g = self.inner.borrow_mut();
        let n = g.task_node(d, "can finish on the caller")?;
        g.on_caller.insert(n);
        Ok(())
    }

    /// Adds a node: its dependencies from `args`, its hash, then the op `make` builds from the
    /// arguments. A pure node whose hash is already in the graph is that node.
    fn add<A: ArgTuple, T>(
        &self,
        args: A,
        pure_hash: Option<&PureHash<A>>,
        make: impl FnOnce(A) -> Box<dyn NodeOp>,
    ) -> Delayed<T> {
        let mut g = self.inner.borrow_mut();
        let id = g.id;
        DEPS.with(|scratch| {
            let mut deps = scratch.borrow_mut();
            deps.clear();
            if let Err(e) = args.deps(id, &mut deps) {
                g.fail(e);
                deps.clear();
            }
            let hash = match pure_hash.map(|h| h(&args, &g)) {
                None => unique_hash(),
                Some(Ok(h)) => {
                    if let Some(&n) = g.pure_index.get(&h) {
                        return Delayed::new(id, n);
                    }
                    h
                }
                Some(Err(e)) => {
                    g.fail(e);
                    unique_hash()
                }
            };
            let n = g.push(make(args), hash, &deps);
            if pure_hash.is_some() {
                g.pure_index.insert(hash, n);
            }
            Delayed::new(id, n)
        })
    }

    /// A node holding a value known now (Dask's `delayed(value)`).
    pub fn value<T: Clone + Send + Sync + 'static>(&self, v: T) -> Delayed<T> {
        self.add((), None, move |()| {
            Box::new(FnOp {
                name: "value",
                kind: NodeKind::Structural,
                form: Form::Opaque,
                f: move |_: &Inputs<'_>| Ok(Box::new(v.clone()) as Value),
            })
        })
    }

    /// One node whose result is the results of `items`, in order (Dask collects a list of
    /// delayed values the same way). Nested collections compose: collect collections.
    pub fn collect<T: Clone + Send + Sync + 'static>(
        &self,
        items: impl IntoIterator<Item = Delayed<T>>,
    ) -> Delayed<Vec<T>> {
        let handles: Vec<Arg<T>> = items.into_iter().map(Arg::Node).collect();
        self.add(Handles(handles), None, |_| {
            Box::new(FnOp {
                name: "collect",
                kind: NodeKind::Structural,
                form: Form::Collect,
                f: |inputs: &Inputs<'_>| {
                    let mut out = Vec::with_capacity(inputs.len());
                    for i in 0..inputs.len() {
                        out.push(inputs.get::<T>(i)?);
                    }
                    Ok(Box::new(out) as Value)
                },
            })
        })
    }

    /// One node whose result maps each key to its handle's result.
    pub fn collect_map<K, T>(
        &self,
        items: impl IntoIterator<Item = (K, Delayed<T>)>,
    ) -> Delayed<std::collections::BTreeMap<K, T>>
    where
        K: Ord + Clone + Send + Sync + 'static,
        T: Clone + Send + Sync + 'static,
    {
        let (keys, handles): (Vec<K>, Vec<Delayed<T>>) = items.into_iter().unzip();
        let args = Handles(handles.into_iter().map(Arg::Node).collect());
        self.add(args, None, move |_| {
            Box::new(FnOp {
                name: "collect_map",
                kind: NodeKind::Structural,
                form: Form::Opaque,
                f: move |inputs: &Inputs<'_>| {
                    let mut out = std::collections::BTreeMap::new();
                    for (i, k) in keys.iter().enumerate() {
                        out.insert(k.clone(), inputs.get::<T>(i)?);
                    }
                    Ok(Box::new(out) as Value)
                },
            })
        })
    }

    /// One node whose result is the tuple of the results of `handles` (a tuple of up to 6
    /// handles): the tuple form of [`collect`](Graph::collect).
    pub fn tuple<H>(&self, handles: H) -> Delayed<<H::Args as ArgTuple>::Values>
    where
        H: HandleTuple,
        <H::Args as ArgTuple>::Values: Send + Sync + 'static,
    {
        self.add(handles.into_args(), None, |args| {
            Box::new(FnOp {
                name: "tuple",
                kind: NodeKind::Structural,
                form: Form::Collect,
                f: move |inputs: &Inputs<'_>| Ok(Box::new(args.resolve(inputs)?) as Value),
            })
        })
    }

    /// A node that runs the closure `f` on the results of `args` (a tuple of handles). Only
    /// `Inline` and `Threads` run closures; a process pool refuses them (`NotRegistered`).
    pub fn local<H, F, R>(&self, f: F, args: H) -> Delayed<R>
    where
        H: HandleTuple,
        F: LocalFn<<H::Args as ArgTuple>::Values, R>,
        R: Send + Sync + 'static,
    {
        self.add(args.into_args(), None, |args| {
            Box::new(FnOp {
                name: "local",
                kind: NodeKind::Local,
                form: Form::Opaque,
                f: move |inputs: &Inputs<'_>| {
                    let values = args.resolve(inputs)?;
                    Ok(Box::new(f.call(values)) as Value)
                },
            })
        })
    }

    /// A closure node over any number of handles of one type, which may fail: `f` gets their
    /// results in order and an `Err` fails the node (its dependents then report
    /// `DependencyFailed`). `name` is the node's name in keys and pictures, so a collection's
    /// graph is drawn grouped by operation. Only `Inline` and `Threads` run it, like
    /// [`local`](Graph::local); with no handles the node is a root.
    pub fn try_local_all<T, R, F>(
        &self,
        name: &'static str,
        f: F,
        handles: Vec<Delayed<T>>,
    ) -> Delayed<R>
    where
        T: Clone + Send + Sync + 'static,
        R: Send + Sync + 'static,
        F: Fn(Vec<T>) -> Result<R, TaskError> + Send + Sync + 'static,
    {
        let args = Handles(handles.into_iter().map(Arg::Node).collect());
        self.add(args, None, move |_| {
            Box::new(FnOp {
                name,
                kind: NodeKind::Local,
                form: Form::Opaque,
                f: move |inputs: &Inputs<'_>| {
                    let mut values = Vec::with_capacity(inputs.len());
                    for i in 0..inputs.len() {
                        values.push(inputs.get::<T>(i)?);
                    }
                    Ok(Box::new(f(values)?) as Value)
                },
            })
        })
    }

    /// Splits a node whose result is a tuple into one handle per element (Dask's `nout`).
    pub fn split<T: Nout>(&self, d: Delayed<T>) -> T::Handles {
        T::split(self, d)
    }

    /// Element `index` of the list `d` computes (Dask's `getitem`): a structural node, so on
    /// a broker it is no task of its own; when `d`'s value is kept by a worker (the data
    /// plane) and indexed per element, the element's readers fetch only its bytes. Indexing
    /// past the list's end fails the node.
    pub fn element<T>(&self, d: Delayed<Vec<T>>, index: usize) -> Delayed<T>
    where
        T: Clone + Send + Sync + 'static,
    {
        let args = Handles(vec![Arg::<Marker<Vec<T>>>::Node(Delayed::new(
            d.graph, d.node,
        ))]);
        self.add(args, None, move |_| {
            Box::new(FnOp {
                name: "getitem",
                kind: NodeKind::Structural,
                form: Form::Item(index as u32),
                f: move |inputs: &Inputs<'_>| {
                    let node = inputs.deps.first().copied();
                    let list = node
                        .and_then(|n| inputs.plan.value(n))
                        .and_then(|v| v.downcast_ref::<Vec<T>>())
                        .ok_or_else(|| {
                            TaskError::new(kinds::FAILED, "internal: getitem's input is missing")
                        })?;
                    let item = list.get(index).cloned().ok_or_else(|| {
                        TaskError::new(
                            kinds::FAILED,
                            format!("element {index} of a list of {}", list.len()),
                        )
                    })?;
                    Ok(Box::new(item) as Value)
                },
            })
        })
    }

    /// Adds a node that takes element `f` of `d`'s result.
    fn item<T, U>(&self, d: Delayed<T>, index: u32, f: fn(&T) -> U) -> Delayed<U>
    where
        T: Send + Sync + 'static,
        U: Send + Sync + 'static,
    {
        let args = Handles(vec![Arg::<Marker<T>>::Node(Delayed::new(d.graph, d.node))]);
        self.add(args, None, move |_| {
            Box::new(FnOp {
                name: "getitem",
                kind: NodeKind::Structural,
                form: Form::Item(index),
                f: move |inputs: &Inputs<'_>| {
                    let node = inputs.deps.first().copied();
                    let tuple = node
                        .and_then(|n| inputs.plan.value(n))
                        .and_then(|v| v.downcast_ref::<T>())
                        .ok_or_else(|| {
                            TaskError::new(kinds::FAILED, "internal: getitem's input is missing")
                        })?;
                    Ok(Box::new(f(tuple)) as Value)
                },
            })
        })
    }

    /// Runs what `outputs` needs on `scheduler` and returns the values, or the first error (in
    /// the order of `outputs`). Every branch that can finish does, failures or not.
    pub fn compute<O: Outputs>(
        &self,
        scheduler: Scheduler<'_>,
        outputs: O,
    ) -> Result<O::Value, GraphError> {
        let g = self.inner.borrow();
        let plan = self.run(&g, scheduler, &outputs)?;
        outputs.take(&Results(&plan))
    }

    /// Like [`compute`](Graph::compute), but returns every output's own result, so the
    /// branches that succeeded are kept when others failed.
    pub fn compute_partial<O: Outputs>(
        &self,
        scheduler: Scheduler<'_>,
        outputs: O,
    ) -> Result<O::Partial, GraphError> {
        let g = self.inner.borrow();
        let plan = self.run(&g, scheduler, &outputs)?;
        Ok(outputs.take_partial(&Results(&plan)))
    }

    /// Computes `outputs` and keeps their values in the graph: the handles stay valid and
    /// their ancestors no longer run when something that depends on them is computed (Dask's
    /// `persist`). Outputs that failed are left as they were and the first error is returned.
    pub fn persist<O: Outputs>(
        &self,
        scheduler: Scheduler<'_>,
        outputs: O,
    ) -> Result<(), GraphError> {
        let mut kept = Kept::default();
        let first_error = {
            let g = self.inner.borrow();
            let plan = self.run(&g, scheduler, &outputs)?;
            outputs.persist(&Results(&plan), &mut kept);
            outputs.take(&Results(&plan)).err()
        };
        let mut g = self.inner.borrow_mut();
        for (n, op) in kept.0 {
            g.ops[n as usize] = op;
            g.persisted[n as usize] = true;
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Sends what `outputs` need to `client`'s broker and returns at once with one future per
    /// output (Dask's `client.compute` / `client.persist`): the graph is stored in the broker,
    /// the workers release each node's dependents as its inputs finish, and the graph
    /// completes even if this process exits. An output must depend on a task; closures are
    /// refused, and so is a graph the workers cannot evaluate (a `collect_map` or a
    /// collection mixing this process's values with task results: use
    /// [`compute`](Graph::compute) on `Broker` for those).
    pub fn submit<T>(
        &self,
        client: &lovage_broker::Client,
        outputs: Vec<Delayed<T>>,
    ) -> Result<Submitted<T>, GraphError>
    where
        T: DeserializeOwned + Send + 'static,
    {
        let g = self.inner.borrow();
        if let Some(e) = &g.error {
            return Err(e.clone());
        }
        let wanted = outputs
            .iter()
            .map(|d| d.checked(g.id))
            .collect::<Result<Vec<u32>, _>>()?;
        let plan = Plan::new(&g, &wanted);
        let sent = plan.send_to_workers(client, true)?.ok_or_else(|| {
            GraphError::NotForWorkers(
                "a node between the tasks is a map or mixes this process's values with task \
                 results; compute it on Broker instead"
                    .into(),
            )
        })?;
        self.stats.set(plan.stats());
        Ok(Submitted {
            graph: sent.graph,
            futures: wanted
                .iter()
                .map(|&w| client.future(sent.ids[w as usize]))
                .collect(),
        })
    }

    fn run<'g, O: Outputs>(
        &self,
        g: &'g Inner,
        scheduler: Scheduler<'_>,
        outputs: &O,
    ) -> Result<Plan<'g>, GraphError> {
        if let Some(e) = &g.error {
            return Err(e.clone());
        }
        let mut wanted = Vec::new();
        outputs.nodes(g.id, &mut wanted)?;
        let mut plan = Plan::new(g, &wanted);
        plan.progress = self.progress.borrow().clone();
        if let Some(p) = &plan.progress {
            p.total.store(plan.needed_count(), Ordering::Relaxed);
            p.done.store(0, Ordering::Relaxed);
        }
        plan.execute(scheduler)?;
        self.stats.set(plan.stats());
        Ok(plan)
    }

    /// Builds a registered task's node; `#[lovage::task]`'s `delayed` calls this through
    /// [`TaskGraph`].
    fn task_node<A, R>(
        &self,
        name: &'static str,
        pure: bool,
        codec: Codec,
        args: A,
        call: fn(A::Values) -> Result<R, TaskError>,
    ) -> Delayed<R>
    where
        A: TaskArgs,
        R: Serialize + DeserializeOwned + Send + Sync + 'static,
    {
        let hash = move |args: &A, g: &Inner| -> Result<u64, GraphError> {
            let mut h = Fnv::new();
            h.bytes(name.as_bytes());
            h.byte(0xff);
            args.hash_args(&mut h, codec, &g.hashes)
                .map_err(|e| GraphError::Failed {
                    key: format!("{name}-?"),
                    error: e.into(),
                })?;
            Ok(h.finish())
        };
        let pure_hash: Option<&PureHash<A>> = if pure { Some(&hash) } else { None };
        self.add(args, pure_hash, |args| {
            Box::new(TaskOp {
                name,
                codec,
                args,
                call,
            })
        })
    }
}

/// A graph handed to a broker's workers by [`Graph::submit`].
#[derive(Debug)]
pub struct Submitted<T> {
    /// The stored graph's id (`lovage graph ID` shows its state).
    pub graph: lovage_core::TaskId,
    /// One future per output, in order. Dropping the client that made them cancels the
    /// futures, not the graph: `client.future(f.id())` on another client waits again.
    pub futures: Vec<lovage_broker::TaskFuture<T>>,
}

/// The graph side of `#[lovage::task]`'s `delayed`: generic over the graph so that a task
/// whose types cannot go in a graph (a result that is not `Clone`) still compiles until
/// `delayed` is called. Not meant to be called by hand.
pub trait TaskGraph<A, V, R> {
    /// Adds a call of the registered task `name` (`call` runs it on typed values).
    fn task(
        &self,
        name: &'static str,
        pure: bool,
        codec: Codec,
        args: A,
        call: fn(V) -> Result<R, TaskError>,
    ) -> Delayed<R>;

    /// The graph itself, for arguments that add nodes (a `Vec` of handles).
    fn graph(&self) -> &Graph;
}

impl<A, V, R> TaskGraph<A, V, R> for Graph
where
    A: TaskArgs<Values = V>,
    R: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
{
    fn task(
        &self,
        name: &'static str,
        pure: bool,
        codec: Codec,
        args: A,
        call: fn(V) -> Result<R, TaskError>,
    ) -> Delayed<R> {
        self.task_node(name, pure, codec, args, call)
    }

    fn graph(&self) -> &Graph {
        self
    }
}

/// A list of handles as an [`ArgTuple`] (collect's inputs).
struct Handles<T>(Vec<Arg<T>>);

impl<T: Send + Sync + 'static> ArgTuple for Handles<T> {
    type Values = ();
    fn deps(&self, graph: u32, out: &mut Vec<u32>) -> Result<(), GraphError> {
        for a in &self.0 {
            if let Arg::Node(d) = a {
                out.push(d.checked(graph)?);
            }
        }
        Ok(())
    }
    fn resolve(&self, _inputs: &Inputs<'_>) -> Result<(), TaskError> {
        Ok(())
    }
}

/// A type only used to carry a tuple-typed handle into `Handles` without `Clone` bounds.
struct Marker<T>(PhantomData<fn() -> T>);

/// A tuple of handles given to [`Graph::local`].
pub trait HandleTuple {
    /// The arguments it becomes.
    type Args: ArgTuple;
    /// Converts.
    fn into_args(self) -> Self::Args;
}

/// A closure [`Graph::local`] can call with the values of a tuple of handles.
pub trait LocalFn<V, R>: Send + Sync + 'static {
    /// Calls it.
    fn call(&self, values: V) -> R;
}

/// A result that is a tuple, split into one handle per element by [`Graph::split`].
pub trait Nout: Sized {
    /// One handle per element.
    type Handles;
    /// Adds one element node per element.
    fn split(g: &Graph, d: Delayed<Self>) -> Self::Handles;
}

macro_rules! handle_tuples {
    ($( ($($T:ident $v:ident $i:tt),+) )*) => {$(
        impl<$($T: Clone + Send + Sync + 'static),+> HandleTuple for ($(Delayed<$T>,)+) {
            type Args = ($(Arg<$T>,)+);
            fn into_args(self) -> Self::Args {
                ($(Arg::Node(self.$i),)+)
            }
        }

        impl<Func, Out, $($T),+> LocalFn<($($T,)+), Out> for Func
        where
            Func: Fn($($T),+) -> Out + Send + Sync + 'static,
        {
            fn call(&self, values: ($($T,)+)) -> Out {
                let ($($v,)+) = values;
                self($($v),+)
            }
        }

        impl<$($T: Clone + Send + Sync + 'static),+> Nout for ($($T,)+) {
            type Handles = ($(Delayed<$T>,)+);
            fn split(g: &Graph, d: Delayed<Self>) -> Self::Handles {
                ($(g.item(d, $i, |t: &Self| t.$i.clone()),)+)
            }
        }
    )*};
}

handle_tuples! {
    (A a 0)
    (A a 0, B b 1)
    (A a 0, B b 1, C c 2)
    (A a 0, B b 1, C c 2, D d 3)
    (A a 0, B b 1, C c 2, D d 3, E e 4)
    (A a 0, B b 1, C c 2, D d 3, E e 4, F f 5)
}

impl HandleTuple for () {
    type Args = ();
    fn into_args(self) {}
}

impl<Func, Out> LocalFn<(), Out> for Func
where
    Func: Fn() -> Out + Send + Sync + 'static,
{
    fn call(&self, _values: ()) -> Out {
        self()
    }
}
