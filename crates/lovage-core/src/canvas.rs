//! Workflows as data: chains, groups and chords of task calls, and the continuation a task
//! carries so that whichever worker runs it can take the workflow one step further.
//!
//! Every task in a workflow gets its id when the workflow is built, so results can be waited
//! for before anything runs, and a step that runs twice (a worker killed before its ack) sends
//! its continuation with the same ids: brokers drop the second send.

use serde::{Deserialize, Serialize};

use crate::codec::{Codec, CodecError};
use crate::id::TaskId;
use crate::options::TaskOptions;
use crate::signature::{de_args, ser_args, Signature, TypedSignature};

/// One task call in a workflow, with its id fixed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    /// The id its result is stored under.
    pub id: TaskId,
    /// Registered task name.
    pub task: String,
    /// Codec of `args` and of the result.
    pub codec: Codec,
    /// Encoded arguments (a sequence, or a map by parameter name when immutable).
    #[serde(serialize_with = "ser_args", deserialize_with = "de_args")]
    pub args: Vec<u8>,
    /// Options of this call.
    #[serde(default)]
    pub options: TaskOptions,
    /// When false, the previous step's result is passed as the first argument.
    #[serde(default)]
    pub immutable: bool,
    /// Called with this step's result when it succeeds (each as its own workflow).
    #[serde(default)]
    pub link: Vec<Canvas>,
}

/// The shape of a workflow node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Node {
    /// One task.
    Task(Box<Step>),
    /// Each result becomes the first argument of the next (unless it is immutable).
    Chain(Vec<Canvas>),
    /// Runs in parallel; the group's result, stored under `id` once every member succeeded, is
    /// the list of the members' results in order.
    Group {
        /// The id the list of results is stored under.
        id: TaskId,
        /// The members.
        members: Vec<Canvas>,
    },
    /// A group whose list of results is passed to `body`.
    Chord {
        /// The id the header's list of results is stored under.
        id: TaskId,
        /// The members that run in parallel.
        header: Vec<Canvas>,
        /// Called with the list once every member succeeded.
        body: Box<Canvas>,
    },
}

/// A workflow: a task, chain, group or chord, with error callbacks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Canvas {
    /// What it is.
    pub node: Node,
    /// Called once if any task inside fails for good (or is revoked): each receives a
    /// [`Failure`] as its first argument (unless immutable).
    #[serde(default)]
    pub on_error: Vec<Canvas>,
}

/// What an error callback receives.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Failure {
    /// The task that failed.
    pub task_id: TaskId,
    /// Its name.
    pub task: String,
    /// Why.
    pub error: crate::error::TaskError,
}

/// A continuation frame carried by a task of a workflow; the innermost is last.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Frame {
    /// Success callbacks of the task itself.
    Link(Vec<Canvas>),
    /// Error callbacks of an enclosing canvas.
    OnError(Vec<Canvas>),
    /// The rest of a chain.
    Chain(Vec<Canvas>),
    /// The rest of a long chain, stored once as a blob (a MessagePack `Vec<Canvas>`) in the
    /// result store under `blob`: its steps from `next` on. Carrying it inline would make the
    /// messages of an n-step chain O(n²) in all.
    ChainRef {
        /// The blob's key.
        blob: TaskId,
        /// The next step's index.
        next: u32,
    },
    /// Member `index` of a group of `size` (a chord's header when `body` is set).
    Join {
        /// The group's (or chord's) id.
        id: TaskId,
        /// Which member.
        index: u32,
        /// How many members.
        size: u32,
        /// The chord's callback.
        body: Option<Box<Canvas>>,
    },
    /// Node `node` of a task graph stored as a blob under `graph` (lovage-flow's
    /// `graph::StoredGraph`): the worker that finishes it releases the node's dependents.
    Graph {
        /// The stored graph's key.
        graph: TaskId,
        /// This task's index among the stored graph's nodes.
        node: u32,
    },
    /// A task spawned by another task or into a scope (`ctx.spawn`, `app.scope`): who spawned
    /// it, the first task of its tree, and the scope whose count falls when it finishes.
    Spawned {
        /// The task that spawned it (none for a scope's first tasks, sent by a client).
        parent: Option<TaskId>,
        /// The first task of its tree.
        root: TaskId,
        /// The scope whose join waits for it.
        scope: Option<TaskId>,
    },
    /// A task sent by a futures client, whose future may be passed as another call's
    /// argument (`Client::submit_after`): the worker that finishes it releases the calls
    /// registered as waiting for it (lovage-flow's `after`).
    Awaited,
}

impl Canvas {
    fn new(node: Node) -> Canvas {
        Canvas {
            node,
            on_error: Vec::new(),
        }
    }

    /// A task call as a workflow step, with a fresh id.
    pub fn task(sig: Signature) -> Canvas {
        Canvas::new(Node::Task(Box::new(Step {
            id: TaskId::new(),
            task: sig.task,
            codec: sig.codec,
            args: sig.args,
            options: sig.options,
            immutable: false,
            link: Vec::new(),
        })))
    }

    /// The id under which this workflow's result will be stored: a task's own, a chain's last
    /// step's, a group's list, a chord's body's.
    pub fn result_id(&self) -> TaskId {
        match &self.node {
            Node::Task(step) => step.id,
            Node::Chain(items) => items.last().map_or(TaskId::nil(), Canvas::result_id),
            Node::Group { id, .. } => *id,
            Node::Chord { body, .. } => body.result_id(),
        }
    }

    /// The result ids of a group's members (or a chord's header), in order; empty otherwise.
    pub fn member_ids(&self) -> Vec<TaskId> {
        match &self.node {
            Node::Group { members, .. }
            | Node::Chord {
                header: members, ..
            } => members.iter().map(Canvas::result_id).collect(),
            _ => Vec::new(),
        }
    }

    /// Every task id in the workflow, callbacks included.
    pub fn task_ids(&self) -> Vec<TaskId> {
        let mut out = Vec::new();
        self.visit_ids(&mut out);
        out
    }

    fn visit_ids(&self, out: &mut Vec<TaskId>) {
        match &self.node {
            Node::Task(step) => {
                out.push(step.id);
                step.link.iter().for_each(|c| c.visit_ids(out));
            }
            Node::Chain(items) => items.iter().for_each(|c| c.visit_ids(out)),
            Node::Group { id, members } => {
                out.push(*id);
                members.iter().for_each(|c| c.visit_ids(out));
            }
            Node::Chord { id, header, body } => {
                out.push(*id);
                header.iter().for_each(|c| c.visit_ids(out));
                body.visit_ids(out);
            }
        }
        self.on_error.iter().for_each(|c| c.visit_ids(out));
    }

    /// Does not take the previous result: every task at the start of this workflow keeps its
    /// own arguments.
    pub fn immutable(mut self) -> Canvas {
        match &mut self.node {
            Node::Task(step) => step.immutable = true,
            Node::Chain(items) => {
                if let Some(first) = items.first_mut() {
                    *first = first.clone().immutable();
                }
            }
            Node::Group { members, .. }
            | Node::Chord {
                header: members, ..
            } => {
                for m in members.iter_mut() {
                    *m = m.clone().immutable();
                }
            }
        }
        self
    }

    /// Calls `callback` with this workflow's result when it succeeds. On a group this is a
    /// chord (the callback gets the list); on a chain, the last step's result.
    pub fn link(mut self, callback: impl Into<Canvas>) -> Canvas {
        let callback = callback.into();
        match self.node {
            Node::Task(ref mut step) => {
                step.link.push(callback);
                self
            }
            Node::Chain(ref mut items) => {
                if let Some(last) = items.pop() {
                    items.push(last.link(callback));
                }
                self
            }
            Node::Group { id, members } => Canvas {
                node: Node::Chord {
                    id,
                    header: members,
                    body: Box::new(callback),
                },
                on_error: self.on_error,
            },
            Node::Chord { ref mut body, .. } => {
                let b = std::mem::replace(&mut **body, Canvas::new(Node::Chain(Vec::new())));
                **body = b.link(callback);
                self
            }
        }
    }

    /// Calls `callback` once with a [`Failure`] if any task in this workflow fails for good.
    pub fn on_error(mut self, callback: impl Into<Canvas>) -> Canvas {
        self.on_error.push(callback.into());
        self
    }

    /// This workflow, then `next` with its result (a chain).
    pub fn then(self, next: impl Into<Canvas>) -> Canvas {
        match self.node {
            Node::Chain(mut items) if self.on_error.is_empty() => {
                items.push(next.into());
                Canvas::new(Node::Chain(items))
            }
            _ => chain([self, next.into()]),
        }
    }
}

impl From<Signature> for Canvas {
    fn from(sig: Signature) -> Canvas {
        Canvas::task(sig)
    }
}

impl<R: serde::de::DeserializeOwned> From<TypedSignature<R>> for Canvas {
    fn from(sig: TypedSignature<R>) -> Canvas {
        Canvas::task(sig.into_signature())
    }
}

/// Runs `items` one after another, each result becoming the next one's first argument.
pub fn chain<C: Into<Canvas>>(items: impl IntoIterator<Item = C>) -> Canvas {
    Canvas::new(Node::Chain(items.into_iter().map(Into::into).collect()))
}

/// Runs `members` in parallel; the result is the list of their results, in order.
pub fn group<C: Into<Canvas>>(members: impl IntoIterator<Item = C>) -> Canvas {
    Canvas::new(Node::Group {
        id: TaskId::new(),
        members: members.into_iter().map(Into::into).collect(),
    })
}

/// Runs `header` in parallel, then `body` with the list of their results.
pub fn chord<C: Into<Canvas>>(
    header: impl IntoIterator<Item = C>,
    body: impl Into<Canvas>,
) -> Canvas {
    Canvas::new(Node::Chord {
        id: TaskId::new(),
        header: header.into_iter().map(Into::into).collect(),
        body: Box::new(body.into()),
    })
}

/// A group calling `task` once per item, with the item as its only argument.
pub fn map<T: Serialize>(
    task: &str,
    items: impl IntoIterator<Item = T>,
    codec: Codec,
) -> Result<Canvas, CodecError> {
    let sigs = items
        .into_iter()
        .map(|item| Signature::new(task, &(item,), codec))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(group(sigs))
}

/// A group calling `task` once per argument tuple (or sequence).
pub fn starmap<A: Serialize>(
    task: &str,
    args: impl IntoIterator<Item = A>,
    codec: Codec,
) -> Result<Canvas, CodecError> {
    let sigs = args
        .into_iter()
        .map(|a| Signature::new(task, &a, codec))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(group(sigs))
}

/// A group of `lovage.starmap` calls, each running `task` over `n` of the argument lists in
/// `args` inside one worker (Celery's `chunks`): the result is a list of lists of results.
/// The workers must have the `lovage.starmap` builtin (every `lovage` binary has it).
pub fn chunks<A: Serialize>(
    task: &str,
    args: impl IntoIterator<Item = A>,
    n: usize,
    codec: Codec,
) -> Result<Canvas, CodecError> {
    let all: Vec<serde_json::Value> = args
        .into_iter()
        .map(|a| serde_json::to_value(&a))
        .collect::<Result<_, _>>()
        .map_err(|e| CodecError::Encode {
            what: "chunk arguments",
            codec,
            reason: e.to_string(),
        })?;
    let sigs = all
        .chunks(n.max(1))
        .map(|chunk| Signature::new("lovage.starmap", &(task, chunk), codec))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(group(sigs))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sig(name: &str) -> Signature {
        Signature::new(name, &(1,), Codec::Json).unwrap()
    }

    #[test]
    fn result_ids_follow_the_shape() {
        let a = Canvas::task(sig("a"));
        let b = Canvas::task(sig("b"));
        let b_id = b.result_id();
        let c = chain([a.clone(), b]);
        assert_eq!(c.result_id(), b_id);
        let g = group([a.clone(), c.clone()]);
        assert_eq!(g.member_ids(), vec![a.result_id(), b_id]);
        let body = Canvas::task(sig("sum"));
        let ch = chord([a], body.clone());
        assert_eq!(ch.result_id(), body.result_id());
    }

    #[test]
    fn link_on_a_group_makes_a_chord_and_then_extends_a_chain() {
        let g = group([sig("a"), sig("b")]).link(sig("sum"));
        assert!(matches!(g.node, Node::Chord { .. }));
        let c = chain([sig("a")]).then(sig("b")).then(sig("c"));
        match c.node {
            Node::Chain(items) => assert_eq!(items.len(), 3),
            _ => panic!("not a chain"),
        }
    }

    #[test]
    fn a_workflow_round_trips_through_messagepack() {
        let wf = chain([
            Canvas::from(sig("a")),
            chord([sig("b"), sig("c")], sig("d")),
        ])
        .on_error(Canvas::from(sig("oops")).immutable());
        let bytes = rmp_serde::to_vec_named(&wf).unwrap();
        let back: Canvas = rmp_serde::from_slice(&bytes).unwrap();
        assert_eq!(back, wf);
        assert_eq!(back.task_ids().len(), 6);
    }
}
