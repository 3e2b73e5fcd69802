//! The progress bar `compute` draws on a terminal.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use lovage_graph::{Graph, Progress};

/// Runs `f` (a compute of `g`); when stderr is a terminal, a thread draws the graph's counters
/// meanwhile. Off a terminal nothing is drawn and the run pays nothing.
pub(crate) fn with_bar<R>(g: &Graph, f: impl FnOnce() -> R) -> R {
    if !std::io::stderr().is_terminal() || std::env::var_os("LOVAGE_NO_PROGRESS").is_some() {
        return f();
    }
    let counters = Arc::new(Progress::default());
    g.set_progress(Some(counters.clone()));
    let stop = Arc::new(AtomicBool::new(false));
    let drawer = {
        let (counters, stop) = (counters.clone(), stop.clone());
        std::thread::spawn(move || draw(&counters, &stop))
    };
    let out = f();
    stop.store(true, Ordering::Release);
    let _ = drawer.join();
    g.set_progress(None);
    out
}

fn draw(counters: &Progress, stop: &AtomicBool) {
    let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
    if let Ok(style) =
        ProgressStyle::with_template("{bar:40} {pos}/{len} tasks {elapsed_precise} eta {eta}")
    {
        bar.set_style(style);
    }
    // The first redraw waits a little, so a computation that is over at once draws nothing.
    let mut shown = false;
    let started = std::time::Instant::now();
    while !stop.load(Ordering::Acquire) {
        std::thread::sleep(Duration::from_millis(50));
        if !shown && started.elapsed() < Duration::from_millis(300) {
            continue;
        }
        shown = true;
        bar.set_length(counters.total.load(Ordering::Relaxed) as u64);
        bar.set_position(counters.done.load(Ordering::Relaxed) as u64);
    }
    if shown {
        bar.set_length(counters.total.load(Ordering::Relaxed) as u64);
        bar.set_position(counters.done.load(Ordering::Relaxed) as u64);
        bar.finish();
    } else {
        bar.finish_and_clear();
    }
}
