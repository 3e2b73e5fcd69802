//! The keeper: while the worker runs, fires soft time limits, renews the leases of the tasks
//! in hand, cancels those revoked while they run, marks those whose lease was lost (their
//! outcomes are dropped), writes the heartbeat, and now and then deletes expired results.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use lovage_broker::ops::{Event, EventKind};
use lovage_broker::{Lease, Timestamp};
use lovage_core::{CancelReason, TaskId};

use crate::shared::{Shared, Withdrawn};

/// How often a worker deletes results past their TTL.
const RESULT_PURGE_INTERVAL: Duration = Duration::from_secs(60);

/// Renews leases and writes heartbeats until the worker is done.
pub(crate) fn keep_loop(s: &Shared) {
    let tick = (s.config.lease / 3)
        .min(s.config.heartbeat)
        .max(Duration::from_millis(10));
    let mut last_beat = Instant::now();
    let mut last_purge = Instant::now();
    // `task-started` events noted since the last heartbeat.
    let mut started: Vec<Event> = Vec::new();
    // The keeper stops retrying an unreachable broker once the run is over.
    let keeper_done = || s.done.load(Ordering::SeqCst) || s.shutdown.immediate_requested();
    while !s.done.load(Ordering::SeqCst) {
        std::thread::sleep(tick.min(Duration::from_millis(100)));
        // Tasks seen starting a tick ago and still running: told one tick (100 ms) after they
        // started, one write for all of them. A shorter task is told of by its finished event
        // alone, so a stream of quick tasks costs no started events at all.
        if !started.is_empty() {
            let events = still_running(s, &mut started);
            if !events.is_empty() {
                s.retry_broker_until("publish events", keeper_done, || {
                    s.backend.events().publish(&events)
                });
            }
        }
        let (events, records) = fire_soft_time_limits(s);
        started.extend(events);
        if !records.is_empty() {
            // Not final, so a task that finished meanwhile keeps its final record: the store
            // never puts a running state over a final one.
            s.retry_broker_until("store started", keeper_done, || {
                s.backend.results().store(&records)
            });
        }
        withdraw_expired(s);
        crate::pause::check(s);
        crate::scale::autoscale_tick(s);
        if last_beat.elapsed() < tick {
            continue;
        }
        last_beat = Instant::now();
        let leases: Vec<Lease> = s.running().values().map(|r| r.lease).collect();
        if !leases.is_empty() {
            if let Some(lost) = s.retry_broker_until("renew leases", keeper_done, || {
                s.backend.broker().renew(&leases, s.config.lease)
            }) {
                settle_lost(s, &lost, keeper_done);
            }
        }
        let info = {
            let mut info = s.info();
            info.heartbeat = Timestamp::now();
            info.active = leases.len() as u64;
            info.clone()
        };
        s.retry_broker_until("heartbeat", keeper_done, || {
            s.backend.presence().heartbeat(&info)
        });
        if s.events_on() {
            // The beat as an event too, so a reader of the stream sees the worker alive.
            let mut beat = Event::new(EventKind::WorkerHeartbeat);
            beat.worker = Some(s.id.clone());
            let events = [beat];
            s.retry_broker_until("publish events", keeper_done, || {
                s.backend.events().publish(&events)
            });
        }
        if last_purge.elapsed() >= RESULT_PURGE_INTERVAL {
            last_purge = Instant::now();
            purge_expired_results(s);
        }
    }
}

/// Takes the noted `task-started` events of tasks still running: one that finished meanwhile
/// was told of by its finished event (maybe already published), and a late `task-started`
/// would say it runs again.
fn still_running(s: &Shared, started: &mut Vec<Event>) -> Vec<Event> {
    let running = s.running();
    started
        .drain(..)
        .filter(|e| {
            e.task_id
                .is_some_and(|id| running.get(&id).is_some_and(|r| !r.settling))
        })
        .collect()
}

/// Cancels the token of every running task past its soft time limit, counted from when it
/// left the pool's queue; notes a `task-started` event for each task seen starting (sent with
/// the keeper's next write: a task that ends first is told of by its finished event alone),
/// and returns the STARTED records (`track_started`) of those still running, dated when the
/// pool started them.
fn fire_soft_time_limits(s: &Shared) -> (Vec<Event>, Vec<lovage_broker::ResultRecord>) {
    let mut started = Vec::new();
    let mut records = Vec::new();
    for r in s.running().values_mut() {
        if r.run_started.is_none() && r.handle.as_ref().is_some_and(|h| h.running() || h.done()) {
            r.run_started = Some(Instant::now());
            if let (Some(mut rec), Some(h)) = (r.started_record.take(), r.handle.as_ref()) {
                if h.running() && !r.settling {
                    rec.started = Some(
                        h.started_at()
                            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                            .map_or_else(Timestamp::now, |d| {
                                Timestamp::from_millis(d.as_millis() as i64)
                            }),
                    );
                    rec.updated = Timestamp::now();
                    records.push(rec);
                }
            }
            if s.events_on() && !r.settling {
                let mut ev = Event::new(EventKind::TaskStarted);
                ev.task_id = Some(r.lease.id);
                ev.worker = Some(s.id.clone());
                ev.state = Some(lovage_core::TaskState::Started);
                started.push(ev);
            }
        }
        let over = r
            .soft_time_limit
            .zip(r.run_started)
            .is_some_and(|(limit, since)| since.elapsed() >= limit);
        if over && !r.token.is_cancelled() {
            tracing::info!(task_id = %r.lease.id, "soft time limit passed; asking the task to stop");
            r.token.cancel(CancelReason::SoftTimeLimit);
        }
    }
    (started, records)
}

/// Takes tasks that expired while they waited in the pool's queue back out of it: they are
/// settled as REVOKED without running (as those expired when they were reserved).
fn withdraw_expired(s: &Shared) {
    let now = Timestamp::now();
    for (id, r) in s.running().iter() {
        if r.expires.is_some_and(|at| at <= now) && r.withdraw(Withdrawn::Expired) {
            tracing::debug!(task_id = %id, "expired while it waited in the pool: not run");
        }
    }
}

/// Of the leases the broker no longer holds for us, cancels those revoked (the finisher then
/// settles them as REVOKED) and marks the others lost: the lease ran out while this worker was
/// cut off, so another worker may have run the task and settled it, and this run's outcome
/// must not overwrite that (the finisher drops it). Tasks acknowledged at start
/// (`acks_late = false`) hold no lease to lose. A failed lookup is retried like any broker call
/// (until `give_up()`), so one broker error does not let a revoked task run on; until it
/// succeeds, nothing is marked lost.
pub(crate) fn settle_lost(s: &Shared, lost: &[Lease], give_up: impl Fn() -> bool) {
    if lost.is_empty() {
        return;
    }
    let ids: Vec<TaskId> = lost.iter().map(|l| l.id).collect();
    let Some(revoked) =
        s.retry_broker_until("revoked", give_up, || s.backend.broker().revoked(&ids))
    else {
        return;
    };
    if !revoked.is_empty() {
        s.note_revoked(revoked.iter().copied());
    }
    let mut set = s.revoked_running();
    let mut gone = s.lost_leases();
    let running = s.running();
    for lease in lost {
        let Some(r) = running.get(&lease.id).filter(|r| r.lease == *lease) else {
            continue;
        };
        if revoked.contains(&lease.id) {
            tracing::info!(task_id = %lease.id, "revoked while running: cancelling it");
            r.token.cancel(CancelReason::Revoked);
            set.insert(lease.id);
        } else if !r.acked && !r.settling && gone.insert(*lease) {
            tracing::warn!(
                task_id = %lease.id,
                "lost the task's lease while it ran (the broker was out of reach past the lease); \
                 another worker may run it, so this run's outcome will be dropped"
            );
        }
    }
}

fn purge_expired_results(s: &Shared) {
    match s.backend.results().purge_expired() {
        Ok(n) if n > 0 => tracing::debug!(worker = %s.id, purged = n, "expired results deleted"),
        Ok(_) => {}
        Err(e) => tracing::warn!(worker = %s.id, error = %e, "could not delete expired results"),
    }
}
