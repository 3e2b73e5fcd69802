//! Rate limits shared by every worker: the generic cell rate algorithm the backends run
//! behind [`RateLimits::acquire`](crate::RateLimits::acquire), in microseconds.

use std::time::Duration;

/// The generic cell rate algorithm behind [`RateLimits::acquire`](crate::RateLimits::acquire), in microseconds: from the
/// stored theoretical arrival time `tat`, books up to `n` slots no later than `now + horizon`.
/// Returns the slots' offsets from `now`, the wait until the next slot is within the horizon,
/// and the new `tat`. An idle limit does not save up: `tat` never lags `now`.
pub fn gcra(
    tat: Option<i64>,
    now: i64,
    interval: i64,
    n: u32,
    horizon: i64,
) -> (Vec<i64>, i64, i64) {
    let interval = interval.max(1);
    let mut tat = tat.unwrap_or(now).max(now);
    let mut slots = Vec::new();
    while slots.len() < n as usize && tat <= now + horizon {
        slots.push(tat - now);
        tat += interval;
    }
    let next = (tat - now - horizon).max(0);
    (slots, next, tat)
}

/// [`RateLimits::acquire`](crate::RateLimits::acquire)'s answer from microseconds.
pub fn slots_from_micros(slots: &[i64], next: i64) -> (Vec<Duration>, Duration) {
    let d = |us: i64| Duration::from_micros(us.max(0) as u64);
    (slots.iter().map(|s| d(*s)).collect(), d(next))
}

/// Microseconds since the Unix epoch, for rate limits finer than a millisecond.
pub fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}
