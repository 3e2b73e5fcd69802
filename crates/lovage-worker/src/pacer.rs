//! The pacer: global rate limits. Slots are booked in the broker (shared by every worker);
//! a task whose slot is now starts now, one whose slot is within [`PACE_HORIZON`] waits here
//! for it, and the rest go back to the broker (snoozed: not an attempt).

use std::collections::BTreeMap;
use std::sync::mpsc::Sender;
use std::time::{Duration, Instant};

use lovage_core::parse_rate;

use crate::fetcher::start;
use crate::shared::{Outcome, Ready, Shared};

/// How far ahead a worker books rate-limit slots and holds their tasks (the rest wait in the
/// broker).
const PACE_HORIZON: Duration = Duration::from_secs(1);

/// Books rate-limit slots for the tasks that have a rate limit; returns the tasks to start now
/// (those without a limit, and those whose slot is now).
pub(crate) fn hold_back_over_limit(s: &Shared, ready: Vec<Ready>) -> Vec<Ready> {
    let mut now = Vec::with_capacity(ready.len());
    let mut limited: BTreeMap<(String, Duration), Vec<Ready>> = BTreeMap::new();
    for r in ready {
        match r.options.rate_limit.as_deref().map(parse_rate) {
            None => now.push(r),
            Some(Ok(interval)) => limited
                .entry((r.d.envelope.task.clone(), interval))
                .or_default()
                .push(r),
            Some(Err(e)) => {
                let env = &r.d.envelope;
                tracing::warn!(task_id = %env.id, task = %env.task, error = %e, "ignoring a rate limit that does not parse");
                now.push(r);
            }
        }
    }
    let horizon = PACE_HORIZON.min(s.config.lease / 4);
    for ((task, interval), held) in limited {
        let key = format!("task:{task}");
        let (slots, next) = s
            .retry_broker("rate limit", || {
                s.backend
                    .rate_limits()
                    .acquire(&key, interval, held.len() as u32, horizon)
            })
            .unwrap_or((Vec::new(), interval));
        let mut held = held.into_iter();
        let started = Instant::now();
        for (slot, r) in slots.iter().zip(held.by_ref()) {
            if *slot <= Duration::from_millis(1) {
                now.push(r);
            } else {
                s.paced().push((started + *slot, r));
            }
        }
        s.paced_changed.notify_all();
        // The rest wait in the broker, spread one interval apart, from when slots free up.
        for (k, r) in held.enumerate() {
            let delay = next + interval * k as u32;
            tracing::debug!(task_id = %r.d.envelope.id, task = %task, ?delay, "over its rate limit: back to the broker");
            s.retry_broker("snooze", || s.backend.broker().snooze(&r.d.lease, delay));
            s.release_units([r.d.envelope.id]);
        }
    }
    now
}

/// Starts rate-limited tasks at their booked slots; on a stop hands those still waiting back
/// to the broker.
pub(crate) fn pace_loop(s: &Shared, tx: &Sender<Outcome>) {
    let mut paced = s.paced();
    loop {
        if s.shutdown.requested() {
            drop(paced);
            hand_back_paced(s);
            return;
        }
        let now = Instant::now();
        let due: Vec<Ready> = {
            let (ready, waiting): (Vec<_>, Vec<_>) =
                paced.drain(..).partition(|(at, _)| *at <= now);
            *paced = waiting;
            ready.into_iter().map(|(_, r)| r).collect()
        };
        if !due.is_empty() {
            drop(paced);
            for r in due {
                start(s, r, tx);
            }
            paced = s.paced();
            continue;
        }
        let wait = paced
            .iter()
            .map(|(at, _)| at.saturating_duration_since(now))
            .min()
            .unwrap_or(Duration::from_millis(100))
            .min(Duration::from_millis(100));
        paced = s
            .paced_changed
            .wait_timeout(paced, wait)
            .unwrap_or_else(|p| p.into_inner())
            .0;
    }
}

/// Hands tasks waiting for their rate-limit slots back to the broker (not an attempt).
pub(crate) fn hand_back_paced(s: &Shared) {
    let left: Vec<(Instant, Ready)> = s.paced().drain(..).collect();
    for (_, r) in left {
        s.retry_broker("snooze", || {
            s.backend.broker().snooze(&r.d.lease, Duration::ZERO)
        });
        s.release_units([r.d.envelope.id]);
    }
}
