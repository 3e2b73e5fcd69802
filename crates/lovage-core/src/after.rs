//! A call whose arguments may be futures of earlier calls (Dask's `client.submit(add, fa, fb)`).
//!
//! `#[lovage::task]` generates `add::after(a, b)`: each argument is a value of the parameter's
//! type or a future of that type (a client future on a broker implements
//! [`IntoAfterArg`]), so a future of a `String` where an `i64` goes does not build. The call
//! is sent with a client's `submit_after` and runs once every future it takes has finished,
//! with their values; the workers release it, not the caller.

use std::any::Any;
use std::marker::PhantomData;
use std::sync::Arc;

use serde::Serialize;

use crate::{Codec, RetryPolicy, TaskId, TaskOptions};

/// One argument of an [`After`] call: a value known now (as JSON), or the result of the task
/// `id` once it has finished.
#[derive(Debug, Clone, PartialEq)]
pub enum AfterArg {
    /// A value given now.
    Value(serde_json::Value),
    /// The result of task `id` (a future's task).
    Future(TaskId),
    /// The list of the results of these tasks, in order (futures given where a `Vec` goes).
    Futures(Vec<TaskId>),
    /// A value that could not be written as JSON; sending the call fails with this reason.
    Invalid(String),
    /// `arg`, with what must live until the call is sent (a client future's hold on its
    /// task's result, so the result is not released between `task::after(future)` and the
    /// send).
    Kept(Box<AfterArg>, Keep),
}

impl AfterArg {
    /// The ids of the tasks this argument waits for.
    pub fn ids(&self) -> &[TaskId] {
        match self {
            AfterArg::Future(id) => std::slice::from_ref(id),
            AfterArg::Futures(ids) => ids,
            AfterArg::Kept(arg, _) => arg.ids(),
            _ => &[],
        }
    }

    /// The argument without its [`Keep`], and the keep (to hold until the call is sent).
    pub fn unkept(self) -> (AfterArg, Option<Keep>) {
        match self {
            AfterArg::Kept(arg, keep) => (arg.unkept().0, Some(keep)),
            other => (other, None),
        }
    }
}

/// Something an [`AfterArg`] keeps alive until its call is sent; opaque, and equal to any
/// other (it does not change what the argument is).
#[derive(Clone)]
pub struct Keep(pub Arc<dyn Any + Send + Sync>);

impl std::fmt::Debug for Keep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Keep")
    }
}

impl PartialEq for Keep {
    fn eq(&self, _: &Keep) -> bool {
        true
    }
}

/// What an [`After`] call accepts where the task takes a `T`: a `T`, or a future of a `T`.
pub trait IntoAfterArg<T> {
    /// The argument.
    fn into_after_arg(self) -> AfterArg;
}

impl<T: Serialize> IntoAfterArg<T> for T {
    fn into_after_arg(self) -> AfterArg {
        match serde_json::to_value(&self) {
            Ok(v) => AfterArg::Value(v),
            Err(e) => AfterArg::Invalid(e.to_string()),
        }
    }
}

/// A call of the registered task `task` whose arguments may be futures; `R` is its return
/// type. Made by `task::after(..)`.
#[derive(Debug, Clone)]
pub struct After<R> {
    /// The registered task's name.
    pub task: &'static str,
    /// How its arguments are encoded when it is sent.
    pub codec: Codec,
    /// Its positional arguments.
    pub args: Vec<AfterArg>,
    /// Its per-call options (queue, priority, retries…), laid over the task's registered ones
    /// as a signature's are.
    pub options: TaskOptions,
    ret: PhantomData<fn() -> R>,
}

impl<R> After<R> {
    /// A call of `task` with `args` (what `task::after` builds).
    pub fn new(task: &'static str, codec: Codec, args: Vec<AfterArg>) -> Self {
        After {
            task,
            codec,
            args,
            options: TaskOptions::default(),
            ret: PhantomData,
        }
    }

    /// Sends it to this queue once its inputs are in.
    pub fn queue(mut self, queue: impl Into<String>) -> Self {
        self.options.queue = Some(queue.into());
        self
    }

    /// Runs it at this priority (0–9, higher first; values above 9 are capped).
    pub fn priority(mut self, priority: u8) -> Self {
        self.options.priority = Some(priority.min(9));
        self
    }

    /// Retries it with this policy.
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.options.retry = Some(policy);
        self
    }

    /// Kills it after this long.
    pub fn time_limit(mut self, limit: std::time::Duration) -> Self {
        self.options.time_limit = Some(limit);
        self
    }

    /// Replaces every option set so far with `options`.
    pub fn options(mut self, options: TaskOptions) -> Self {
        self.options = options;
        self
    }

    /// The ids of the tasks it waits for, in argument order (a task given twice appears twice).
    pub fn inputs(&self) -> impl Iterator<Item = TaskId> + '_ {
        self.args.iter().flat_map(AfterArg::ids).copied()
    }

    /// Refuses an argument that could not be written as JSON, naming its position.
    pub fn check(&self) -> Result<(), String> {
        for (i, a) in self.args.iter().enumerate() {
            if let AfterArg::Invalid(reason) = a {
                return Err(format!(
                    "argument {i} of a call of {} cannot be written as JSON: {reason}",
                    self.task
                ));
            }
        }
        Ok(())
    }
}
