//! The control thread: polls the worker's mailbox in the broker and answers inspect and control
//! commands (Celery's `inspect` and `control`). It runs beside the task pool, so a worker whose
//! every slot is busy still answers; a request that expired in the mailbox is dropped
//! unanswered (its sender stopped waiting long ago).
//!
//! Every answer is `{"ok": ...}` or `{"error": "..."}`; a command this worker cannot carry out
//! (an unknown one, a pool that cannot be resized) is an error reply, never a silent no-op.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use lovage_broker::ops::ControlRequest;
use lovage_broker::{TaskLimits, Timestamp};
use lovage_core::{parse_rate, CancelReason, Registry, TaskId};
use serde_json::{json, Value};

use crate::shared::Shared;

/// How often the mailbox is looked at: well inside the 1 s a caller waits by default.
const CONTROL_POLL: Duration = Duration::from_millis(100);

/// Every command a worker answers, for an unknown command's reply.
fn known_commands() -> String {
    let all: Vec<&str> = lovage_broker::ops::INSPECT_COMMANDS
        .iter()
        .chain(lovage_broker::ops::CONTROL_COMMANDS)
        .copied()
        .collect();
    all.join(", ")
}

/// Answers the mailbox until the worker is done.
pub(crate) fn control_loop(s: &Shared) {
    let mut failing = false;
    while !s.done.load(Ordering::SeqCst) {
        std::thread::sleep(CONTROL_POLL);
        let requests = match s.backend.control().take_control(&s.id) {
            Ok(r) => {
                failing = false;
                r
            }
            Err(e) => {
                // The other threads log the outage and back off; this one only waits for it.
                if !failing {
                    tracing::debug!(worker = %s.id, error = %e, "could not read the control mailbox");
                }
                failing = true;
                continue;
            }
        };
        for request in requests {
            if request.expires <= Timestamp::now() {
                continue;
            }
            let reply = answer(s, &request);
            tracing::debug!(worker = %s.id, command = %request.command, by = %request.issued_by, "control command answered");
            if let Err(e) = s.backend.control().reply(&request.id, &s.id, &reply) {
                tracing::warn!(worker = %s.id, command = %request.command, error = %e, "could not store a control reply");
            }
        }
    }
}

/// The answer to one request.
pub(crate) fn answer(s: &Shared, request: &ControlRequest) -> Value {
    match run(s, &request.command, &request.args) {
        Ok(v) => json!({ "ok": v }),
        Err(e) => json!({ "error": e }),
    }
}

fn run(s: &Shared, command: &str, args: &Value) -> Result<Value, String> {
    match command {
        "ping" => Ok(json!("pong")),
        "stats" => Ok(stats(s)),
        "active" => Ok(in_hand(s, true)),
        "reserved" => Ok(in_hand(s, false)),
        "scheduled" => Ok(scheduled(s)),
        "registered" => Ok(registered(s)),
        "conf" => Ok(conf(s)),
        "revoked" => Ok(revoked(s)),
        "revoke" => revoke(s, args),
        "rate_limit" => rate_limit(s, args),
        "time_limit" => time_limit(s, args),
        "pool_grow" => {
            let n = count_arg(args)?;
            let to = crate::scale::grow(s, n)?;
            Ok(json!(format!("pool grown by {n} to {to}")))
        }
        "pool_shrink" => {
            let n = count_arg(args)?;
            let to = crate::scale::shrink(s, n)?;
            Ok(json!(format!(
                "pool shrunk by {n} to {to} (running tasks finish first)"
            )))
        }
        "autoscale" => {
            let (max, min) = autoscale_args(args)?;
            let a = crate::scale::set_autoscale(s, max, min)?;
            Ok(json!(format!(
                "autoscale {},{} (now {})",
                a.max,
                a.min,
                s.slots.current()
            )))
        }
        "add_consumer" => {
            let queue = str_arg(args, "queue")?;
            let mut queues = s.queues();
            if queues.iter().any(|q| q == queue) {
                return Ok(json!(format!("already consuming from {queue:?}")));
            }
            queues.push(queue.to_owned());
            s.set_queues(queues);
            tracing::info!(worker = %s.id, queue, "now consuming from a queue (add_consumer)");
            Ok(json!(format!("now consuming from {queue:?}")))
        }
        "cancel_consumer" => {
            let queue = str_arg(args, "queue")?;
            let mut queues = s.queues();
            if !queues.iter().any(|q| q == queue) {
                return Err(format!("not consuming from {queue:?} (queues: {queues:?})"));
            }
            if queues.len() == 1 {
                return Err(format!(
                    "{queue:?} is the worker's only queue; add another first (add_consumer) or \
                     shut the worker down"
                ));
            }
            queues.retain(|q| q != queue);
            s.set_queues(queues);
            tracing::info!(worker = %s.id, queue, "no longer consuming from a queue (cancel_consumer)");
            Ok(json!(format!("no longer consuming from {queue:?}")))
        }
        "enable_events" | "disable_events" => {
            let on = command == "enable_events";
            s.set_events(on);
            Ok(json!(if on { "events on" } else { "events off" }))
        }
        "shutdown" => {
            tracing::info!(worker = %s.id, "warm shutdown asked for by a control command");
            s.shutdown.graceful();
            Ok(json!("shutting down (warm: running tasks finish)"))
        }
        lovage_broker::dataref::REPLICATE_COMMAND => replicate(s, args),
        other => Err(format!(
            "unknown command {other:?} (known: {})",
            known_commands()
        )),
    }
}

/// A broadcast: copies the kept value `args.ref` into this worker's store.
fn replicate(s: &Shared, args: &Value) -> Result<Value, String> {
    let Some(store) = &s.data else {
        return Err("this worker has no data plane (--data-plane) to keep a copy in".into());
    };
    let r = args
        .get("ref")
        .and_then(lovage_broker::ResultRef::from_value)
        .ok_or("argument \"ref\" (a kept value's reference) is missing")?;
    let copied = store.copy_in(&r)?;
    tracing::debug!(worker = %s.id, key = %r.key, copied, "kept a copy of a broadcast value");
    Ok(json!({ "copied": copied }))
}

fn str_arg<'a>(args: &'a Value, key: &str) -> Result<&'a str, String> {
    args.get(key)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| format!("argument {key:?} (a non-empty string) is missing"))
}

/// `n` of `pool_grow` and `pool_shrink`: a count ≥ 1, 1 when absent (as Celery's).
fn count_arg(args: &Value) -> Result<usize, String> {
    match args.get("n") {
        None | Some(Value::Null) => Ok(1),
        Some(v) => match v.as_u64() {
            Some(n) if n >= 1 => Ok(n as usize),
            _ => Err(format!("argument \"n\" must be a count ≥ 1, not {v}")),
        },
    }
}

/// `autoscale`'s bounds: `{"max_min": "MAX,MIN"}` (what `lovage control autoscale 10,3`
/// sends) or `{"max": MAX, "min": MIN}`.
fn autoscale_args(args: &Value) -> Result<(usize, usize), String> {
    if let Some(text) = args.get("max_min").and_then(Value::as_str) {
        let a = crate::Autoscale::parse(text)?;
        return Ok((a.max, a.min));
    }
    let count = |key: &str| {
        args.get(key)
            .and_then(Value::as_u64)
            .map(|n| n as usize)
            .ok_or_else(|| {
                format!("argument {key:?} is missing (give \"max_min\": \"MAX,MIN\", or \"max\" and \"min\")")
            })
    };
    Ok((count("max")?, count("min")?))
}

/// `seconds` from an argument that may be absent or null (None), or else a number ≥ 0.
fn secs_arg(args: &Value, key: &str) -> Result<Option<f64>, String> {
    match args.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => match v.as_f64() {
            Some(x) if x.is_finite() && x >= 0.0 => Ok(Some(x)),
            _ => Err(format!(
                "argument {key:?} must be a number of seconds ≥ 0, not {v}"
            )),
        },
    }
}

fn stats(s: &Shared) -> Value {
    let report = s.report().clone();
    let info = s.info().clone();
    let chains = s.chain_totals();
    json!({
        "pid": info.pid,
        "host": info.host,
        "pool": pool_json(s),
        "uptime_s": s.born.elapsed().as_secs_f64(),
        "broker": s.backend.url(),
        "rusage": rusage(),
        "running": s.running().len(),
        // By task name; a fused chain's links under their own names.
        "total": s.totals(),
        // The `lovage.graph.chain` messages that ran several graph nodes each, and those nodes.
        "fused_chains": {"messages": chains.messages, "links": chains.links},
        // The data plane's store (null without one): kept values in memory and in files,
        // and what was spilled since the worker started.
        "data": s.data.as_ref().map(|d| d.stats()),
        "paused_for_memory": s.pause.on(),
        "memory_pauses": s.pause.times(),
        "report": {
            "succeeded": report.succeeded,
            "failed": report.failed,
            "retried": report.retried,
            "revoked": report.revoked,
            "requeued": report.requeued,
            "lost": report.lost,
        },
    })
}

/// The pool's kind and size now, with the bounds it may move within: the autoscaler's, or,
/// without it, the size itself (only commands change it).
fn pool_json(s: &Shared) -> Value {
    let size = s.slots.current();
    let (max, min) = s.slots.autoscale().map_or((size, size), |a| (a.max, a.min));
    json!({
        "kind": s.config.pool.name(),
        "size": size,
        "max_concurrency": max,
        "min_concurrency": min,
        "autoscale": s.slots.autoscale().is_some(),
        "prefetch_max": s.config.prefetch,
    })
}

/// CPU time and peak memory of the worker process (its children not counted).
fn rusage() -> Value {
    // SAFETY: rusage is plain integers, for which all zeroes is a valid value.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage writes into the struct we own and pass by pointer.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } != 0 {
        return Value::Null;
    }
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    json!({
        "utime_s": secs(ru.ru_utime),
        "stime_s": secs(ru.ru_stime),
        "maxrss_kib": ru.ru_maxrss,
    })
}

/// The tasks in the pool: running ones (`active`, with how long they have run) or those waiting
/// in its queue, prefetched (`reserved`).
fn in_hand(s: &Shared, running: bool) -> Value {
    let mut out: Vec<Value> = s
        .running()
        .iter()
        .filter(|(_, r)| {
            let started = r.handle.as_ref().is_some_and(|h| h.running() || h.done());
            started == running
        })
        .map(|(id, r)| {
            let mut v = json!({
                "id": id.to_string(),
                "name": r.task,
                "acked": r.acked,
            });
            if running {
                v["elapsed_s"] = json!(r.run_started.map_or(0.0, |t| t.elapsed().as_secs_f64()));
            }
            v
        })
        .collect();
    out.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
    Value::Array(out)
}

/// Tasks this worker holds for a later time: those waiting for their rate-limit slot. (Tasks
/// with an ETA or a retry delay wait in the broker, not in a worker: `lovage queues` and the
/// server's queue pages count them.)
fn scheduled(s: &Shared) -> Value {
    let now = Instant::now();
    Value::Array(
        s.paced()
            .iter()
            .map(|(at, r)| {
                json!({
                    "id": r.d.envelope.id.to_string(),
                    "name": r.d.envelope.task,
                    "due_in_s": at.saturating_duration_since(now).as_secs_f64(),
                    "why": "rate limit",
                })
            })
            .collect(),
    )
}

/// The revoked task ids this worker met (before it started them, while they ran, or in a
/// `revoke` sent to it), newest first: at most [`MAX_REVOKED_KEPT`](crate::shared::MAX_REVOKED_KEPT),
/// with `count` (ids noted since the worker started) and `truncated` when older ones were
/// dropped. Revocation itself is kept by the broker, so every worker honours a revoke whether
/// or not its id is listed here.
fn revoked(s: &Shared) -> Value {
    let known = s.revoked_known();
    let ids: Vec<String> = known
        .newest_first()
        .iter()
        .map(ToString::to_string)
        .collect();
    json!({
        "truncated": known.count > ids.len() as u64,
        "count": known.count,
        "ids": ids,
    })
}

fn registered(s: &Shared) -> Value {
    let limits = s.info().limits.clone();
    Value::Array(
        registered_names()
            .into_iter()
            .map(|name| {
                let mut v = json!({ "name": name });
                if let Some(l) = limits.get(&name) {
                    v["limits"] = json!(l);
                }
                v
            })
            .collect(),
    )
}

fn conf(s: &Shared) -> Value {
    let c = &s.config;
    json!({
        "name": c.name,
        "queues": s.queues(),
        "concurrency": s.slots.current(),
        "autoscale": s.slots.autoscale().map(|a| json!({
            "max": a.max,
            "min": a.min,
            "idle_s": a.idle.as_secs_f64(),
        })),
        "pool": c.pool.name(),
        "prefetch": c.prefetch,
        "lease_s": c.lease.as_secs_f64(),
        "heartbeat_s": c.heartbeat.as_secs_f64(),
        "poll_s": c.poll.as_secs_f64(),
        "result_ttl_s": c.result_ttl.map(|t| t.as_secs_f64()),
        "events": s.events_on(),
    })
}

/// `revoke {task_id: ID or [IDs], terminate}`: revokes in the broker (so no worker starts it);
/// with `terminate`, a task this worker is running is cancelled now rather than at the next
/// lease renewal (a thread sees its token; a process pool kills the child).
fn revoke(s: &Shared, args: &Value) -> Result<Value, String> {
    let ids: Vec<TaskId> = match args.get("task_id") {
        Some(Value::String(one)) => vec![parse_id(one)?],
        Some(Value::Array(many)) if !many.is_empty() => many
            .iter()
            .map(|v| {
                v.as_str()
                    .ok_or("task ids must be strings")
                    .and_then(|t| parse_id(t).map_err(|_| "bad task id"))
            })
            .collect::<Result<_, _>>()
            .map_err(|e| format!("argument \"task_id\": {e}"))?,
        _ => return Err("argument \"task_id\" (a task id or a list of them) is missing".into()),
    };
    let terminate = args
        .get("terminate")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    for id in &ids {
        s.backend
            .broker()
            .revoke(*id)
            .map_err(|e| format!("could not revoke {id} in the broker: {e}"))?;
    }
    s.note_revoked(ids.iter().copied());
    let mut terminated = Vec::new();
    if terminate {
        // The keeper's lock order: the revoked set before the running map.
        let mut set = s.revoked_running();
        let running = s.running();
        for id in &ids {
            if let Some(r) = running.get(id).filter(|r| !r.settling) {
                r.token.cancel(CancelReason::Revoked);
                set.insert(*id);
                terminated.push(id.to_string());
            }
        }
    }
    Ok(json!({
        "revoked": ids.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "terminated": terminated,
    }))
}

fn parse_id(text: &str) -> Result<TaskId, String> {
    text.parse().map_err(|e| format!("task id {text:?}: {e}"))
}

/// `rate_limit {task, rate}`: sets a task type's rate limit on this worker (`"10/s"`, `"30/m"`;
/// `""` or null removes it), over the registered and the call's.
fn rate_limit(s: &Shared, args: &Value) -> Result<Value, String> {
    let task = known_task(args)?;
    let rate = match args.get("rate") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(r)) => r.trim().to_owned(),
        Some(other) => {
            return Err(format!(
                "argument \"rate\" must be a string such as \"10/s\", not {other}"
            ))
        }
    };
    if !rate.is_empty() {
        parse_rate(&rate).map_err(|e| format!("rate {rate:?}: {e}"))?;
    }
    set_limits(s, &task, |l| l.rate_limit = Some(rate.clone()));
    Ok(json!(if rate.is_empty() {
        format!("rate limit of {task} removed")
    } else {
        format!("rate limit of {task} set to {rate}")
    }))
}

/// `time_limit {task, soft_s, hard_s}`: sets a task type's time limits for tasks this worker
/// starts from now on.
fn time_limit(s: &Shared, args: &Value) -> Result<Value, String> {
    let task = known_task(args)?;
    let soft = secs_arg(args, "soft_s")?;
    let hard = secs_arg(args, "hard_s")?;
    if soft.is_none() && hard.is_none() {
        return Err("give \"soft_s\", \"hard_s\" or both (seconds)".into());
    }
    if let (Some(soft), Some(hard)) = (soft, hard) {
        if soft > hard {
            return Err(format!(
                "the soft limit ({soft} s) is over the hard one ({hard} s)"
            ));
        }
    }
    set_limits(s, &task, |l| {
        if soft.is_some() {
            l.soft_time_limit_s = soft;
        }
        if hard.is_some() {
            l.time_limit_s = hard;
        }
    });
    Ok(json!(format!(
        "time limits of {task} set (soft {}, hard {})",
        soft.map_or("unchanged".into(), |x| format!("{x} s")),
        hard.map_or("unchanged".into(), |x| format!("{x} s")),
    )))
}

/// The `task` argument, which must name a task this worker has registered.
fn known_task(args: &Value) -> Result<String, String> {
    let task = str_arg(args, "task")?;
    Registry::global()
        .get(task)
        .map(|_| task.to_owned())
        .map_err(|_| format!("this worker has no task named {task:?}"))
}

/// Changes the override of `task` and shows it in the worker's record (the server's task types
/// read the limits there).
fn set_limits(s: &Shared, task: &str, change: impl FnOnce(&mut TaskLimits)) {
    let shown = {
        let mut overrides = s.overrides();
        let o = overrides.entry(task.to_owned()).or_default();
        change(o);
        let mut shown = registered_limits().remove(task).unwrap_or_default();
        if let Some(r) = &o.rate_limit {
            shown.rate_limit = Some(r.clone()).filter(|r| !r.is_empty());
        }
        if o.soft_time_limit_s.is_some() {
            shown.soft_time_limit_s = o.soft_time_limit_s;
        }
        if o.time_limit_s.is_some() {
            shown.time_limit_s = o.time_limit_s;
        }
        shown
    };
    let mut info = s.info();
    if shown.is_empty() {
        info.limits.remove(task);
    } else {
        info.limits.insert(task.to_owned(), shown);
    }
}

/// The task names registered in this process, sorted.
pub(crate) fn registered_names() -> Vec<String> {
    let mut names: Vec<String> = Registry::global()
        .names()
        .into_iter()
        .map(str::to_owned)
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    names.sort();
    names
}

/// The registered limits of the task types that have any.
pub(crate) fn registered_limits() -> BTreeMap<String, TaskLimits> {
    let registry = Registry::global();
    let mut out = BTreeMap::new();
    for name in registry.names() {
        let Ok(entry) = registry.get(name) else {
            continue;
        };
        let o = (entry.options)();
        let l = TaskLimits {
            rate_limit: o.rate_limit,
            soft_time_limit_s: o.soft_time_limit.map(|d| d.as_secs_f64()),
            time_limit_s: o.time_limit.map(|d| d.as_secs_f64()),
        };
        if !l.is_empty() {
            out.insert(name.to_owned(), l);
        }
    }
    out
}
