//! Workflows: chains, groups, chords and callbacks, carried by the tasks themselves.
//!
//! There is no coordinator. A workflow is sent as its first tasks, each carrying the rest as
//! continuation frames ([`Frame`]); the worker that finishes a task calls [`advance`], which
//! sends whatever comes next. Every task's id is fixed when the workflow is built, and next
//! steps are sent with `enqueue_once`, so a step that runs twice (its worker was killed before
//! the ack) does not start its continuation twice. A group's members meet in a join in the
//! result store (`ResultStore::join`): each member records its result under its index, and
//! whoever records the last one gets the list — again on a repeat, where `enqueue_once` drops
//! the second send. So a chord's callback runs exactly once, with every result, in order.
//!
//! ```
//! use std::time::Duration;
//! use lovage_flow::{chain, chord, group, Canvas};
//! # #[lovage_macros::task(crate = lovage_core)] fn add(a: i64, b: i64) -> i64 { a + b }
//! # #[lovage_macros::task(crate = lovage_core)] fn total(xs: Vec<i64>) -> i64 { xs.iter().sum() }
//! let app = lovage_broker::App::connect("memory://flow-doc").unwrap();
//! // ((1 + 2) + 10), then a chord of three additions summed.
//! let wf = chain([Canvas::from(add::s(1, 2)), add::partial(10).into()]);
//! let sent = lovage_flow::send(&app, &wf).unwrap();
//! let sums = chord([add::s(1, 1), add::s(2, 2), add::s(3, 3)], total::partial());
//! let chord_sent = lovage_flow::send(&app, &sums).unwrap();
//! # let _ = (sent, chord_sent, group::<Canvas>([]));
//! ```

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lovage_broker::ops::Event;
use lovage_broker::{
    Affinity, App, AsyncResult, Backend, BrokerError, Envelope, JoinEntry, ResultRecord, Timestamp,
};
use lovage_core::canvas::Step;
use lovage_core::{Codec, Registry, Signature, TaskError, TaskId, TaskState};
use serde::de::DeserializeOwned;
use serde_json::Value;

pub use lovage_core::canvas::{
    chain, chord, chunks, group, map, starmap, Canvas, Failure, Frame, Node,
};

pub mod after;
pub mod description;
pub mod graph;

pub use after::SubmitAfter;

/// Why a workflow could not be sent or continued.
#[derive(Debug, thiserror::Error)]
pub enum FlowError {
    /// The broker or result store failed.
    #[error(transparent)]
    Broker(#[from] BrokerError),
    /// The workflow cannot run as described.
    #[error("workflow: {0}")]
    Invalid(String),
}

/// The error kind recorded for steps that never ran because an earlier one failed.
pub const UPSTREAM_FAILED: &str = "lovage.UpstreamFailed";
/// The task name on the records of groups and chords (their lists of results, or failure).
pub const GROUP_TASK: &str = "lovage.group";
/// The error kind recorded when a workflow could not be continued.
pub const WORKFLOW_ERROR: &str = "lovage.WorkflowError";

/// Sends `canvas`; returns a handle on its result (and on its members' for a group or chord).
pub fn send(app: &App, canvas: &Canvas) -> Result<WorkflowResult, FlowError> {
    validate(canvas, false)?;
    // Ids are fixed when a workflow is built: sending one twice would mix the two runs.
    if app
        .backend()
        .results()
        .get_blob(canvas.result_id())?
        .is_some()
    {
        return Err(FlowError::Invalid(format!(
            "this workflow (result id {}) was sent already; build a new one to run it again \
             (its task ids are fixed when it is built)",
            canvas.result_id()
        )));
    }
    let ctx = Context {
        backend: app.backend(),
        result_ttl: None,
        worker: None,
        steal_after: None,
        // The first steps' events are published below, after the flush.
        sent_events: false,
    };
    let mut run = Advance::new(&ctx);
    // The workflow itself, under its result id, so `lovage status` can show it as a tree.
    let described = rmp_serde::to_vec_named(canvas)
        .map_err(|e| FlowError::Invalid(format!("encoding the workflow: {e}")))?;
    run.blobs.push((canvas.result_id(), described));
    run.apply(canvas, None, Vec::new())?;
    // Only empty groups can complete a join before anything runs.
    run.settle_joins()?;
    // Fresh ids: a plain send is enough (and faster for a 10,000-member chord).
    let first = run.flush()?;
    // One event write for all of them, when the app publishes `task-sent`.
    app.publish_sent(&first);
    Ok(WorkflowResult {
        app: app.clone(),
        id: canvas.result_id(),
        members: canvas.member_ids(),
    })
}

/// The workflow sent by [`send`] whose result id is `id`, if it is still known.
pub fn load(app: &App, id: TaskId) -> Result<Option<Canvas>, FlowError> {
    let Some(bytes) = app.backend().results().get_blob(id)? else {
        return Ok(None);
    };
    // A blob under a result id that is not a workflow (a chain's steps are a list) is not one.
    Ok(lovage_core::codec::from_msgpack(&bytes).ok())
}

/// A sent workflow.
#[derive(Debug, Clone)]
pub struct WorkflowResult {
    app: App,
    id: TaskId,
    members: Vec<TaskId>,
}

impl WorkflowResult {
    /// The id its result is stored under (see [`Canvas::result_id`]).
    pub fn id(&self) -> TaskId {
        self.id
    }

    /// The result ids of a group's members or a chord's header, in order.
    pub fn member_ids(&self) -> &[TaskId] {
        &self.members
    }

    /// A handle on the workflow's result.
    pub fn result<R: DeserializeOwned>(&self) -> AsyncResult<R> {
        self.app.result(self.id)
    }

    /// Waits for the workflow's result.
    pub fn get<R: DeserializeOwned>(&self, timeout: Duration) -> Result<R, TaskError> {
        self.result().get(timeout)
    }

    /// Handles on each member's result, in order.
    pub fn members<R: DeserializeOwned>(&self) -> Vec<AsyncResult<R>> {
        self.members.iter().map(|id| self.app.result(*id)).collect()
    }
}

/// Where a worker continues workflows.
pub struct Context<'a> {
    /// The broker for next steps and the result store for joins and records.
    pub backend: &'a Backend,
    /// How long records written here (group results, failures) are kept.
    pub result_ttl: Option<Duration>,
    /// The worker, for records.
    pub worker: Option<&'a str>,
    /// Publish a `task-sent` event for each step [`advance`] and [`advance_many`] send, as
    /// [`App::sent_events`](lovage_broker::App::sent_events) does for a send (a worker, which
    /// sends its steps itself after [`plan_many`], publishes them with its batch's events).
    pub sent_events: bool,
    /// Queue a graph node whose inputs are values kept by workers (the data plane) for the
    /// worker holding most of their bytes, which takes it at once; any other worker may steal
    /// it after this delay ([`Affinity`](lovage_broker::Affinity)). `None`: every node goes to
    /// the shared queue.
    pub steal_after: Option<Duration>,
}

/// How a task of a workflow ended.
#[derive(Clone, Copy)]
pub enum Finished<'a> {
    /// It returned this value (encoded with the envelope's codec).
    Success(&'a [u8]),
    /// It failed for good, or was revoked or expired.
    Failure(&'a TaskError),
}

/// Takes the workflow of `env` one step further and sends what follows at once, for a caller
/// that settles a task by hand (tools, tests) once the task's own result is stored; it is
/// idempotent, so repeating it after a crash loses nothing. The worker uses [`plan_many`]
/// instead and sends the next steps together with its completions.
pub fn advance(
    ctx: &Context<'_>,
    env: &Envelope,
    finished: Finished<'_>,
) -> Result<(), BrokerError> {
    advance_many(ctx, &[(env, finished)])
}

/// [`advance`] for a batch of finished tasks: members of the same group meet in one join
/// call, and everything that follows is sent in one batch.
pub fn advance_many(
    ctx: &Context<'_>,
    finished: &[(&Envelope, Finished<'_>)],
) -> Result<(), BrokerError> {
    let Planned { next, consumed } = plan(ctx, finished)?;
    if next.is_empty() {
        return after::consumed(ctx.backend, &consumed);
    }
    ctx.backend.broker().enqueue_once(&next)?;
    after::consumed(ctx.backend, &consumed)?;
    if ctx.sent_events {
        // As a send does: the tasks are sent, so a broker that fails here loses only the
        // events (logged). One write for the batch.
        let events: Vec<Event> = next.iter().map(Event::sent).collect();
        if let Err(e) = ctx.backend.events().publish(&events) {
            tracing::warn!(error = %e, count = events.len(), "could not publish task-sent events");
        }
    }
    Ok(())
}

/// What follows a batch of finished tasks, worked out by [`plan`].
#[derive(Debug, Default)]
pub struct Planned {
    /// The next steps, for the caller to send with `enqueue_once`.
    pub next: Vec<Envelope>,
    /// The waiting lists (see `after`) whose calls these steps serve: once the steps are
    /// sent, [`after::consumed`] empties them (not before: a crash in between would lose
    /// the calls).
    pub consumed: Vec<String>,
}

/// [`plan`]'s next steps alone; the waiting lists it consumed are left for their time to
/// live (a caller that sends the steps should use [`plan`] and empty them).
pub fn plan_many(
    ctx: &Context<'_>,
    finished: &[(&Envelope, Finished<'_>)],
) -> Result<Vec<Envelope>, BrokerError> {
    plan(ctx, finished).map(|p| p.next)
}

/// [`advance_many`] without the sends: stores what the next steps need (long chains, group
/// results, failures) and records joins, then returns the next steps for the caller to send
/// with `enqueue_once` — a worker sends them with its acks
/// ([`lovage_broker::Broker::complete_and_send`]) — and the waiting lists to empty after.
pub fn plan(
    ctx: &Context<'_>,
    finished: &[(&Envelope, Finished<'_>)],
) -> Result<Planned, BrokerError> {
    let mut run = Advance::new(ctx);
    // The waiting lists of the client tasks that succeeded, in one read (their records are
    // stored already: see `after` for why that order matters).
    let awaited: Vec<TaskId> = finished
        .iter()
        .filter(|(env, how)| {
            matches!(how, Finished::Success(_)) && env.flow.contains(&Frame::Awaited)
        })
        .map(|(env, _)| env.id)
        .collect();
    if !awaited.is_empty() {
        let dicts: Vec<String> = awaited.iter().map(|&id| after::waiting_dict(id)).collect();
        let lists = ctx.backend.shared().dict_entries_many(&dicts)?;
        run.consumed.extend(
            dicts
                .into_iter()
                .zip(&lists)
                .filter(|(_, l)| !l.is_empty())
                .map(|(d, _)| d),
        );
        run.waiting = awaited.into_iter().zip(lists).collect();
    }
    for (env, how) in finished {
        if env.flow.is_empty() {
            continue;
        }
        run.origin = Some(failure_of(env, TaskError::new(WORKFLOW_ERROR, "")));
        let outcome = match how {
            Finished::Success(bytes) => env
                .codec
                .decode::<Value>(bytes, "task result")
                .map_err(|e| FlowError::Invalid(e.to_string()))
                .and_then(|value| run.resume(value, env.flow.clone())),
            Finished::Failure(error) => {
                run.fail(&failure_of(env, (*error).clone()), env.flow.clone());
                Ok(())
            }
        };
        run.absorb(outcome, env.flow.clone())?;
    }
    run.settle_joins()?;
    run.store()?;
    // Scope counts fall last, after everything the tasks' outcomes lead to is recorded and
    // before their leases are completed: a crash in between delivers them again, and a
    // fall is idempotent.
    for (env, how) in finished {
        for frame in &env.flow {
            if let Frame::Spawned {
                scope: Some(scope), ..
            } = frame
            {
                let ok = matches!(how, Finished::Success(_));
                lovage_broker::scope::fall(ctx.backend, *scope, env.id, ok)?;
            }
        }
    }
    Ok(Planned {
        next: run.out,
        consumed: run.consumed,
    })
}

fn failure_of(env: &Envelope, error: TaskError) -> Failure {
    Failure {
        task_id: env.id,
        task: env.task.clone(),
        error,
    }
}

/// How many readers free a kept result of `env` (0: not counted): for a task graph's node,
/// [`graph::kept_readers`]; for anything else 0. Reads the stored graph once per process.
pub fn kept_readers(backend: &Backend, env: &Envelope) -> u32 {
    node_graph(backend, env).map_or(0, |(g, node)| graph::kept_readers(&g, node))
}

/// Whether `env`'s result is read element by element: it is a task graph's node and some
/// of its dependents take one element of it (`getitem`), so a kept copy is worth indexing
/// per element ([`lovage_broker::ResultRef::items`]).
pub fn elements_read(backend: &Backend, env: &Envelope) -> bool {
    node_graph(backend, env).is_some_and(|(g, node)| graph::elements_read(&g, node))
}

/// The stored graph `env` is a node of, and the node; read once per process.
fn node_graph(backend: &Backend, env: &Envelope) -> Option<(Arc<graph::StoredGraph>, u32)> {
    let [Frame::Graph { graph: id, node }] = env.flow.as_slice() else {
        return None;
    };
    let g = match graph::cached(*id) {
        Some(g) => g,
        None => {
            let bytes = backend.results().get_blob(*id).ok()??;
            let g = Arc::new(graph::StoredGraph::decode(&bytes).ok()?);
            graph::remember(*id, g.clone());
            g
        }
    };
    Some((g, *node))
}

/// Checks, before anything is sent, that every step that receives a previous result can take
/// it as its first positional argument.
fn validate(canvas: &Canvas, gets_input: bool) -> Result<(), FlowError> {
    for cb in &canvas.on_error {
        validate(cb, true)?;
    }
    match &canvas.node {
        Node::Task(step) => {
            if gets_input && !step.immutable {
                let args: Value = step
                    .codec
                    .decode(&step.args, "task arguments")
                    .map_err(|e| FlowError::Invalid(e.to_string()))?;
                if !args.is_array() {
                    return Err(FlowError::Invalid(format!(
                        "task {} [{}] receives the previous result as its first argument, but its \
                         arguments are given by name; pass them positionally or make it immutable",
                        step.task, step.id
                    )));
                }
            }
            step.link.iter().try_for_each(|c| validate(c, true))
        }
        Node::Chain(items) => items
            .iter()
            .enumerate()
            .try_for_each(|(i, c)| validate(c, gets_input || i > 0)),
        Node::Group { members, .. } => members.iter().try_for_each(|c| validate(c, gets_input)),
        Node::Chord { header, body, .. } => {
            header.iter().try_for_each(|c| validate(c, gets_input))?;
            validate(body, true)
        }
    }
}

/// One continuation being worked out: the envelopes to send and the records to store.
struct Advance<'a> {
    ctx: &'a Context<'a>,
    out: Vec<Envelope>,
    records: Vec<ResultRecord>,
    /// Long chains to store before anything refers to them.
    blobs: Vec<(TaskId, Vec<u8>)>,
    /// Members waiting to record their results in their joins (one call for all).
    pending: Vec<PendingJoin>,
    /// Graph nodes' values waiting to be recorded in their dependents' joins.
    graph_pending: Vec<GraphJoin>,
    /// The task whose continuation is being worked out, to blame if it cannot go on.
    origin: Option<Failure>,
    /// Client tasks that failed for good, whose waiting calls fail too (see `after`): (id,
    /// key named in the error, the error).
    awaited_failed: Vec<(TaskId, String, TaskError)>,
    /// Waiting lists of this batch's finished client tasks, read at once (see `after`).
    waiting: HashMap<TaskId, lovage_broker::DictEntries>,
    /// The waiting lists read with calls in them, to empty once what follows is sent.
    consumed: Vec<String>,
}

/// A member's result on its way to its join, and what follows the join.
struct PendingJoin {
    id: TaskId,
    index: u32,
    size: u32,
    value: Vec<u8>,
    body: Option<Box<Canvas>>,
    stack: Vec<Frame>,
    origin: Option<Failure>,
}

/// A graph node's value on its way to a dependent's join.
struct GraphJoin {
    graph: TaskId,
    /// The dependent.
    node: u32,
    id: TaskId,
    index: u32,
    size: u32,
    value: Vec<u8>,
}

/// Chains longer than this travel as a blob reference rather than inline.
const INLINE_CHAIN: usize = 4;

/// Long chains this process stored or read lately, by blob key: a chain of n steps is read
/// from the store once per worker, not once per step.
static CHAINS: Mutex<Option<HashMap<TaskId, Arc<Vec<Canvas>>>>> = Mutex::new(None);
/// Chains kept in [`CHAINS`]; past this the cache starts over.
const CHAINS_KEPT: usize = 256;

fn remember_chain(blob: TaskId, steps: Arc<Vec<Canvas>>) {
    let mut cache = CHAINS.lock().unwrap_or_else(|p| p.into_inner());
    let map = cache.get_or_insert_with(HashMap::new);
    if map.len() >= CHAINS_KEPT {
        map.clear();
    }
    map.insert(blob, steps);
}

fn encode_chain(steps: &[Canvas]) -> Result<Vec<u8>, FlowError> {
    rmp_serde::to_vec_named(steps).map_err(|e| FlowError::Invalid(format!("encoding a chain: {e}")))
}

impl<'a> Advance<'a> {
    fn new(ctx: &'a Context<'a>) -> Self {
        Advance {
            ctx,
            out: Vec::new(),
            records: Vec::new(),
            blobs: Vec::new(),
            pending: Vec::new(),
            graph_pending: Vec::new(),
            origin: None,
            awaited_failed: Vec::new(),
            waiting: HashMap::new(),
            consumed: Vec::new(),
        }
    }

    /// A broker error ends the call (to be retried); a workflow that cannot go on is failed
    /// from `stack` on, blaming the current origin task.
    fn absorb(
        &mut self,
        outcome: Result<(), FlowError>,
        stack: Vec<Frame>,
    ) -> Result<(), BrokerError> {
        match outcome {
            Ok(()) => Ok(()),
            Err(FlowError::Broker(e)) => Err(e),
            Err(FlowError::Invalid(reason)) => {
                let mut failure = self.origin.clone().unwrap_or_else(|| Failure {
                    task_id: TaskId::nil(),
                    task: "workflow".into(),
                    error: TaskError::new(WORKFLOW_ERROR, ""),
                });
                tracing::warn!(task_id = %failure.task_id, task = %failure.task, %reason, "workflow cannot continue");
                failure.error = TaskError::new(WORKFLOW_ERROR, reason);
                self.fail(&failure, stack);
                Ok(())
            }
        }
    }

    /// Records the pending members in their joins, one call per round, and goes on past the
    /// joins they complete (which may meet further joins: another round).
    fn settle_joins(&mut self) -> Result<(), BrokerError> {
        self.settle_awaited_failures()?;
        while !self.pending.is_empty() || !self.graph_pending.is_empty() {
            self.settle_graph_joins()?;
            let pending = std::mem::take(&mut self.pending);
            if pending.is_empty() {
                continue;
            }
            let entries: Vec<JoinEntry<'_>> = pending
                .iter()
                .map(|p| JoinEntry {
                    id: p.id,
                    index: p.index,
                    size: p.size,
                    value: &p.value,
                })
                .collect();
            let answers = self.ctx.backend.results().join(&entries)?;
            for (p, answer) in pending.into_iter().zip(answers) {
                let Some(all) = answer else { continue }; // others still running
                self.origin = p.origin.clone();
                let outcome = all
                    .iter()
                    .map(|v| serde_json::from_slice(v))
                    .collect::<Result<Vec<Value>, _>>()
                    .map_err(|e| FlowError::Invalid(format!("a join's member value: {e}")))
                    .and_then(|values| {
                        self.joined(p.id, values, p.body.as_deref(), p.stack.clone())
                    });
                self.absorb(outcome, p.stack)?;
            }
        }
        // A call that could not be sent above (`graph_broken`) fails its waiting calls too.
        self.settle_awaited_failures()
    }

    /// The stored graph `id` (read once per process).
    fn stored_graph(&self, id: TaskId) -> Result<Arc<graph::StoredGraph>, FlowError> {
        if let Some(g) = graph::cached(id) {
            return Ok(g);
        }
        let bytes = self.ctx.backend.results().get_blob(id)?.ok_or_else(|| {
            FlowError::Invalid(format!("the task graph {id} is gone from the result store"))
        })?;
        let g = Arc::new(graph::StoredGraph::decode(&bytes).map_err(FlowError::Invalid)?);
        graph::remember(id, g.clone());
        Ok(g)
    }

    /// Input `index` of graph node `d` is `value`: it goes to the node's join, or (when it
    /// is the node's only input) the node is ready.
    fn graph_input(
        &mut self,
        graph: TaskId,
        d: u32,
        index: u32,
        value: &Value,
    ) -> Result<(), FlowError> {
        let g = self.stored_graph(graph)?;
        let node = g
            .nodes
            .get(d as usize)
            .ok_or_else(|| FlowError::Invalid(format!("graph {graph} has no node {d}")))?;
        if node.inputs <= 1 {
            self.graph_ready(&g, graph, d, vec![value.clone()]);
            return Ok(());
        }
        let encoded = serde_json::to_vec(value).map_err(|e| FlowError::Invalid(e.to_string()))?;
        self.graph_pending.push(GraphJoin {
            graph,
            node: d,
            id: node.id,
            index,
            size: node.inputs,
            value: encoded,
        });
        Ok(())
    }

    /// Client task `id` produced `value`: the calls waiting for it get it (see `after`).
    fn awaited_done(&mut self, id: TaskId, value: &Value) -> Result<(), FlowError> {
        let waiting = match self.waiting.remove(&id) {
            Some(w) => w,
            None => self.read_waiting(id)?,
        };
        for (entry, _) in waiting {
            let Some((graph, d, index)) = after::decode_entry(&entry) else {
                tracing::warn!(task_id = %id, "an unreadable entry among the calls waiting for a task");
                continue;
            };
            match self.graph_input(graph, d, index, value) {
                Err(FlowError::Invalid(reason)) => {
                    // Its stored form expired or is wrong: that call cannot go on, the others do.
                    tracing::warn!(task_id = %id, %graph, %reason, "a call waiting for a task cannot continue");
                }
                other => other?,
            }
        }
        Ok(())
    }

    /// The calls waiting for client task `id`, noting the list as consumed when it has any.
    fn read_waiting(&mut self, id: TaskId) -> Result<lovage_broker::DictEntries, BrokerError> {
        let dict = after::waiting_dict(id);
        let waiting = self.ctx.backend.shared().dict_entries(&dict)?;
        if !waiting.is_empty() {
            self.consumed.push(dict);
        }
        Ok(waiting)
    }

    /// The calls waiting for the failed client tasks in `awaited_failed` fail, and so do the
    /// calls waiting for those, transitively. Each level's failure records are stored before
    /// its waiting lists are read: a call registered meanwhile sees the record and fails
    /// itself (see `after`).
    fn settle_awaited_failures(&mut self) -> Result<(), BrokerError> {
        let mut seen = std::collections::HashSet::new();
        while !self.awaited_failed.is_empty() {
            let level = std::mem::take(&mut self.awaited_failed);
            let mut records = Vec::new();
            let mut next = Vec::new();
            for (id, key, error) in level {
                if !seen.insert(id) {
                    continue;
                }
                let waiting = self.read_waiting(id)?;
                let upstream = graph::dependency_failed(&key, &error);
                for (entry, _) in waiting {
                    let Some((graph_id, d, _)) = after::decode_entry(&entry) else {
                        continue;
                    };
                    let g = match self.stored_graph(graph_id) {
                        Ok(g) => g,
                        Err(FlowError::Broker(e)) => return Err(e),
                        Err(FlowError::Invalid(reason)) => {
                            tracing::warn!(%graph_id, %reason, "a call waiting for a failed task is unknown");
                            continue;
                        }
                    };
                    let mut hit = vec![d];
                    hit.extend(g.descendants(d));
                    for n in hit {
                        let Some(node) = g.nodes.get(n as usize) else {
                            continue;
                        };
                        records.push(self.record(
                            node.id,
                            g.name_of(n),
                            TaskState::Failure,
                            None,
                            Some(upstream.clone()),
                        ));
                        if node.awaited {
                            next.push((node.id, key.clone(), error.clone()));
                        }
                    }
                }
            }
            if !records.is_empty() {
                self.ctx.backend.results().store(&records)?;
            }
            self.awaited_failed = next;
        }
        Ok(())
    }

    /// Graph node `node` produced `value`: each dependent gets it, in its join or (when it
    /// is the dependent's only input) directly.
    fn graph_finished(&mut self, graph: TaskId, node: u32, value: Value) -> Result<(), FlowError> {
        let g = self.stored_graph(graph)?;
        let stored = g
            .nodes
            .get(node as usize)
            .ok_or_else(|| FlowError::Invalid(format!("graph {graph} has no node {node}")))?;
        let mut encoded = None;
        for &(d, index) in &stored.next {
            let dependent = g
                .nodes
                .get(d as usize)
                .ok_or_else(|| FlowError::Invalid(format!("graph {graph} has no node {d}")))?;
            if dependent.inputs <= 1 {
                self.graph_ready(&g, graph, d, vec![value.clone()]);
                continue;
            }
            if encoded.is_none() {
                encoded = Some(
                    serde_json::to_vec(&value).map_err(|e| FlowError::Invalid(e.to_string()))?,
                );
            }
            self.graph_pending.push(GraphJoin {
                graph,
                node: d,
                id: dependent.id,
                index,
                size: dependent.inputs,
                value: encoded.clone().unwrap_or_default(),
            });
        }
        Ok(())
    }

    /// Records the graph values waiting for joins, in one call; sends (or evaluates) the
    /// dependents whose inputs are all in.
    fn settle_graph_joins(&mut self) -> Result<(), BrokerError> {
        let pending = std::mem::take(&mut self.graph_pending);
        if pending.is_empty() {
            return Ok(());
        }
        let entries: Vec<JoinEntry<'_>> = pending
            .iter()
            .map(|p| JoinEntry {
                id: p.id,
                index: p.index,
                size: p.size,
                value: &p.value,
            })
            .collect();
        let answers = self.ctx.backend.results().join(&entries)?;
        for (p, answer) in pending.into_iter().zip(answers) {
            let Some(all) = answer else { continue };
            let g = match self.stored_graph(p.graph) {
                Ok(g) => g,
                Err(FlowError::Broker(e)) => return Err(e),
                Err(FlowError::Invalid(reason)) => {
                    tracing::warn!(graph = %p.graph, %reason, "a graph cannot continue");
                    continue;
                }
            };
            match all
                .iter()
                .map(|v| serde_json::from_slice(v))
                .collect::<Result<Vec<Value>, _>>()
            {
                Ok(values) => self.graph_ready(&g, p.graph, p.node, values),
                Err(e) => self.graph_broken(&g, p.node, format!("a joined input: {e}")),
            }
        }
        Ok(())
    }

    /// Every input of graph node `d` is in: send its task, or evaluate it here and go on.
    fn graph_ready(&mut self, g: &graph::StoredGraph, id: TaskId, d: u32, inputs: Vec<Value>) {
        let Some(node) = g.nodes.get(d as usize) else {
            return;
        };
        // Where its inputs are (kept values), so it runs there: only a task reads them.
        let affinity = match (&node.op, self.ctx.steal_after) {
            (graph::StoredOp::Task { .. }, Some(delay)) => {
                lovage_broker::dataref::heaviest_holder(&inputs)
                    .map(|(worker, _)| Affinity::for_worker(worker, delay))
            }
            _ => None,
        };
        match &node.op {
            graph::StoredOp::Task { args, slots, .. } if !node.fused.is_empty() => {
                // A fused chain: one message for all its links, under its last node's id.
                let tail = node.fused[node.fused.len() - 1];
                let sig = graph::fill_args(args, slots, inputs)
                    .and_then(|args| graph::chain_signature(g, d, args));
                match (sig, g.nodes.get(tail as usize)) {
                    (Ok(sig), Some(last)) => {
                        let mut env = Envelope::from_signature(sig);
                        env.id = last.id;
                        env.flow = vec![Frame::Graph {
                            graph: id,
                            node: tail,
                        }];
                        env.affinity = affinity;
                        self.out.push(env);
                    }
                    (Err(reason), _) => self.graph_broken(g, d, format!("its arguments: {reason}")),
                    (_, None) => self.graph_broken(
                        g,
                        d,
                        format!("its chain ends at node {tail}, which the graph has not"),
                    ),
                }
            }
            graph::StoredOp::Task {
                task,
                codec,
                args,
                slots,
                options,
            } => {
                let sig = graph::fill_args(args, slots, inputs).and_then(|args| {
                    let bytes = codec
                        .encode(&args, "task arguments")
                        .map_err(|e| e.to_string())?;
                    graph::node_signature(task, bytes, *codec, options.as_deref())
                });
                match sig {
                    Ok(sig) => {
                        let mut env = Envelope::from_signature(sig);
                        env.id = node.id;
                        env.flow = vec![Frame::Graph { graph: id, node: d }];
                        if node.awaited {
                            env.flow.push(Frame::Awaited);
                        }
                        env.affinity = affinity;
                        self.out.push(env);
                    }
                    Err(reason) => self.graph_broken(g, d, format!("its arguments: {reason}")),
                }
            }
            op => match graph::kept_element(op, &inputs)
                .map_or_else(|| graph::evaluate(op, graph::fetched_for(op, inputs)), Ok)
            {
                Ok(value) => {
                    let bytes = serde_json::to_vec(&value).ok();
                    let name = g.name_of(d).to_owned();
                    self.records
                        .push(self.record(node.id, &name, TaskState::Success, bytes, None));
                    if let Err(e) = self.graph_finished(id, d, value) {
                        self.graph_broken(g, d, e.to_string());
                    }
                }
                Err(reason) => self.graph_broken(g, d, reason),
            },
        }
    }

    /// Graph node `d` cannot go on (its stored form is wrong): it fails, and so does every
    /// node downstream.
    fn graph_broken(&mut self, g: &graph::StoredGraph, d: u32, reason: String) {
        let Some(node) = g.nodes.get(d as usize) else {
            return;
        };
        tracing::warn!(node = %node.key, %reason, "a graph node cannot run");
        let error = TaskError::new(WORKFLOW_ERROR, format!("graph node {}: {reason}", node.key));
        let name = g.name_of(d).to_owned();
        self.failed(node.id, &name, error.clone());
        if node.awaited {
            self.awaited_failed
                .push((node.id, node.key.clone(), error.clone()));
        }
        self.graph_descendants_failed(g, d, &node.key, &error);
    }

    /// Graph node `node`'s task failed for good: every node downstream is marked failed.
    fn graph_node_failed(&mut self, graph: TaskId, node: u32, failure: &Failure) {
        match self.stored_graph(graph) {
            Ok(g)
                if failure.task == graph::CHAIN_TASK
                    && graph::chain_failure(&failure.error).is_some() =>
            {
                // A fused chain ending at `node` failed at one of its links: that link is
                // recorded with its own error and every node after it (the rest of the
                // chain, then what follows it) as not run, as if each had been its own
                // message. The links before it ran, but their values were never stored.
                let Some(f) = graph::chain_failure(&failure.error) else {
                    return;
                };
                if let Some(link) = g.nodes.get(f.node as usize) {
                    let name = g.name_of(f.node).to_owned();
                    self.failed(link.id, &name, f.error.clone());
                    self.graph_descendants_failed(&g, f.node, &f.key, &f.error);
                }
            }
            Ok(g) => {
                let key = g
                    .nodes
                    .get(node as usize)
                    .map_or_else(|| failure.task.clone(), |n| n.key.clone());
                self.graph_descendants_failed(&g, node, &key, &failure.error);
            }
            Err(e) => {
                tracing::warn!(graph = %graph, error = %e, "the nodes after a failed one are unknown")
            }
        }
    }

    fn graph_descendants_failed(
        &mut self,
        g: &graph::StoredGraph,
        node: u32,
        key: &str,
        error: &TaskError,
    ) {
        let upstream = graph::dependency_failed(key, error);
        for d in g.descendants(node) {
            let id = g.nodes[d as usize].id;
            let name = g.name_of(d).to_owned();
            self.failed(id, &name, upstream.clone());
        }
    }

    /// The steps of the long chain stored as `blob`.
    fn chain(&self, blob: TaskId) -> Result<Arc<Vec<Canvas>>, FlowError> {
        if let Some(steps) = CHAINS
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .and_then(|m| m.get(&blob).cloned())
        {
            return Ok(steps);
        }
        let bytes = self.ctx.backend.results().get_blob(blob)?.ok_or_else(|| {
            FlowError::Invalid(format!(
                "the rest of the chain (blob {blob}) is gone from the result store"
            ))
        })?;
        let steps: Vec<Canvas> = lovage_core::codec::from_msgpack(&bytes)
            .map_err(|e| FlowError::Invalid(format!("the stored chain {blob}: {e}")))?;
        let steps = Arc::new(steps);
        remember_chain(blob, steps.clone());
        Ok(steps)
    }

    /// Long chains first, then records (a group's list, failures of steps that will not
    /// run): before any send that refers to them.
    fn store(&mut self) -> Result<(), BrokerError> {
        for (key, bytes) in std::mem::take(&mut self.blobs) {
            self.ctx.backend.results().put_blob(key, &bytes)?;
        }
        if !self.records.is_empty() {
            self.ctx
                .backend
                .results()
                .store(&std::mem::take(&mut self.records))?;
        }
        Ok(())
    }

    /// Stores, then sends a new workflow's first steps (fresh ids: a plain send); returns them.
    fn flush(mut self) -> Result<Vec<Envelope>, BrokerError> {
        self.store()?;
        if !self.out.is_empty() {
            self.ctx.backend.broker().enqueue(&self.out)?;
        }
        Ok(self.out)
    }

    /// Starts `canvas` with `input` (the previous result), `stack` being what follows it.
    fn apply(
        &mut self,
        canvas: &Canvas,
        input: Option<&Value>,
        mut stack: Vec<Frame>,
    ) -> Result<(), FlowError> {
        if !canvas.on_error.is_empty() {
            stack.push(Frame::OnError(canvas.on_error.clone()));
        }
        match &canvas.node {
            Node::Task(step) => {
                if !step.link.is_empty() {
                    stack.push(Frame::Link(step.link.clone()));
                }
                let env = self.envelope(step, input, stack)?;
                self.out.push(env);
                Ok(())
            }
            Node::Chain(items) => match items.split_first() {
                None => self.resume(input.cloned().unwrap_or(Value::Null), stack),
                Some((first, rest)) => {
                    if rest.len() > INLINE_CHAIN {
                        let blob = TaskId::new();
                        let bytes = encode_chain(rest)?;
                        self.blobs.push((blob, bytes));
                        remember_chain(blob, Arc::new(rest.to_vec()));
                        stack.push(Frame::ChainRef { blob, next: 0 });
                    } else if !rest.is_empty() {
                        stack.push(Frame::Chain(rest.to_vec()));
                    }
                    self.apply(first, input, stack)
                }
            },
            Node::Group { id, members } => self.fan_out(*id, members, None, input, stack),
            Node::Chord { id, header, body } => self.fan_out(*id, header, Some(body), input, stack),
        }
    }

    fn fan_out(
        &mut self,
        id: TaskId,
        members: &[Canvas],
        body: Option<&Canvas>,
        input: Option<&Value>,
        stack: Vec<Frame>,
    ) -> Result<(), FlowError> {
        if members.is_empty() {
            return self.joined(id, Vec::new(), body, stack);
        }
        let size = u32::try_from(members.len())
            .map_err(|_| FlowError::Invalid("a group of more than 2³² members".into()))?;
        for (index, member) in members.iter().enumerate() {
            let mut frames = stack.clone();
            frames.push(Frame::Join {
                id,
                index: index as u32,
                size,
                body: body.map(|b| Box::new(b.clone())),
            });
            self.apply(member, input, frames)?;
        }
        Ok(())
    }

    /// Every member of the group `id` is in: store the list, then run the body or go on.
    fn joined(
        &mut self,
        id: TaskId,
        values: Vec<Value>,
        body: Option<&Canvas>,
        stack: Vec<Frame>,
    ) -> Result<(), FlowError> {
        let list = Value::Array(values);
        let bytes = serde_json::to_vec(&list).map_err(|e| FlowError::Invalid(e.to_string()))?;
        self.records
            .push(self.record(id, GROUP_TASK, TaskState::Success, Some(bytes), None));
        match body {
            Some(body) => self.apply(body, Some(&list), stack),
            None => self.resume(list, stack),
        }
    }

    /// A task (or a whole sub-workflow) produced `value`; continue with the frames in `stack`.
    fn resume(&mut self, value: Value, mut stack: Vec<Frame>) -> Result<(), FlowError> {
        while let Some(frame) = stack.pop() {
            match frame {
                Frame::Link(callbacks) => {
                    for cb in &callbacks {
                        self.apply(cb, Some(&value), Vec::new())?;
                    }
                }
                Frame::OnError(_) => {}
                Frame::Chain(mut rest) => {
                    if rest.is_empty() {
                        continue;
                    }
                    let next = rest.remove(0);
                    if !rest.is_empty() {
                        stack.push(Frame::Chain(rest));
                    }
                    return self.apply(&next, Some(&value), stack);
                }
                Frame::ChainRef { blob, next } => {
                    let steps = self.chain(blob)?;
                    let Some(step) = steps.get(next as usize) else {
                        continue;
                    };
                    if (next as usize) + 1 < steps.len() {
                        stack.push(Frame::ChainRef {
                            blob,
                            next: next + 1,
                        });
                    }
                    return self.apply(step, Some(&value), stack);
                }
                Frame::Graph { graph, node } => {
                    self.graph_finished(graph, node, value.clone())?;
                }
                Frame::Awaited => {
                    if let Some(origin) = &self.origin {
                        let id = origin.task_id;
                        self.awaited_done(id, &value)?;
                    }
                }
                // Its scope's count falls in `plan_many`, once the batch is settled.
                Frame::Spawned { .. } => {}
                Frame::Join {
                    id,
                    index,
                    size,
                    body,
                } => {
                    let value = serde_json::to_vec(&value)
                        .map_err(|e| FlowError::Invalid(e.to_string()))?;
                    self.pending.push(PendingJoin {
                        id,
                        index,
                        size,
                        value,
                        body,
                        stack,
                        origin: self.origin.clone(),
                    });
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// A task failed for good: what would have followed is marked failed, and the error
    /// callbacks of every enclosing canvas run once.
    fn fail(&mut self, failure: &Failure, mut stack: Vec<Frame>) {
        let upstream = TaskError::new(
            UPSTREAM_FAILED,
            format!(
                "not run: task {} [{}] failed",
                failure.task, failure.task_id
            ),
        )
        .with_cause(failure.error.to_string());
        let info = serde_json::to_value(failure).unwrap_or(Value::Null);
        while let Some(frame) = stack.pop() {
            match frame {
                Frame::Link(callbacks) => {
                    for cb in &callbacks {
                        self.fail_all(cb, &upstream);
                    }
                }
                Frame::OnError(callbacks) => {
                    for cb in &callbacks {
                        if let Err(e) = self.apply(cb, Some(&info), Vec::new()) {
                            tracing::warn!(error = %e, "an error callback could not be sent");
                        }
                    }
                }
                Frame::Chain(rest) => {
                    for c in &rest {
                        self.fail_all(c, &upstream);
                    }
                }
                Frame::ChainRef { blob, next } => match self.chain(blob) {
                    Ok(steps) => {
                        for c in steps.iter().skip(next as usize) {
                            self.fail_all(c, &upstream);
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "the rest of a failed chain is unknown"),
                },
                Frame::Graph { graph, node } => self.graph_node_failed(graph, node, failure),
                Frame::Awaited => self.awaited_failed.push((
                    failure.task_id,
                    after::task_key(&failure.task, failure.task_id),
                    failure.error.clone(),
                )),
                Frame::Spawned { .. } => {}
                Frame::Join { id, body, .. } => {
                    self.failed(id, GROUP_TASK, upstream.clone());
                    if let Some(body) = body {
                        self.fail_all(&body, &upstream);
                    }
                }
            }
        }
    }

    /// Marks every step of `canvas` failed (its callbacks aside: they belong to it).
    fn fail_all(&mut self, canvas: &Canvas, error: &TaskError) {
        match &canvas.node {
            Node::Task(step) => {
                self.failed(step.id, &step.task, error.clone());
            }
            Node::Chain(items) => items.iter().for_each(|c| self.fail_all(c, error)),
            Node::Group { id, members } => {
                self.failed(*id, GROUP_TASK, error.clone());
                members.iter().for_each(|c| self.fail_all(c, error));
            }
            Node::Chord { id, header, body } => {
                self.failed(*id, GROUP_TASK, error.clone());
                header.iter().for_each(|c| self.fail_all(c, error));
                self.fail_all(body, error);
            }
        }
    }

    /// Records `id` FAILED with `error` (a step that will not run, a failed group).
    fn failed(&mut self, id: TaskId, task: &str, error: TaskError) {
        let record = self.record(id, task, TaskState::Failure, None, Some(error));
        self.records.push(record);
    }

    fn record(
        &self,
        id: TaskId,
        task: &str,
        state: TaskState,
        value: Option<Vec<u8>>,
        error: Option<TaskError>,
    ) -> ResultRecord {
        let now = Timestamp::now();
        ResultRecord {
            id,
            task: task.to_owned(),
            state,
            value,
            codec: Codec::Json,
            error,
            attempts: 0,
            worker: self.ctx.worker.map(str::to_owned),
            started: None,
            updated: now,
            expires: self.ctx.result_ttl.map(|t| now + t),
        }
    }

    /// The envelope of one step: its id fixed, the previous result first among its
    /// arguments (unless immutable), its registered options under its own, `flow` after it.
    fn envelope(
        &self,
        step: &Step,
        input: Option<&Value>,
        flow: Vec<Frame>,
    ) -> Result<Envelope, FlowError> {
        let args = match input {
            Some(value) if !step.immutable => prepend(step, value)?,
            _ => step.args.clone(),
        };
        let mut sig = Signature::from_encoded(step.task.clone(), args, step.codec);
        sig.options = step.options.clone();
        if let Ok(entry) = Registry::global().get(&sig.task) {
            sig.options = sig.options.merged_over(&(entry.options)());
        }
        let mut env = Envelope::from_signature(sig);
        env.id = step.id;
        env.flow = flow;
        Ok(env)
    }
}

/// `step`'s arguments with `value` in front.
fn prepend(step: &Step, value: &Value) -> Result<Vec<u8>, FlowError> {
    let invalid = |e: lovage_core::CodecError| FlowError::Invalid(e.to_string());
    let mut args: Value = step
        .codec
        .decode(&step.args, "task arguments")
        .map_err(invalid)?;
    let Some(list) = args.as_array_mut() else {
        return Err(FlowError::Invalid(format!(
            "task {} [{}] cannot take the previous result: its arguments are given by name",
            step.task, step.id
        )));
    };
    list.insert(0, value.clone());
    step.codec.encode(&args, "task arguments").map_err(invalid)
}
