//! A worker with the data plane pauses when its resident memory passes [`PAUSE_RSS_SHARE`]
//! of `--memory-limit` (the whole limit; Dask's `pause` threshold is 80%, see the constant for
//! why not here): the tasks running go on, but the pool runs one task at a time, the fetcher
//! holds one more at most (the rest stay for other workers), and the values kept in memory
//! move to files. It resumes once its memory is below the threshold again. Two tasks that
//! each fit alone then do not both grow at once far past the limit.
//!
//! Checked by the keeper each tick (at most 100 ms apart) and by the fetcher before it
//! reserves. Not while a task waits for others (it gave its slot back and may wait for a task
//! only a second slot would run).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::data::PAUSE_RSS_SHARE;
use crate::shared::Shared;

/// Whether the worker is paused for memory, and how many times it has been.
#[derive(Default)]
pub(crate) struct Pause {
    on: AtomicBool,
    times: AtomicU64,
}

impl Pause {
    /// Paused now.
    pub fn on(&self) -> bool {
        self.on.load(Ordering::SeqCst)
    }

    /// Pauses so far.
    pub fn times(&self) -> u64 {
        self.times.load(Ordering::Relaxed)
    }
}

/// Pauses or resumes the worker after its resident memory now.
pub(crate) fn check(s: &Shared) {
    let Some(data) = s.data.as_ref() else {
        return;
    };
    let Some((resident, threshold)) = data.resident_and_pause_threshold() else {
        return;
    };
    let over = resident > threshold && s.seceded.count() == 0;
    if over == s.pause.on() {
        return;
    }
    let mib = |b: u64| b >> 20;
    match crate::scale::set_paused(s, over) {
        Ok(true) => {}
        // Another thread saw the same memory and changed the state first.
        Ok(false) => return,
        Err(e) => {
            tracing::warn!(worker = %s.id, error = %e, "could not pause or resume the pool for memory");
            return;
        }
    }
    if over {
        s.pause.times.fetch_add(1, Ordering::Relaxed);
        tracing::info!(
            worker = %s.id,
            resident_mib = mib(resident),
            threshold_mib = mib(threshold),
            share = format!("{}/{}", PAUSE_RSS_SHARE.0, PAUSE_RSS_SHARE.1),
            "paused: resident memory past the pause share of --memory-limit; one task at a time, values kept in memory go to files"
        );
        data.spill_memory();
    } else {
        tracing::info!(worker = %s.id, resident_mib = mib(resident), threshold_mib = mib(threshold), "resumed: resident memory below the pause share again");
    }
}

/// Records the state [`crate::scale::set_paused`] applied.
pub(crate) fn set(s: &Shared, on: bool) -> bool {
    s.pause.on.swap(on, Ordering::SeqCst) != on
}
