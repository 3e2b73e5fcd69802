//! The finisher: collects outcomes as the pool reports them and settles them in batches, in
//! the order PROTOCOL.md explains: store the records, then plan what follows in workflows,
//! then complete the tasks together with the next steps, then retry or discard the failures.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use lovage_broker::dataref::{json_array_items, may_hold_refs, refs_in, release, Lineage};
use lovage_broker::ops::{Event, EventKind};
use lovage_broker::{Delivery, Envelope, Lease, ResultRef, ScopeFall, ScopeSpawn, Timestamp};
use lovage_core::canvas::Frame;
use lovage_core::{kinds, Codec, TaskError, TaskId, TaskState};
use lovage_flow::Finished;

use crate::settle::{decide, Ran, Settle};
use crate::shared::{Outcome, Shared};
use crate::WorkerReport;

/// Outcomes settled together at most (one store, one complete per batch).
const MAX_BATCH: usize = 1024;

/// Collects outcomes and settles them in batches until the worker is done.
pub(crate) fn finish_loop(s: &Shared, rx: Receiver<Outcome>) {
    let mut last_batch = Instant::now();
    loop {
        let first = match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(o) => o,
            Err(RecvTimeoutError::Timeout) => {
                // Nothing finished for a while: what was received goes out on its own.
                publish_received(s, false);
                if s.done.load(Ordering::SeqCst) {
                    return;
                }
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => {
                publish_received(s, true);
                return;
            }
        };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(o) => batch.push(o),
                Err(_) => break,
            }
        }
        // Time per task per slot, from the rate tasks finish while the worker is busy (a long
        // idle gap says nothing about task length, so it is not counted).
        let gap = last_batch.elapsed();
        last_batch = Instant::now();
        if gap < Duration::from_secs(1) {
            s.observe_run(gap * s.slots.current() as u32 / batch.len() as u32);
        }
        finish_batch(s, batch);
    }
}

/// The value to store for a result: itself, or, when the data plane is on and the value is
/// at least its threshold, a reference to the copy this worker keeps (stored inline, with a
/// warning, if keeping it fails: nothing is lost). The reference, if any, comes back too:
/// a workflow passes it on instead of the value.
fn keep_if_large(s: &Shared, env: &Envelope, value: Vec<u8>) -> (Vec<u8>, Option<ResultRef>) {
    let Some(data) = &s.data else {
        return (value, None);
    };
    if value.len() < data.threshold() {
        return (value, None);
    }
    let readers = lovage_flow::kept_readers(&s.backend, env);
    // Read element by element (a shuffle's reducers each take one piece of a map's list):
    // indexed, so each reader fetches only its element's bytes.
    let items = (env.codec == Codec::Json && lovage_flow::elements_read(&s.backend, env))
        .then(|| json_array_items(&value))
        .flatten();
    match data.keep(
        &env.id.to_string(),
        value,
        env.codec,
        lineage_of(env),
        readers,
    ) {
        Ok(mut r) => {
            r.items = items.unwrap_or_default();
            (r.encode(), Some(r))
        }
        Err((e, value)) => {
            tracing::warn!(task_id = %env.id, error = %e, "could not keep a large result here; storing it inline");
            (value, None)
        }
    }
}

/// Arguments larger than this are not recorded in a reference's lineage (the value then
/// cannot be made again once its worker is lost).
const LINEAGE_MAX_ARGS: usize = 64 << 10;

/// The call that made `env`'s result, recorded in its reference.
fn lineage_of(env: &Envelope) -> Option<Lineage> {
    if env.args.len() > LINEAGE_MAX_ARGS {
        return None;
    }
    let args = env.codec.decode(&env.args, "task arguments").ok()?;
    Some(Lineage {
        task: env.task.clone(),
        args,
    })
}

/// What is left to do in the broker for a failed task once its batch is completed.
enum Afterwards {
    /// Back to its queue after a delay (the broker's retry).
    Retry(Lease, Duration),
    /// Sent anew after a delay: it was acknowledged when it started.
    Resend(Box<Envelope>, Duration),
    /// To the dead letters.
    Discard(Box<(Delivery, TaskError)>),
    /// To the dead letters, though the broker no longer holds it: it was acknowledged when it
    /// started (`acks_late = false`), so its lease names nothing to discard.
    Bury(Box<(Delivery, TaskError)>),
}

/// Counts a batch's settled tasks by name for `inspect stats`. A fused chain's links count
/// under their own task names (what ran, as the unfused nodes would have counted), and the
/// chain messages with their links beside them; a chain whose links do not read counts as
/// one task of its own name.
fn count_settled(s: &Shared, batch: &[Outcome]) {
    use lovage_flow::graph::{chain_link_names, CHAIN_TASK};
    let mut links: HashMap<String, u64> = HashMap::new();
    let (mut chains, mut linked) = (0, 0);
    let mut by_name: HashMap<&str, u64> = HashMap::new();
    for o in batch {
        let env = &o.ready.d.envelope;
        if env.task == CHAIN_TASK {
            if let Some(names) = chain_link_names(&env.args, env.codec) {
                chains += 1;
                linked += names.len() as u64;
                for name in names {
                    *links.entry(name).or_default() += 1;
                }
                continue;
            }
        }
        *by_name.entry(env.task.as_str()).or_default() += 1;
    }
    for (name, n) in &links {
        *by_name.entry(name.as_str()).or_default() += n;
    }
    s.count_settled(&by_name);
    if chains > 0 {
        s.count_chains(chains, linked);
    }
}

/// Settles one batch of outcomes.
fn finish_batch(s: &Shared, batch: Vec<Outcome>) {
    let mut records = Vec::with_capacity(batch.len());
    let mut completed = Vec::with_capacity(batch.len());
    let mut afterwards = Vec::new();
    let mut ended = Vec::with_capacity(batch.len());
    let mut read_for_good = Vec::new();
    // Workflow steps, continued once their outcomes are stored: (envelope, value or error).
    let mut flows: Vec<(Envelope, Result<Vec<u8>, TaskError>)> = Vec::new();
    // Tasks whose only workflow is a scope they count in (tasks spawned into `app.scope`):
    // nothing to plan, so their scopes' counts fall with their records and completions.
    let mut falls: Vec<ScopeFall> = Vec::new();
    let mut report = WorkerReport::default();
    // Children the tasks spawned into their scopes and held back: they rise and are sent
    // before their parents fall (in the same transaction on SQLite).
    // One send per scope, not one per parent: a Redis script or SQL batch for the lot.
    let mut spawns: Vec<ScopeSpawn> = Vec::new();
    for held in batch
        .iter()
        .filter_map(|o| s.task_host.take_held(o.ready.d.envelope.id))
    {
        match spawns
            .iter_mut()
            .find(|sp| sp.scope == held.scope && sp.repair == held.repair)
        {
            Some(sp) => sp.children.extend(held.children),
            None => spawns.push(held),
        }
    }
    // Due `task-received` events go first, in the same write as the outcomes: a task's
    // received event always precedes its outcome's (this thread is their only publisher).
    let mut events = s.take_received(
        || batch.iter().map(|o| o.ready.d.envelope.id).collect(),
        false,
    );
    let revoked_running: HashSet<TaskId> = {
        let mut set = s.revoked_running();
        batch
            .iter()
            .filter_map(|o| set.take(&o.ready.d.envelope.id))
            .collect()
    };
    // From here on the keeper leaves these leases alone (see `Running::settling`); one it
    // marked lost before is taken out of its set just below. Not under one lock with the set:
    // the keeper takes the set's lock before `running`'s.
    {
        let mut running = s.running();
        for o in &batch {
            if let Some(r) = running.get_mut(&o.ready.d.envelope.id) {
                r.settling = true;
            }
        }
    }
    // Counted by name for `inspect stats`, before the outcomes are taken apart below.
    count_settled(s, &batch);
    let lost: HashSet<Lease> = {
        let mut set = s.lost_leases();
        batch
            .iter()
            .filter_map(|o| set.take(&o.ready.d.lease))
            .collect()
    };
    for Outcome {
        ready,
        mut ran,
        started,
    } in batch
    {
        let d = ready.d;
        let env = &d.envelope;
        ended.push(env.id);
        if lost.contains(&d.lease) {
            // Not stored, not continued, not acked: the broker put the task back in its queue,
            // and the worker that takes it (or has taken it) settles it.
            tracing::warn!(task_id = %env.id, task = %env.task, "outcome dropped: the lease was lost while it ran");
            report.lost += 1;
            continue;
        }
        if revoked_running.contains(&env.id) && !matches!(ran, Ran::Succeeded(_)) {
            // It stopped because it was revoked (its token fired, or its child was killed).
            // One that finished anyway is recorded as what it did: its effects happened.
            ran = Ran::Revoked(TaskError::new(kinds::REVOKED, "revoked while it ran"));
        }
        let settle = decide(&ran, env.attempts, &ready.options);
        let scoped_only =
            !env.flow.is_empty() && env.flow.iter().all(|f| matches!(f, Frame::Spawned { .. }));
        let in_flow = !env.flow.is_empty() && !scoped_only;
        if scoped_only {
            // The same outcomes that continue a workflow below: a success, a revocation, a
            // failure for good (a retry is not final: it still counts).
            let ok = match (&ran, &settle) {
                (Ran::Succeeded(_), _) => Some(true),
                (Ran::Revoked(_), _) => Some(false),
                (Ran::Failed(_), Settle::Retry { .. }) => None,
                (Ran::Failed(_), _) => Some(false),
            };
            if let Some(ok) = ok {
                falls.extend(scopes_of(env).map(|scope| ScopeFall {
                    scope,
                    member: env.id,
                    ok,
                }));
            }
        }
        if !matches!(settle, Settle::Retry { .. }) && may_hold_refs(&env.args) {
            // It will not read its inputs again: the values it read are released below.
            read_for_good.push((env.codec, env.args.clone()));
        }
        if s.events_on() {
            events.push(finished_event(s, env, &ran, &settle, started));
        }
        match ran {
            Ran::Succeeded(value) => {
                if settle == (Settle::Succeed { store: true }) {
                    let (stored, kept) = keep_if_large(s, env, value);
                    if in_flow {
                        // A kept value stays here: what follows gets its reference.
                        let passed = match kept {
                            Some(r) => env.codec.encode(&r.to_value(), "a reference"),
                            None => Ok(stored.clone()),
                        };
                        flows.push((env.clone(), passed.map_err(TaskError::from)));
                    }
                    records.push(s.record(&d, TaskState::Success, Some(stored), None, started));
                } else if in_flow {
                    flows.push((env.clone(), Ok(value)));
                }
                completed.push(d.lease);
                report.succeeded += 1;
            }
            Ran::Revoked(err) => {
                tracing::info!(task_id = %env.id, task = %env.task, reason = %err.message, "revoked");
                if in_flow {
                    flows.push((env.clone(), Err(err.clone())));
                }
                records.push(s.record(&d, TaskState::Revoked, None, Some(err), started));
                completed.push(d.lease);
                report.revoked += 1;
            }
            Ran::Failed(err) => match settle {
                Settle::Retry { resend, .. } => {
                    let delay = settle.retry_delay();
                    tracing::info!(task_id = %env.id, task = %env.task, attempt = env.attempts, error = %err, ?delay, "retrying");
                    records.push(s.record(&d, TaskState::Retry, None, Some(err), started));
                    afterwards.push(if resend {
                        Afterwards::Resend(Box::new(d.envelope), delay)
                    } else {
                        Afterwards::Retry(d.lease, delay)
                    });
                    report.retried += 1;
                }
                _ => {
                    tracing::info!(task_id = %env.id, task = %env.task, attempt = env.attempts, error = %err, "failed");
                    if in_flow {
                        flows.push((env.clone(), Err(err.clone())));
                    }
                    // A fused chain of a stored graph: its last node is recorded as the
                    // unfused node would be (not run, when a link before it failed); its
                    // workflow step above gets the error naming the link, to record the
                    // links after it. A chain sent on its own (`BrokerFromCaller`) keeps the
                    // mark: its caller reads the failed link from the record.
                    let in_graph = env.flow.iter().any(|f| matches!(f, Frame::Graph { .. }));
                    let err = if env.task == lovage_flow::graph::CHAIN_TASK && in_graph {
                        lovage_flow::graph::chain_recorded_error(&err)
                    } else {
                        err
                    };
                    records.push(s.record(
                        &d,
                        TaskState::Failure,
                        None,
                        Some(err.clone()),
                        started,
                    ));
                    let acked = ready.options.acks_late == Some(false);
                    afterwards.push(if acked {
                        Afterwards::Bury(Box::new((d, err)))
                    } else {
                        Afterwards::Discard(Box::new((d, err)))
                    });
                    report.failed += 1;
                }
            },
        }
    }
    // Records first, then the broker: a task leaves the queue (or goes back for a retry) only
    // once its outcome is stored, so a crash in between runs it again rather than losing it.
    // If storing gave up (immediate shutdown during an outage), the leases bring them back.
    if flows.is_empty() {
        // Nothing to plan in between: the records, the scope counts' falls and the
        // completions go together (one transaction on SQLite, one script on Redis).
        if s.retry_broker("store results and complete", || {
            s.backend
                .driver()
                .spawn_store_fall_complete(&spawns, &records, &falls, &completed, &events)
        })
        .is_some()
        {
            settle_failures(s, &afterwards);
        }
    } else if s
        .retry_broker("send spawned children", || {
            let driver = s.backend.driver();
            spawns.iter().try_for_each(|sp| {
                driver
                    .enqueue_in_scope(sp.scope, &sp.children, sp.repair)
                    .map(drop)
            })
        })
        .is_some()
        && s.retry_broker("store results", || s.backend.results().store(&records))
            .is_some()
    {
        let sent = settle_in_broker(s, &flows, &falls, &completed, &afterwards);
        if s.config.sent_events {
            // The steps this batch sent, in the same write as its outcomes' events.
            events.extend(sent.iter().map(Event::sent));
        }
        if !events.is_empty() {
            s.retry_broker("publish events", || s.backend.events().publish(&events));
        }
    }
    release_inputs(s, &read_for_good);
    {
        let mut running = s.running();
        for id in &ended {
            running.remove(id);
        }
    }
    s.release_units(ended.iter().copied());
    s.room.notify_all();
    let mut total = s.report();
    total.add(&report);
    let done = total.succeeded + total.failed;
    drop(total);
    s.info().tasks_done = done;
}

/// Releases the kept values these finished tasks read (their arguments' references), once
/// their outcomes are stored; the last reader's release frees a value in its worker.
fn release_inputs(s: &Shared, read: &[(Codec, Vec<u8>)]) {
    for (codec, args) in read {
        let Ok(args) = codec.decode::<serde_json::Value>(args, "task arguments") else {
            continue;
        };
        let mut refs = Vec::new();
        refs_in(&args, &mut refs);
        for r in &refs {
            release(s.backend.results(), r);
        }
    }
}

/// The event that says how a task's run ended, from what the finisher knows of it.
fn finished_event(
    s: &Shared,
    env: &Envelope,
    ran: &Ran,
    settle: &Settle,
    started: Option<Timestamp>,
) -> Event {
    let (kind, state, error) = match ran {
        Ran::Succeeded(_) => (EventKind::TaskSucceeded, TaskState::Success, None),
        Ran::Revoked(e) => (EventKind::TaskRevoked, TaskState::Revoked, Some(e)),
        Ran::Failed(e) if matches!(settle, Settle::Retry { .. }) => {
            (EventKind::TaskRetried, TaskState::Retry, Some(e))
        }
        // Refused rather than failed: no worker can run it as sent (Celery's task-rejected).
        Ran::Failed(e) if e.is(kinds::UNKNOWN_TASK) || e.is(kinds::CODEC) => {
            (EventKind::TaskRejected, TaskState::Failure, Some(e))
        }
        Ran::Failed(e) => (EventKind::TaskFailed, TaskState::Failure, Some(e)),
    };
    let mut ev = Event::new(kind);
    ev.task_id = Some(env.id);
    ev.name = Some(env.task.clone());
    ev.queue = Some(env.queue.clone());
    ev.worker = Some(s.id.clone());
    ev.state = Some(state);
    ev.runtime_ms = started.map(|t| (ev.ts - t).as_millis() as u64);
    ev.retries = Some(env.attempts.saturating_sub(1));
    ev.error = error.map(|e| format!("{}: {}", e.kind, e.message));
    ev
}

/// Publishes the due `task-received` events (every one noted with `all`); a broker that fails
/// here only loses them, logged: the tasks themselves are not held up.
fn publish_received(s: &Shared, all: bool) {
    let events = s.take_received(HashSet::new, all);
    if events.is_empty() {
        return;
    }
    if let Err(e) = s.backend.events().publish(&events) {
        tracing::warn!(worker = %s.id, error = %e, count = events.len(), "could not publish task-received events");
    }
}

/// After the records are stored: plans what follows in workflows, completes the finished
/// tasks together with their next steps, then retries, resends or discards the failures.
/// Returns the next steps sent (none if it gave up).
fn settle_in_broker(
    s: &Shared,
    flows: &[(Envelope, Result<Vec<u8>, TaskError>)],
    falls: &[ScopeFall],
    completed: &[Lease],
    afterwards: &[Afterwards],
) -> Vec<Envelope> {
    let finished: Vec<(&Envelope, Finished<'_>)> = flows
        .iter()
        .map(|(env, outcome)| match outcome {
            Ok(value) => (env, Finished::Success(value)),
            Err(err) => (env, Finished::Failure(err)),
        })
        .collect();
    // Planning gives up only when an immediate stop meets a broker outage: then nothing is
    // settled, and the leases bring these tasks back to be continued.
    let Some(lovage_flow::Planned { next, consumed }) = plan_flows(s, &finished) else {
        return Vec::new();
    };
    // Scope members settled in this batch leave their counts after the plan (as the plan's
    // own falls do) and before their completions.
    if s.retry_broker("leave scopes", || s.backend.driver().scope_fall(falls))
        .is_none()
    {
        return Vec::new();
    }
    // What these tasks start (next steps, error callbacks) goes out with the completions (one
    // transaction on SQLite), before any failed task is discarded: a crash in between cannot
    // lose an error callback.
    let sent = s.retry_broker("complete", || {
        s.backend.broker().complete_and_send(completed, &next)
    });
    // The calls these tasks released are sent: their entries in the waiting lists go. A
    // failure here only leaves the lists to their time to live.
    if sent.is_some() {
        if let Err(e) = lovage_flow::after::consumed(&s.backend, &consumed) {
            tracing::warn!(worker = %s.id, error = %e, "could not empty the waiting lists of finished tasks");
        }
    }
    settle_failures(s, afterwards);
    if sent.is_some() {
        next
    } else {
        Vec::new()
    }
}

/// The scopes `env` counts in (from its `Spawned` frames).
fn scopes_of(env: &Envelope) -> impl Iterator<Item = TaskId> + '_ {
    env.flow.iter().filter_map(|f| match f {
        Frame::Spawned { scope, .. } => *scope,
        _ => None,
    })
}

/// Once the finished tasks are completed: retries, resends or discards the failures.
fn settle_failures(s: &Shared, afterwards: &[Afterwards]) {
    for step in afterwards {
        match step {
            Afterwards::Retry(lease, delay) => {
                s.retry_broker("retry", || s.backend.broker().retry(lease, *delay));
            }
            Afterwards::Resend(env, delay) => {
                let mut again = (**env).clone();
                again.eta = Some(Timestamp::now() + *delay);
                s.retry_broker("send a retry", || {
                    s.backend.broker().enqueue(std::slice::from_ref(&again))
                });
            }
            Afterwards::Discard(dead) => {
                let (d, err) = &**dead;
                s.retry_broker("discard", || {
                    s.backend.broker().discard(&d.lease, &d.envelope, err)
                });
            }
            Afterwards::Bury(dead) => {
                let (d, err) = &**dead;
                s.retry_broker("dead-letter", || s.backend.broker().bury(&d.envelope, err));
            }
        }
    }
}

/// Works out what follows these tasks in their workflows (joins and records done); the
/// returned steps are for the caller to send with the completions.
fn plan_flows(s: &Shared, finished: &[(&Envelope, Finished<'_>)]) -> Option<lovage_flow::Planned> {
    if finished.is_empty() {
        return Some(lovage_flow::Planned::default());
    }
    let ctx = s.flow_context();
    let mut planned = s.retry_broker("continue workflows", || lovage_flow::plan(&ctx, finished))?;
    // A step queued for this worker in a queue it does not serve would only wait out its steal
    // delay: it goes to the shared queue at once instead (of another worker's queues this one
    // knows nothing, so such an affinity stays).
    let mine = |e: &Envelope| e.affinity.as_ref().is_some_and(|a| a.worker == s.id);
    if planned.next.iter().any(mine) {
        let queues = s.queues();
        for env in planned.next.iter_mut().filter(|e| mine(e)) {
            if !queues.contains(&env.queue) {
                env.affinity = None;
            }
        }
    }
    Some(planned)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use lovage_broker::{connect, Envelope, ResultRecord, Timestamp, WorkerInfo};
    use lovage_core::{CancelToken, Codec, Signature, TaskError, TaskId, TaskState};
    use lovage_pool::ThreadPool;

    use super::finish_batch;
    use crate::settle::Ran;
    use crate::shared::{Outcome, Ready, Running, Shared};
    use crate::WorkerConfig;

    fn shared() -> Shared {
        let backend = connect(&format!("memory://finisher-{}", TaskId::new())).unwrap();
        let now = Timestamp::now();
        let info = WorkerInfo {
            id: "a".into(),
            host: "h".into(),
            pid: 1,
            queues: vec!["q".into()],
            pool: "threads x1".into(),
            started: now,
            heartbeat: now,
            tasks_done: 0,
            active: 0,
            registered: Vec::new(),
            limits: Default::default(),
            resources: Default::default(),
        };
        let pool = Arc::new(ThreadPool::builder().workers(1).build().unwrap());
        Shared::new(backend, pool, WorkerConfig::default(), info, None, 1)
    }

    /// Worker A is cut off past its lease; worker B takes the task, stores SUCCESS and holds
    /// it; then A's renewal finds the lease lost and A's run fails. A's outcome is dropped: no
    /// FAILURE over B's SUCCESS, no dead letter, B's delivery untouched. Before the keeper
    /// marked lost leases, A settled it as failed (and only the store's attempt check and the
    /// fencing token kept B's record and delivery).
    #[test]
    fn an_outcome_whose_lease_was_lost_is_dropped() {
        let s = shared();
        let b = s.backend.driver();
        let mut sig = Signature::new("finisher.task", &[1], Codec::Json).unwrap();
        sig.options.queue = Some("q".into());
        b.enqueue(&[Envelope::from_signature(sig)]).unwrap();
        let queues = vec!["q".to_owned()];
        let a = b
            .reserve(&queues, 1, Duration::from_millis(50), Duration::ZERO)
            .unwrap()
            .remove(0);
        std::thread::sleep(Duration::from_millis(120));
        let taken = b
            .reserve(&queues, 1, Duration::from_secs(60), Duration::ZERO)
            .unwrap()
            .remove(0);
        let success = ResultRecord {
            attempts: taken.envelope.attempts,
            ..s.record(&taken, TaskState::Success, Some(b"1".to_vec()), None, None)
        };
        b.store(&[success]).unwrap();
        s.running().insert(
            a.envelope.id,
            Running {
                lease: a.lease,
                task: "finisher.task".into(),
                token: CancelToken::new(),
                handle: None,
                run_started: None,
                soft_time_limit: None,
                expires: None,
                acked: false,
                settling: false,
                withdrawal: Default::default(),
                started_record: None,
            },
        );
        let lost = b.renew(&[a.lease], Duration::from_secs(60)).unwrap();
        assert_eq!(lost, vec![a.lease]);
        crate::keeper::settle_lost(&s, &lost, || false);
        finish_batch(
            &s,
            vec![Outcome {
                ready: Ready::new(a.clone()),
                ran: Ran::Failed(TaskError::new("Boom", "A's late failure")),
                started: Some(Timestamp::now()),
            }],
        );
        let report = s.report().clone();
        assert_eq!((report.lost, report.failed), (1, 0), "{report:?}");
        assert_eq!(
            b.get(a.envelope.id).unwrap().unwrap().state,
            TaskState::Success
        );
        assert!(b.dead_letters(10).unwrap().is_empty());
        assert!(b
            .renew(&[taken.lease], Duration::from_secs(60))
            .unwrap()
            .is_empty());
        assert!(s.running().is_empty(), "A no longer counts it as running");
    }

    /// The finisher completes a lease while the keeper renews it: the renewal finds the lease
    /// gone, but that is the completion, not a loss. Before the finisher marked what it settles,
    /// the keeper warned that the lease was lost and left it in the lost set for good.
    #[test]
    fn a_lease_completed_while_the_keeper_renews_is_not_lost() {
        let s = shared();
        let b = s.backend.driver();
        let mut sig = Signature::new("finisher.task", &[1], Codec::Json).unwrap();
        sig.options.queue = Some("q".into());
        b.enqueue(&[Envelope::from_signature(sig)]).unwrap();
        let d = b
            .reserve(
                &["q".to_owned()],
                1,
                Duration::from_secs(60),
                Duration::ZERO,
            )
            .unwrap()
            .remove(0);
        s.running().insert(
            d.envelope.id,
            Running {
                lease: d.lease,
                task: "finisher.task".into(),
                token: CancelToken::new(),
                handle: None,
                run_started: None,
                soft_time_limit: None,
                expires: None,
                acked: false,
                settling: true,
                withdrawal: Default::default(),
                started_record: None,
            },
        );
        // The finisher's store-and-complete went through; it has not yet forgotten the task.
        b.complete(&[d.lease]).unwrap();
        let gone = b.renew(&[d.lease], Duration::from_secs(60)).unwrap();
        assert_eq!(gone, vec![d.lease]);
        crate::keeper::settle_lost(&s, &gone, || false);
        assert!(
            s.lost_leases().is_empty(),
            "a completion is not a lost lease"
        );
    }
}
