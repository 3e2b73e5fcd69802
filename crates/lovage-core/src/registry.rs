//! The process-wide table of tasks, filled by `#[lovage::task]` at link time.
//!
//! Each annotated function submits one [`TaskEntry`] through `inventory`; nobody keeps a list by
//! hand, and a worker finds a task by the name written in a message.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll, Wake, Waker};

use crate::codec::Codec;
use crate::error::{kinds, TaskError};
use crate::options::TaskOptions;

/// A boxed future returning a task's encoded result.
pub type TaskFuture = Pin<Box<dyn Future<Output = Result<Vec<u8>, TaskError>> + Send>>;

/// How a registered task's body is called, with encoded arguments in and an encoded result out.
#[derive(Clone, Copy)]
pub enum TaskFn {
    /// A plain `fn`.
    Blocking(fn(&[u8], Codec) -> Result<Vec<u8>, TaskError>),
    /// An `async fn`.
    Async(fn(Vec<u8>, Codec) -> TaskFuture),
}

/// One registered task.
pub struct TaskEntry {
    /// The name messages use (defaults to `module::path::function`).
    pub name: &'static str,
    /// The body.
    pub run: TaskFn,
    /// The options set on the attribute.
    pub options: fn() -> TaskOptions,
}

inventory::collect!(TaskEntry);

impl std::fmt::Debug for TaskEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskEntry")
            .field("name", &self.name)
            .field("async", &self.is_async())
            .finish()
    }
}

impl TaskEntry {
    /// Runs the task on this thread; an async task is driven to completion here.
    /// Panics propagate: the caller decides how to isolate them.
    pub fn call_blocking(&self, args: &[u8], codec: Codec) -> Result<Vec<u8>, TaskError> {
        match self.run {
            TaskFn::Blocking(f) => f(args, codec),
            TaskFn::Async(f) => block_on(f(args.to_vec(), codec)),
        }
    }

    /// True for an `async fn` task.
    pub fn is_async(&self) -> bool {
        matches!(self.run, TaskFn::Async(_))
    }
}

/// All registered tasks by name.
pub struct Registry {
    by_name: HashMap<&'static str, &'static TaskEntry>,
}

impl Registry {
    /// The registry of this process, built on first use.
    ///
    /// # Panics
    /// If two tasks were registered under one name: a message could not say which to run.
    pub fn global() -> &'static Registry {
        static REGISTRY: OnceLock<Registry> = OnceLock::new();
        REGISTRY.get_or_init(|| {
            let mut by_name = HashMap::new();
            for entry in inventory::iter::<TaskEntry> {
                if by_name.insert(entry.name, entry).is_some() {
                    panic!(
                        "two lovage tasks are registered as {:?}; give one of them #[task(name = \"...\")]",
                        entry.name
                    );
                }
            }
            Registry { by_name }
        })
    }

    /// The task registered as `name`, or an `UnknownTask` error that lists the known names.
    pub fn get(&self, name: &str) -> Result<&'static TaskEntry, TaskError> {
        self.by_name.get(name).copied().ok_or_else(|| {
            let names = self.names();
            let mut listed = names
                .iter()
                .take(40)
                .copied()
                .collect::<Vec<_>>()
                .join(", ");
            if names.len() > 40 {
                listed.push_str(&format!(", … ({} in all)", names.len()));
            }
            TaskError::new(
                kinds::UNKNOWN_TASK,
                format!("no task is registered as {name:?}; registered tasks: [{listed}]"),
            )
        })
    }

    /// Registered names, sorted.
    pub fn names(&self) -> Vec<&'static str> {
        let mut names: Vec<_> = self.by_name.keys().copied().collect();
        names.sort_unstable();
        names
    }

    /// Number of registered tasks.
    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    /// True when no task is registered.
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }
}

/// Drives a future to completion on the current thread, parking between polls.
pub fn block_on<F: Future>(fut: F) -> F::Output {
    struct ThreadWaker(std::thread::Thread);
    impl Wake for ThreadWaker {
        fn wake(self: std::sync::Arc<Self>) {
            self.0.unpark();
        }
        fn wake_by_ref(self: &std::sync::Arc<Self>) {
            self.0.unpark();
        }
    }
    let mut fut = std::pin::pin!(fut);
    let waker = Waker::from(std::sync::Arc::new(ThreadWaker(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    loop {
        if let Poll::Ready(out) = fut.as_mut().poll(&mut cx) {
            return out;
        }
        std::thread::park();
    }
}
