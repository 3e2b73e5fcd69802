//! The fetcher (the thread that called [`Worker::run`](crate::Worker::run)): reserves batches
//! while there is room, merges each task's options once, sends revoked and expired tasks to
//! the finisher without running them, passes rate-limited ones to the pacer, and hands the
//! rest to the pool.

use std::collections::HashSet;
use std::sync::mpsc::Sender;
use std::time::Duration;

use lovage_broker::{Delivery, Envelope, Timestamp};
use lovage_core::canvas::Frame;
use lovage_core::context::TaskInfo;
use lovage_core::{kinds, CancelToken, Signature, TaskError, TaskId, TaskState};

use crate::pacer;
use crate::settle::Ran;
use crate::shared::{Outcome, Ready, Running, Shared, Withdrawal, Withdrawn};

/// Reserves and starts tasks until a stop is asked for.
pub(crate) fn fetch_loop(s: &Shared, tx: &Sender<Outcome>) {
    while !s.shutdown.requested() {
        let Some(room) = wait_for_room(s) else { break };
        let got = match &s.units {
            None => reserve(s, &s.queues(), room, s.config.poll),
            Some(units) => reserve_with_units(s, units, room),
        };
        let Some(deliveries) = got else { break };
        publish_rejected(s);
        if deliveries.is_empty() {
            if s.running().is_empty() {
                // Idle: what we measured may not fit the next tasks, so start cautious.
                s.forget_run_time();
            }
            continue;
        }
        s.note_received(&deliveries);
        let ready = screen(s, deliveries, tx);
        for r in pacer::hold_back_over_limit(s, ready) {
            start(s, r, tx);
        }
    }
}

/// Reserves up to `max` tasks from `queues`, waiting up to `wait` for one; None when a stop
/// was asked for meanwhile (nothing reserved yet, so a graceful stop need not wait for the
/// broker).
fn reserve(s: &Shared, queues: &[String], max: usize, wait: Duration) -> Option<Vec<Delivery>> {
    s.retry_broker_until(
        "reserve",
        || s.shutdown.requested(),
        || {
            // Under its own id when it keeps values (the data plane): the graph nodes queued
            // for it (it holds their inputs) come first. Nothing is ever queued for a worker
            // without one, so it reserves as before.
            let me = s.data.as_ref().map(|_| s.id.as_str());
            s.backend
                .broker()
                .reserve_as(me, queues, max, s.config.lease, wait)
        },
    )
}

/// How long a worker with resources waits on its plain queues while none of its units is
/// free: a unit given back meanwhile is noticed this soon.
const UNITS_POLL: Duration = Duration::from_millis(100);

/// Reserves for a worker with resources (see `units.rs`): from the resource queues as many
/// tasks as its free units allow, then from its plain queues for the rest of `room`, neither
/// waiting; when both are empty, waits on all of them at once for at most as many as the
/// free units allow. Tasks whose units are not free here are handed back.
fn reserve_with_units(
    s: &Shared,
    units: &crate::units::Units,
    room: usize,
) -> Option<Vec<Delivery>> {
    let plain = s.queues();
    let (with_units, unit_room) = units.queues_with_room(&plain);
    if with_units.is_empty() {
        let got = reserve(s, &plain, room, s.config.poll.min(UNITS_POLL))?;
        return Some(admit(s, units, got));
    }
    let first = admit(
        s,
        units,
        reserve(s, &with_units, room.min(unit_room), Duration::ZERO)?,
    );
    let rest = room.saturating_sub(first.len());
    let mut got = first;
    if rest > 0 {
        got.extend(admit(s, units, reserve(s, &plain, rest, Duration::ZERO)?));
    }
    if got.is_empty() {
        let mut all = plain;
        all.extend(with_units);
        let waited = reserve(s, &all, room.min(unit_room), s.config.poll)?;
        got = admit(s, units, waited);
    }
    Some(got)
}

/// Takes the units of each delivery that needs resources; one that does not fit now is
/// handed back (snoozed: not an attempt), soon if this worker could run it once units are
/// given back, later if it never could (another worker should take it).
fn admit(s: &Shared, units: &crate::units::Units, got: Vec<Delivery>) -> Vec<Delivery> {
    use crate::units::Admit;
    let mut out = Vec::with_capacity(got.len());
    for d in got {
        // The sender merged the registered task's options into the call's (`App::envelope`).
        let delay = match units.admit(d.envelope.id, &d.envelope.options) {
            Admit::Yes => {
                out.push(d);
                continue;
            }
            Admit::NotNow => UNITS_POLL,
            Admit::Never(why) => {
                tracing::warn!(task_id = %d.envelope.id, task = %d.envelope.task, %why, "cannot hold this task's resources; handed back");
                Duration::from_secs(1)
            }
        };
        s.retry_broker("snooze", || s.backend.broker().snooze(&d.lease, delay));
    }
    out
}

/// Publishes `task-rejected` for the messages the reserve set aside because they do not
/// decode (when events are on; taken either way, so turning events on later does not tell of
/// old ones). A broker that fails here loses only the events, logged.
fn publish_rejected(s: &Shared) {
    let mut events = s.backend.broker().take_rejected();
    if events.is_empty() || !s.events_on() {
        return;
    }
    for ev in &mut events {
        ev.worker = Some(s.id.clone());
    }
    if let Err(e) = s.backend.events().publish(&events) {
        tracing::warn!(worker = %s.id, error = %e, count = events.len(), "could not publish task-rejected events");
    }
}

/// Waits until fewer than slots + prefetch tasks are in hand (handed to the pool, or
/// waiting in the pacer for a rate-limit slot); returns how many more may be reserved, or None
/// when a stop was asked for meanwhile.
fn wait_for_room(s: &Shared) -> Option<usize> {
    // Before `running` is taken: pausing takes the scale lock, which is taken before it.
    crate::pause::check(s);
    // Paused for memory (`pause.rs`): one task runs and one more waits (its inputs read,
    // so the pool's one slot does not idle between them); the rest stay for other workers.
    let capacity = || {
        let room = s.slots.current() + s.prefetch();
        match s.pause.on() {
            true => room.min(PAUSED_IN_HAND),
            false => room,
        }
    };
    let mut running = s.running();
    // `paced` is taken while `running` is held, never the other way round.
    // Tasks waiting on other tasks gave their slots back (see `Seceded`).
    let held_now = |running: usize| (running + s.paced().len()).saturating_sub(s.seceded.count());
    // With the data plane, no more is reserved while the tasks in hand have read all the
    // kept inputs the memory limit leaves them: what came would only go back to the broker.
    // (Not while a task waits for others: see `start`.)
    let inputs_full = || s.seceded.count() == 0 && s.data.as_ref().is_some_and(|d| d.inputs_full());
    let mut held = held_now(running.len());
    while (held >= capacity() || inputs_full()) && !s.shutdown.requested() {
        running = s
            .room
            .wait_timeout(running, Duration::from_millis(100))
            .unwrap_or_else(|p| p.into_inner())
            .0;
        held = held_now(running.len());
    }
    if s.shutdown.requested() {
        return None;
    }
    Some(capacity().saturating_sub(held))
}

/// Merges each delivery's options, and sends those revoked or expired before they started to
/// the finisher (to be settled as REVOKED like any other outcome); returns the rest.
fn screen(s: &Shared, deliveries: Vec<Delivery>, tx: &Sender<Outcome>) -> Vec<Ready> {
    let ids: Vec<TaskId> = deliveries.iter().map(|d| d.envelope.id).collect();
    let revoked: HashSet<TaskId> = s
        .retry_broker("revoked", || s.backend.broker().revoked(&ids))
        .unwrap_or_default()
        .into_iter()
        .collect();
    if !revoked.is_empty() {
        s.note_revoked(revoked.iter().copied());
    }
    let now = Timestamp::now();
    let mut ready = Vec::with_capacity(deliveries.len());
    for d in deliveries {
        let why = match expired(&d.envelope, now) {
            Some(why) => Some(why),
            None if revoked.contains(&d.envelope.id) => {
                Some("revoked before it started".to_owned())
            }
            None => None,
        };
        let r = s.ready(d);
        match why {
            Some(why) => {
                let _ = tx.send(Outcome {
                    ready: r,
                    ran: Ran::Revoked(TaskError::new(kinds::REVOKED, why)),
                    started: None,
                });
            }
            None => ready.push(r),
        }
    }
    ready
}

/// Why a task that has not started must not: its `expires` has passed by `now`.
pub(crate) fn expired(env: &Envelope, now: Timestamp) -> Option<String> {
    env.expires
        .filter(|at| *at <= now)
        .map(|at| format!("expired at {at} before a worker started it"))
}

/// Hands a task to the pool; its outcome goes to the finisher. One that expired since it was
/// reserved (held for a rate-limit slot) goes to the finisher without running; one that
/// expires while it waits in the pool's queue is taken back out by the keeper.
pub(crate) fn start(s: &Shared, r: Ready, tx: &Sender<Outcome>) {
    let env = &r.d.envelope;
    if let Some(why) = expired(env, Timestamp::now()) {
        let _ = tx.send(Outcome {
            ready: r,
            ran: Ran::Revoked(TaskError::new(kinds::REVOKED, why)),
            started: None,
        });
        return;
    }
    if s.config.zero_worker {
        // Benchmark mode (`WorkerConfig::zero_worker`): finished at once, with a fixed result.
        let ran = match env.codec.encode(&0u64, "a zero-worker result") {
            Ok(value) => Ran::Succeeded(value),
            Err(e) => Ran::Failed(e.into()),
        };
        let _ = tx.send(Outcome {
            ready: r,
            ran,
            started: Some(Timestamp::now()),
        });
        return;
    }
    // Bounded memory (the data plane): the kept inputs this task reads must fit the share of
    // `--memory-limit` left to the tasks in hand, else it waits in the broker a moment (not an
    // attempt) and another worker, or this one once a task ends, takes it.
    let inputs = match &s.data {
        Some(data) => {
            let need = crate::inputs::input_bytes(env);
            // A task in hand that waits for others (it gave its slot back) may be waiting
            // for this one: it is let through, or the two would wait for each other.
            let waiting = s.seceded.count() > 0;
            if need > 0 && !data.take_input_room(need, waiting) {
                tracing::debug!(task_id = %env.id, need, "its inputs do not fit the memory left to tasks: back to the broker");
                s.retry_broker("snooze", || {
                    s.backend.broker().snooze(&r.d.lease, INPUTS_WAIT)
                });
                s.release_units([env.id]);
                return;
            }
            need
        }
        None => 0,
    };
    let started_record = (r.options.track_started == Some(true))
        .then(|| s.record(&r.d, TaskState::Started, None, None, None));
    if r.options.acks_late == Some(false) {
        // Early ack: from here on the task is the worker's alone (at most once).
        s.retry_broker("complete", || s.backend.broker().complete(&[r.d.lease]));
    }
    // Inputs kept by other workers are read (or made again) now, on this thread: a task's
    // inputs must be in before it runs, and the pool's threads may be child processes.
    let args = match crate::inputs::resolve_args(env, s.data.as_deref()) {
        Ok(Some(args)) => args,
        Ok(None) => env.args.clone(),
        Err(err) => {
            give_inputs_back(s, inputs);
            let _ = tx.send(Outcome {
                ready: r,
                ran: Ran::Failed(err),
                started: None,
            });
            return;
        }
    };
    let sig = Signature {
        task: env.task.clone(),
        args,
        codec: env.codec,
        options: r.options.clone(),
    };
    let token = CancelToken::new();
    let withdrawal = Withdrawal::default();
    let id = env.id;
    s.running().insert(
        id,
        Running {
            lease: r.d.lease,
            task: env.task.clone(),
            token: token.clone(),
            handle: None,
            run_started: None,
            soft_time_limit: r.options.soft_time_limit,
            expires: env.expires,
            acked: r.options.acks_late == Some(false),
            settling: false,
            withdrawal: withdrawal.clone(),
            started_record,
        },
    );
    tracing::debug!(task_id = %id, task = %env.task, attempt = env.attempts, "starting");
    let handle = s.executor.submit_in(sig, token, task_info(s, env));
    let tx = tx.clone();
    let data = s.data.clone();
    // `started` is when the pool began running it, not when it was handed over: a prefetched
    // task may wait in the pool's queue for a long time first.
    // The callback takes the encoded result (no copy of a large one): nothing reads it from
    // the handle, which the keeper holds only to see whether the task runs.
    handle.take_when_done(move |result, began| {
        if let Some(data) = &data {
            data.give_input_room(inputs);
        }
        let started = began
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| Timestamp::from_millis(d.as_millis() as i64))
            .unwrap_or_else(Timestamp::now);
        let (ran, started) = match result {
            Ok(value) => (Ran::Succeeded(value), Some(started)),
            // Taken back out of the pool's queue by the worker (see `Running::withdraw`).
            Err(err) if err.kind == kinds::CANCELLED => match withdrawal.get() {
                // Whoever handed it back holds its lease now.
                Some(Withdrawn::HandedBack) => return,
                Some(Withdrawn::Expired) => {
                    let why = expired(&r.d.envelope, Timestamp::now())
                        .unwrap_or_else(|| "expired before a worker started it".to_owned());
                    (Ran::Revoked(TaskError::new(kinds::REVOKED, why)), None)
                }
                None => (Ran::Failed(err), Some(started)),
            },
            Err(err) => (Ran::Failed(err), Some(started)),
        };
        let _ = tx.send(Outcome {
            ready: r,
            ran,
            started,
        });
    });
    // Unless it already finished (and the finisher removed it), keep the handle for the keeper.
    if let Some(running) = s.running().get_mut(&id) {
        running.handle = Some(handle);
    }
}

/// Tasks in hand while the worker is paused for memory: the one its pool runs and the next
/// (never more than its room when not paused).
const PAUSED_IN_HAND: usize = 2;

/// How long a task whose inputs do not fit the memory left to tasks waits in the broker.
const INPUTS_WAIT: Duration = Duration::from_millis(250);

/// Gives back the input room a task booked (see `DataStore::take_input_room`).
fn give_inputs_back(s: &Shared, inputs: u64) {
    if let Some(data) = &s.data {
        data.give_input_room(inputs);
    }
}

/// What the task sees of itself through `lovage::ctx()`: its id, its parent, root and scope
/// (from its `Spawned` frame), this worker's slots and broker.
fn task_info(s: &Shared, env: &Envelope) -> std::sync::Arc<TaskInfo> {
    let (parent, root, scope) = env
        .flow
        .iter()
        .find_map(|f| match f {
            Frame::Spawned {
                parent,
                root,
                scope,
            } => Some((*parent, *root, *scope)),
            _ => None,
        })
        .unwrap_or((None, env.id, None));
    let slots: std::sync::Arc<dyn lovage_core::context::SlotGate> = s.seceded.clone();
    std::sync::Arc::new(TaskInfo {
        id: env.id,
        parent,
        root,
        scope,
        attempt: env.attempts,
        slots: Some(slots),
        host: Some(s.task_host.clone()),
        spawned: std::sync::atomic::AtomicU32::new(0),
    })
}
