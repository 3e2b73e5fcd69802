//! What both pools can do with a registered task, so code (and the queue worker) can take either.

use std::sync::Arc;

use lovage_core::cancel::with_token;
use lovage_core::context::{with_task, TaskInfo};
use lovage_core::{CancelToken, Registry, Signature, TaskError, TypedSignature};
use serde::de::DeserializeOwned;

use crate::handle::TaskHandle;
use crate::process::ProcessPool;
use crate::thread::ThreadPool;

/// A pool that runs registered tasks: [`ThreadPool`] (in this process, a panic fails the task)
/// or [`ProcessPool`] (in child processes, a crash fails the task). Switching is one word.
///
/// `submit_encoded` is object-safe, so a worker can hold a `Box<dyn Executor>` and move encoded
/// results without knowing their types; `submit_task` is the typed form.
pub trait Executor: Send + Sync {
    /// Runs a registered task call; the handle yields its result still encoded with the
    /// signature's codec.
    fn submit_encoded(&self, sig: Signature) -> TaskHandle<Vec<u8>> {
        self.submit_cancellable(sig, CancelToken::new())
    }

    /// Like [`submit_encoded`](Self::submit_encoded), with a token that asks the task to stop:
    /// in a thread pool the task sees it through `lovage::check_cancelled()`; in a process pool
    /// a revoke kills the child and a soft time limit is signalled to it.
    fn submit_cancellable(&self, sig: Signature, token: CancelToken) -> TaskHandle<Vec<u8>>;

    /// Like [`submit_cancellable`](Self::submit_cancellable), with the task's context
    /// (`lovage_core::context::current()` inside its body). A process pool's children do not
    /// get it: the default ignores `info`.
    fn submit_in(
        &self,
        sig: Signature,
        token: CancelToken,
        info: Arc<TaskInfo>,
    ) -> TaskHandle<Vec<u8>> {
        let _ = info;
        self.submit_cancellable(sig, token)
    }

    /// Number of workers (threads or child processes) that take tasks now.
    fn workers(&self) -> usize;

    /// Changes the number of workers that take tasks (see the pools' own `resize`): a shrink
    /// lets running tasks finish, a grow wakes parked workers before starting new ones.
    fn resize(&self, n: usize) -> std::io::Result<()>;

    /// Stops the pool (see the pools' own `shutdown`).
    fn shutdown(&self, wait: bool, cancel_pending: bool);

    /// Runs a registered task call and decodes its result.
    fn submit_task<R>(&self, sig: TypedSignature<R>) -> TaskHandle<R>
    where
        Self: Sized,
        R: DeserializeOwned + Send + 'static;
}

impl Executor for ThreadPool {
    fn submit_cancellable(&self, sig: Signature, token: CancelToken) -> TaskHandle<Vec<u8>> {
        self.submit_fallible(move || with_token(&token, || run_registered(&sig)))
    }

    fn submit_in(
        &self,
        sig: Signature,
        token: CancelToken,
        info: Arc<TaskInfo>,
    ) -> TaskHandle<Vec<u8>> {
        self.submit_fallible(move || {
            with_task(info, || with_token(&token, || run_registered(&sig)))
        })
    }

    fn workers(&self) -> usize {
        ThreadPool::workers(self)
    }

    fn resize(&self, n: usize) -> std::io::Result<()> {
        ThreadPool::resize(self, n)
    }

    fn shutdown(&self, wait: bool, cancel_pending: bool) {
        ThreadPool::shutdown(self, wait, cancel_pending)
    }

    fn submit_task<R>(&self, sig: TypedSignature<R>) -> TaskHandle<R>
    where
        R: DeserializeOwned + Send + 'static,
    {
        if let Err(e) = sig.check() {
            return TaskHandle::already_failed(e.into());
        }
        self.submit_fallible(move || {
            let bytes = run_registered(sig.signature())?;
            Ok(sig.decode_result(&bytes)?)
        })
    }
}

impl Executor for ProcessPool {
    fn submit_cancellable(&self, sig: Signature, token: CancelToken) -> TaskHandle<Vec<u8>> {
        self.submit_raw_cancellable(sig, Some(token))
    }

    fn workers(&self) -> usize {
        ProcessPool::workers(self)
    }

    fn resize(&self, n: usize) -> std::io::Result<()> {
        ProcessPool::resize(self, n)
    }

    fn shutdown(&self, wait: bool, cancel_pending: bool) {
        ProcessPool::shutdown(self, wait, cancel_pending)
    }

    fn submit_task<R>(&self, sig: TypedSignature<R>) -> TaskHandle<R>
    where
        R: DeserializeOwned + Send + 'static,
    {
        self.submit(sig)
    }
}

/// Runs a registered task on this thread: look up, decode, call, encode.
fn run_registered(sig: &Signature) -> Result<Vec<u8>, TaskError> {
    let entry = Registry::global().get(&sig.task)?;
    entry.call_blocking(&sig.args, sig.codec)
}

/// Each pool is a place to send task calls: `add::delay(&pool, 1, 2)`. (A blanket impl over
/// `Executor` is not allowed for a trait of another crate.)
macro_rules! dispatch_via_executor {
    ($($pool:ty),*) => {$(
        impl lovage_core::Dispatch for $pool {
            type Handle<R: DeserializeOwned + Send + 'static> = TaskHandle<R>;
            type Error = std::convert::Infallible;

            fn dispatch<R: DeserializeOwned + Send + 'static>(
                &self,
                sig: TypedSignature<R>,
            ) -> Result<TaskHandle<R>, Self::Error> {
                Ok(self.submit_task(sig))
            }
        }
    )*};
}

dispatch_via_executor!(ThreadPool, ProcessPool);
