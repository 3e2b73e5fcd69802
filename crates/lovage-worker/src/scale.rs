//! The pool's size while the worker runs: `pool_grow` and `pool_shrink` commands, and the
//! autoscaler (`autoscale max,min`), which grows toward `max` while tasks in hand wait for a
//! slot and shrinks toward `min` once slots have been idle for a while.
//!
//! Resizing goes through [`Executor::resize`](lovage_pool::Executor::resize): a shrink parks
//! threads (or process slots) only after the task they run ends, so it never stops a task; the
//! fetcher's room (slots + prefetch) follows the new size at once.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::config::Autoscale;
use crate::shared::Shared;

/// The current size and the autoscaler's bounds and idle clock.
pub(crate) struct Slots {
    current: AtomicUsize,
    state: Mutex<ScaleState>,
}

struct ScaleState {
    autoscale: Option<Autoscale>,
    /// Since when some slot has been idle without a break (the autoscaler's shrink clock).
    idle_since: Option<Instant>,
}

impl Slots {
    pub fn new(current: usize, autoscale: Option<Autoscale>) -> Slots {
        Slots {
            current: AtomicUsize::new(current),
            state: Mutex::new(ScaleState {
                autoscale,
                idle_since: None,
            }),
        }
    }

    /// Tasks run at once now.
    pub fn current(&self) -> usize {
        self.current.load(Ordering::Relaxed)
    }

    /// The autoscaler's bounds, if it is on.
    pub fn autoscale(&self) -> Option<Autoscale> {
        self.lock().autoscale
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ScaleState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The worker's description of its pool, as its record shows it (`threads x4`, or with the
/// autoscaler `threads x4 (autoscale 8,2)`).
pub(crate) fn describe(kind: &str, current: usize, autoscale: Option<Autoscale>) -> String {
    match autoscale {
        Some(a) => format!("{kind} x{current} (autoscale {},{})", a.max, a.min),
        None => format!("{kind} x{current}"),
    }
}

/// Resizes the pool to `n` slots (at least 1); the caller holds the scale lock, so commands and
/// the autoscaler resize one at a time.
fn resize_locked(s: &Shared, state: &ScaleState, n: usize, why: &str) -> Result<usize, String> {
    let n = n.max(1);
    let before = s.slots.current();
    if n == before {
        return Ok(n);
    }
    // Paused for memory, the pool runs one task at a time whatever its size (`pause.rs`).
    let run = if s.pause.on() { 1 } else { n };
    s.executor
        .resize(run)
        .map_err(|e| format!("could not resize the pool to {run}: {e}"))?;
    s.slots.current.store(n, Ordering::Relaxed);
    s.info().pool = describe(s.config.pool.name(), n, state.autoscale);
    // The fetcher may be waiting for room that a grow just made.
    s.room.notify_all();
    tracing::info!(worker = %s.id, from = before, to = n, why, "pool resized");
    Ok(n)
}

/// Pauses the pool for memory (one task at a time, its size kept for the resume) or resumes
/// it; under the scale lock, so a resize meanwhile sees the state. True when this call changed
/// the state (the keeper and the fetcher may both ask at once).
pub(crate) fn set_paused(s: &Shared, paused: bool) -> Result<bool, String> {
    let mut state = s.slots.lock();
    if !crate::pause::set(s, paused) {
        return Ok(false);
    }
    // A pause is not idleness: the autoscaler's idle clock starts again after it.
    state.idle_since = None;
    let run = if paused { 1 } else { s.slots.current() };
    if let Err(e) = s.executor.resize(run) {
        crate::pause::set(s, !paused);
        return Err(format!("could not resize the pool to {run}: {e}"));
    }
    // A resume makes room the fetcher may be waiting for.
    s.room.notify_all();
    Ok(true)
}

/// `pool_grow n`: n more slots. With the autoscaler on, its max rises to fit (as Celery's
/// `force_scale_up`).
pub(crate) fn grow(s: &Shared, n: usize) -> Result<usize, String> {
    let mut state = s.slots.lock();
    let to = s.slots.current().saturating_add(n);
    if let Some(a) = state.autoscale.as_mut() {
        a.max = a.max.max(to);
    }
    state.idle_since = None;
    resize_locked(s, &state, to, "pool_grow")
}

/// `pool_shrink n`: n fewer slots, taking effect as running tasks end; refused below 1. With
/// the autoscaler on, its min falls to fit (as Celery's `force_scale_down`).
pub(crate) fn shrink(s: &Shared, n: usize) -> Result<usize, String> {
    let mut state = s.slots.lock();
    let current = s.slots.current();
    if n >= current {
        return Err(format!(
            "cannot shrink a pool of {current} by {n}: a worker keeps at least 1 slot (use the \
             shutdown command to stop it)"
        ));
    }
    let to = current - n;
    if let Some(a) = state.autoscale.as_mut() {
        a.min = a.min.min(to);
    }
    state.idle_since = None;
    resize_locked(s, &state, to, "pool_shrink")
}

/// `autoscale max,min`: turns the autoscaler on with these bounds (or changes them), keeping its
/// idle time; the pool is brought within them at once.
pub(crate) fn set_autoscale(s: &Shared, max: usize, min: usize) -> Result<Autoscale, String> {
    let mut state = s.slots.lock();
    let idle = state
        .autoscale
        .map_or(s.config.autoscale_idle(), |a| a.idle);
    let bounds = Autoscale::new(max, min, idle)?;
    state.autoscale = Some(bounds);
    state.idle_since = None;
    let to = s.slots.current().clamp(min, max);
    resize_locked(s, &state, to, "autoscale")?;
    // The bounds show in the record even when the size did not change.
    s.info().pool = describe(s.config.pool.name(), s.slots.current(), Some(bounds));
    Ok(bounds)
}

/// How many tasks in hand run now, and how many wait in the pool's queue for a slot.
fn busy_and_waiting(s: &Shared) -> (usize, usize) {
    let running = s.running();
    let busy = running
        .values()
        .filter(|r| r.handle.as_ref().is_some_and(|h| h.running()))
        .count();
    let waiting = running
        .values()
        .filter(|r| r.handle.as_ref().is_some_and(|h| !h.running() && !h.done()))
        .count();
    (busy, waiting)
}

/// One look by the autoscaler (the keeper calls it every tick): grows when every slot is busy
/// and tasks wait for one, to cover them (up to max); shrinks to what is in use (down to min)
/// once some slot has been idle for the whole idle time.
pub(crate) fn autoscale_tick(s: &Shared) {
    let mut state = s.slots.lock();
    let Some(bounds) = state.autoscale else {
        return;
    };
    if s.pause.on() {
        // Paused for memory, the pool runs one task whatever its size: neither busy nor idle.
        state.idle_since = None;
        return;
    }
    let (busy, waiting) = busy_and_waiting(s);
    let current = s.slots.current();
    let wanted = busy + waiting;
    if waiting > 0 && busy >= current && current < bounds.max {
        state.idle_since = None;
        let to = wanted.min(bounds.max);
        if let Err(e) = resize_locked(s, &state, to, "autoscale: tasks wait for a slot") {
            tracing::warn!(worker = %s.id, error = %e, "autoscale could not grow the pool");
        }
        return;
    }
    if wanted >= current || current <= bounds.min {
        state.idle_since = None;
        return;
    }
    let since = *state.idle_since.get_or_insert_with(Instant::now);
    if since.elapsed() >= bounds.idle {
        state.idle_since = None;
        let to = wanted.max(bounds.min);
        if let Err(e) = resize_locked(s, &state, to, "autoscale: slots idle") {
            tracing::warn!(worker = %s.id, error = %e, "autoscale could not shrink the pool");
        }
    }
}

/// Default time slots stay idle before the autoscaler gives them up (Celery's keepalive).
pub(crate) const DEFAULT_AUTOSCALE_IDLE: Duration = Duration::from_secs(30);
