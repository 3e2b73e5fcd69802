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
