//! SIGTERM and SIGINT for a worker: the first asks for a graceful stop, the second for an
//! immediate one.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::Shutdown;

static SIGNALS: AtomicU64 = AtomicU64::new(0);

extern "C" fn on_signal(_: libc::c_int) {
    // Only an atomic add: the one thing that is safe in a signal handler.
    SIGNALS.fetch_add(1, Ordering::SeqCst);
}

/// Routes SIGTERM and SIGINT to `shutdown`: a watcher thread forwards each signal as one
/// [`Shutdown::request`]. Fails only when the watcher thread cannot start (the signals then
/// keep their default action).
pub fn install_signal_handlers(shutdown: Shutdown) -> std::io::Result<()> {
    let watcher = std::thread::Builder::new()
        .name("lovage-signals".into())
        .spawn(move || {
            let mut seen = 0;
            loop {
                let now = SIGNALS.load(Ordering::SeqCst);
                while seen < now {
                    seen += 1;
                    tracing::info!(signal = seen, "shutdown requested ({})", if seen == 1 { "graceful: finishing running tasks; signal again to requeue them and exit" } else { "immediate" });
                    shutdown.request();
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        })?;
    drop(watcher);
    // SAFETY: installing a handler that only touches an atomic.
    unsafe {
        let handler = on_signal as extern "C" fn(libc::c_int) as *const () as libc::sighandler_t;
        libc::signal(libc::SIGTERM, handler);
        libc::signal(libc::SIGINT, handler);
    }
    Ok(())
}

/// While it lives, the calling thread (and every thread it starts) does not take SIGTERM,
/// SIGINT or SIGCHLD; the kernel hands them to another thread of the process (the signal
/// watcher, the pool's threads), which are not waiting on a broker.
///
/// Why: a broker client's socket has a read timeout, and a read with a timeout is not restarted
/// after a signal handler runs, or after a signal that arrived while its target thread had it
/// blocked (a task's child exiting while its thread was starting the next one): it fails with
/// EINTR. A reserve whose reply is lost that way leaves its tasks leased until the lease runs
/// out, and they run again.
pub(crate) struct BrokerThreadSignals {
    old: libc::sigset_t,
    /// A thread's signal mask is its own: the guard stays on the thread that made it.
    _not_send: std::marker::PhantomData<*const ()>,
}

impl BrokerThreadSignals {
    pub(crate) fn block() -> BrokerThreadSignals {
        // SAFETY: sigset_t is plain data, initialised by sigemptyset before use; the calls only
        // read and write the sets we pass.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            let mut old: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGCHLD] {
                libc::sigaddset(&mut set, sig);
            }
            libc::pthread_sigmask(libc::SIG_BLOCK, &set, &mut old);
            BrokerThreadSignals {
                old,
                _not_send: std::marker::PhantomData,
            }
        }
    }
}

impl Drop for BrokerThreadSignals {
    fn drop(&mut self) {
        // SAFETY: restores the mask saved in `block`, on the same thread (the guard is not Send).
        unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &self.old, std::ptr::null_mut()) };
    }
}
