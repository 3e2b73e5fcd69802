//! The progress bar `compute` draws on a terminal: tasks done of the total and, when sources
//! read files in this process, the bytes read.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use indicatif::{HumanBytes, ProgressBar, ProgressDrawTarget, ProgressStyle};
use lovage_graph::{Graph, Progress};

/// Bytes the sources have read from files in this process (`read_text`, `read_jsonl`), for
/// the bar: a run shows how many it added. Sources read on a process pool or a broker's
/// workers count in those processes instead, so their bytes do not show here.
static BYTES_READ: AtomicU64 = AtomicU64::new(0);

/// Counts `n` bytes read from a file by a source.
pub(crate) fn count_read(n: usize) {
    BYTES_READ.fetch_add(n as u64, Ordering::Relaxed);
}

/// Bytes read by sources in this process so far.
pub(crate) fn bytes_read() -> u64 {
    BYTES_READ.load(Ordering::Relaxed)
}

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
        ProgressStyle::with_template("{bar:40} {pos}/{len} tasks{msg} {elapsed_precise} eta {eta}")
    {
        bar.set_style(style);
    }
    let bytes_at_start = bytes_read();
    let update = |bar: &ProgressBar| {
        bar.set_length(counters.total.load(Ordering::Relaxed) as u64);
        bar.set_position(counters.done.load(Ordering::Relaxed) as u64);
        let read = bytes_read().saturating_sub(bytes_at_start);
        if read > 0 {
            bar.set_message(format!(", {} read", HumanBytes(read)));
        }
    };
    // The first redraw waits a little, so a computation that is over at once draws nothing.
    let mut shown = false;
    let started = std::time::Instant::now();
    while !stop.load(Ordering::Acquire) {
        std::thread::sleep(Duration::from_millis(50));
        if !shown && started.elapsed() < Duration::from_millis(300) {
            continue;
        }
        shown = true;
        update(&bar);
    }
    if shown {
        update(&bar);
        bar.finish();
    } else {
        bar.finish_and_clear();
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use lovage_graph::{Graph, Inline};

    use crate::bag::read_text;

    #[test]
    fn reading_text_counts_the_bytes_read_for_the_bar() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lines.txt");
        let mut f = std::fs::File::create(&path).unwrap();
        for i in 0..1000 {
            writeln!(f, "line {i}").unwrap();
        }
        drop(f);
        let size = std::fs::metadata(&path).unwrap().len();
        let g = Graph::new();
        let bag = read_text(&g, path.to_str().unwrap(), Some(1024)).unwrap();
        let before = super::bytes_read();
        let lines = bag.compute(Inline).unwrap();
        assert_eq!(lines.len(), 1000);
        // Each partition reads its range plus the rest of its last line and one byte before.
        let read = super::bytes_read() - before;
        assert!(read >= size, "{read} of {size}");
        assert!(read < size + 2 * 1024, "{read} of {size}");
    }
}
