//! The child side of a process pool: the current executable, started again in child mode.

// A child reports what stops it on stderr, which is its parent's: it has no other channel.
#![allow(clippy::print_stderr)]

use std::io::{Read, Write};
use std::os::fd::FromRawFd;
use std::panic::{catch_unwind, AssertUnwindSafe};

use lovage_core::{Registry, TaskError};

use super::frame::{self, Outcome, KIND_CALL, KIND_INIT, KIND_SCOPED_CALL};
use super::scope;

/// The signal a parent sends when the running task passes its soft time limit.
pub(crate) const SOFT_LIMIT_SIGNAL: i32 = libc::SIGUSR1;

/// The parent queues the signal with the number of the request it is for (`sigqueue`), so it
/// reaches that task even if it arrives before the task begins, and never the one after.
extern "C" fn on_soft_limit(_: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
    if info.is_null() {
        return;
    }
    // SAFETY: the kernel passes a valid siginfo to an SA_SIGINFO handler; a signal sent with
    // `sigqueue` carries the value the parent gave it.
    let task = unsafe { (*info).si_value().sival_ptr } as u64;
    lovage_core::cancel::soft_limit_process_task(task);
}

/// Sends `pid` (a pool child) the soft time limit of its request number `task`.
pub(crate) fn signal_soft_limit(pid: i32, task: u64) {
    let value = libc::sigval {
        sival_ptr: task as usize as *mut libc::c_void,
    };
    // SAFETY: signalling our own child; its handler only stores an atomic.
    unsafe { libc::sigqueue(pid, SOFT_LIMIT_SIGNAL, value) };
}

/// Installs the soft time limit's handler in this process.
fn install_soft_limit_handler() {
    // SAFETY: a zeroed sigaction is valid; the handler only reads its siginfo and stores an
    // atomic, which is async-signal safe.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_soft_limit
            as extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void)
            as usize;
        action.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART;
        libc::sigemptyset(&mut action.sa_mask);
        libc::sigaction(SOFT_LIMIT_SIGNAL, &action, std::ptr::null_mut());
    }
}

/// Environment variable that marks a child process; its value is the parent's pid.
pub(crate) const CHILD_ENV: &str = "LOVAGE_POOL_CHILD";

/// Call this first in `main` of any program that uses a [`ProcessPool`](super::ProcessPool).
///
/// In the parent it returns at once. In a pool's child (the same executable, started again by the
/// pool) it serves tasks and exits when the pool closes it, never returning.
///
/// ```no_run
/// fn main() {
///     lovage_pool::child_main();
///     // ... the program as usual
/// }
/// ```
pub fn child_main() {
    let Ok(parent) = std::env::var(CHILD_ENV) else {
        return;
    };
    let parent: i32 = parent.parse().unwrap_or(0);
    // SAFETY: plain system calls on this process.
    unsafe {
        // Die with the parent, even while a task runs; if it is already gone, leave now.
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
        if libc::getppid() != parent {
            libc::_exit(0);
        }
    }
    install_soft_limit_handler();
    std::env::remove_var(CHILD_ENV);
    let code = match serve() {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("lovage pool child {}: {e}", std::process::id());
            70
        }
    };
    std::process::exit(code);
}

fn serve() -> std::io::Result<()> {
    // Frames go out on the original stdout; what tasks print goes to stderr, which the parent
    // passes through, so a stray `println!` cannot corrupt a frame.
    // SAFETY: fd 1 and 2 are open in a child started by the pool; dup returns a fresh fd we own.
    let mut out = unsafe {
        let fd = libc::dup(1);
        if fd < 0 || libc::dup2(2, 1) < 0 {
            return Err(std::io::Error::last_os_error());
        }
        std::fs::File::from_raw_fd(fd)
    };
    serve_frames(&mut std::io::stdin().lock(), &mut out, Registry::global())
}

/// Reads request frames from `input` until it ends, running each and writing its reply to `out`
/// before reading on. A frame that does not decode ends it with an error.
pub(crate) fn serve_frames(
    input: &mut impl Read,
    out: &mut impl Write,
    registry: &Registry,
) -> std::io::Result<()> {
    let mut buf: Vec<u8> = Vec::with_capacity(64 * 1024);
    let mut start = 0;
    let mut reply = Vec::with_capacity(4096);
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        // Serve every whole frame already buffered, one reply each, written before the next
        // task starts: if a task kills this process, the parent knows exactly which one it was.
        while let Some(body) = frame::split_frame(&buf[start..]).map_err(std::io::Error::other)? {
            let body = start + body.start..start + body.end;
            let req = frame::decode_request(&buf[body.clone()]).map_err(std::io::Error::other)?;
            let run_all = || -> Vec<Outcome> {
                req.args
                    .iter()
                    .map(|args| run_one(registry, req.name, args, req.codec, req.seq))
                    .collect()
            };
            let (outcomes, spawns) = if req.kind == KIND_SCOPED_CALL {
                scope::collecting_spawns(run_all)
            } else {
                (run_all(), Vec::new())
            };
            if req.kind == KIND_INIT {
                if let Some(Err(e)) = outcomes.first() {
                    eprintln!(
                        "lovage pool child {}: initializer {} failed: {e}",
                        std::process::id(),
                        req.name
                    );
                }
            } else if req.kind != KIND_CALL && req.kind != KIND_SCOPED_CALL {
                return Err(std::io::Error::other(format!(
                    "unknown request kind {}",
                    req.kind
                )));
            }
            reply.clear();
            frame::encode_reply(&mut reply, req.seq, &outcomes, &spawns);
            out.write_all(&reply)?;
            start = body.end;
        }
        buf.drain(..start);
        start = 0;
        let n = input.read(&mut chunk)?;
        if n == 0 {
            return Ok(()); // the pool closed our stdin: done
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Runs one task of request number `seq`.
fn run_one(
    registry: &Registry,
    name: &str,
    args: &[u8],
    codec: lovage_core::Codec,
    seq: u64,
) -> Result<Vec<u8>, TaskError> {
    let entry = registry.get(name)?;
    lovage_core::cancel::begin_process_task(seq);
    let out = catch_unwind(AssertUnwindSafe(|| entry.call_blocking(args, codec)))
        .unwrap_or_else(|p| Err(TaskError::from_panic(&*p)));
    lovage_core::cancel::begin_process_task(0);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The real handler, sent the real signal: a soft limit for a task that has not begun yet
    /// reaches it when it begins, and one for a finished task does not touch the next.
    #[test]
    fn a_soft_limit_signal_reaches_its_own_task_alone() {
        install_soft_limit_handler();
        // Directed at this thread, so it is handled before `pthread_sigqueue` returns.
        let signal = |task: u64| {
            let value = libc::sigval {
                sival_ptr: task as usize as *mut libc::c_void,
            };
            // SAFETY: signalling this thread, whose handler only stores an atomic.
            let rc =
                unsafe { libc::pthread_sigqueue(libc::pthread_self(), SOFT_LIMIT_SIGNAL, value) };
            assert_eq!(rc, 0);
        };
        lovage_core::cancel::begin_process_task(41);
        signal(42);
        assert!(!lovage_core::is_cancelled(), "task 41 was not signalled");
        lovage_core::cancel::begin_process_task(42);
        assert!(
            lovage_core::is_cancelled(),
            "the signal for 42 came before it began"
        );
        lovage_core::cancel::begin_process_task(43);
        assert!(
            !lovage_core::is_cancelled(),
            "a late signal for 42 stopped 43"
        );
        lovage_core::cancel::begin_process_task(0);
    }
}
