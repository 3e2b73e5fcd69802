//! The worker's control thread against real brokers (SQLite file, Redis): a request put in a
//! worker's mailbox is answered while every pool slot is busy; inspect commands show what the
//! worker holds; control commands change what it does, or say clearly why they cannot.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests panic to fail

mod common;

use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::Fresh;
use lovage_broker::ops::{broadcast, ControlRequest, EventKind, Gathered};
use lovage_broker::{App, Backend};
use lovage_core::{Codec, Signature, TaskState};
use lovage_macros::task;
use lovage_worker::{PoolKind, Worker, WorkerConfig, WorkerReport};
use serde_json::{json, Value};

/// Long enough for any answer on a loaded machine; a test never waits for it unless it fails.
const LONG: Duration = Duration::from_secs(20);

/// Groups of [`held`] tasks let go (each scenario holds its own group, as they run at once).
static RELEASED: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Runs until its `group` is in [`RELEASED`] or it is cancelled (revoke), up to 60 s.
#[task(crate = lovage_core)]
fn held(group: String) -> Result<String, lovage_core::TaskError> {
    let start = Instant::now();
    while !RELEASED.lock().unwrap().contains(&group) && start.elapsed() < Duration::from_secs(60) {
        lovage_core::check_cancelled()?;
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(group)
}

#[task(crate = lovage_core)]
fn echo(x: i64) -> i64 {
    x
}

struct Running {
    app: App,
    backend: Backend,
    id: String,
    thread: Option<std::thread::JoinHandle<WorkerReport>>,
    shutdown: lovage_worker::Shutdown,
    _fresh: Fresh,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.shutdown.immediate();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A worker of one thread on queue `q-main`, heartbeating every 100 ms.
fn start(fresh: Fresh) -> Running {
    start_with(fresh, |_| {})
}

/// [`start`] with the config changed by `tweak` first.
fn start_with(fresh: Fresh, tweak: impl FnOnce(&mut WorkerConfig)) -> Running {
    let backend = fresh.backend.clone();
    let mut config = WorkerConfig {
        queues: vec!["q-main".into()],
        concurrency: 1,
        prefetch: 4,
        pool: PoolKind::Threads,
        poll: Duration::from_millis(50),
        heartbeat: Duration::from_millis(100),
        ..WorkerConfig::default()
    };
    tweak(&mut config);
    let worker = Worker::new(backend.clone(), config).unwrap();
    let id = worker.id().to_owned();
    let shutdown = worker.shutdown_handle();
    let thread = std::thread::spawn(move || worker.run().unwrap());
    Running {
        app: App::with_backend(backend.clone()),
        backend,
        id,
        thread: Some(thread),
        shutdown,
        _fresh: fresh,
    }
}

fn ask(w: &Running, command: &str, args: Value) -> Value {
    let g = ask_all(w, std::slice::from_ref(&w.id), command, args);
    assert!(
        g.missing.is_empty(),
        "{command}: no answer from {:?}",
        g.missing
    );
    g.replies[&w.id].clone()
}

fn ask_all(w: &Running, to: &[String], command: &str, args: Value) -> Gathered {
    let request = ControlRequest::new(command, args, "test");
    broadcast(&w.backend, to, &request, LONG, true).unwrap()
}

fn send(w: &Running, task: &str, args: Value, queue: &str) -> lovage_core::TaskId {
    let mut sig = Signature::new(task, &args, Codec::Json).unwrap();
    sig.options.queue = Some(queue.into());
    w.app.send_signature(sig).unwrap()
}

fn wait_state(w: &Running, id: lovage_core::TaskId, want: TaskState) {
    let rec = w.app.wait_record(id, LONG).unwrap();
    assert_eq!(rec.map(|r| r.state), Some(want), "task {id}");
}

/// Waits until `f` holds, failing after [`LONG`].
fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + LONG;
    while !f() {
        assert!(Instant::now() < deadline, "never happened: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Every pool slot busy with a held task, one more waiting in the pool's queue: the worker
/// still answers `ping`, `active` shows the running one with its name, `reserved` the other;
/// `revoke` with `terminate` stops the running one at once; `stats` counts it by name.
fn a_busy_worker_answers_and_terminates(fresh: Fresh) {
    let w = start(fresh);
    let group = lovage_core::TaskId::new().to_string();
    let first = send(&w, held::NAME, json!([group]), "q-main");
    let second = send(&w, held::NAME, json!([group]), "q-main");
    let ids = |v: &Value| -> Vec<String> {
        v["ok"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["id"].as_str().unwrap().to_owned())
            .collect()
    };
    eventually(
        "the first task runs and the second waits in the pool",
        || {
            ids(&ask(&w, "active", json!(null))) == [first.to_string()]
                && ids(&ask(&w, "reserved", json!(null))) == [second.to_string()]
        },
    );
    assert_eq!(ask(&w, "ping", json!(null)), json!({"ok": "pong"}));
    let active = ask(&w, "active", json!(null));
    assert_eq!(active["ok"][0]["name"], held::NAME);
    assert!(active["ok"][0]["elapsed_s"].as_f64().unwrap() >= 0.0);

    let revoked = ask(
        &w,
        "revoke",
        json!({"task_id": first.to_string(), "terminate": true}),
    );
    assert_eq!(
        revoked["ok"]["terminated"],
        json!([first.to_string()]),
        "{revoked}"
    );
    wait_state(&w, first, TaskState::Revoked);
    // The second now runs; let it end.
    RELEASED.lock().unwrap().push(group);
    wait_state(&w, second, TaskState::Success);
    eventually("stats count both by name", || {
        ask(&w, "stats", json!(null))["ok"]["total"][held::NAME] == json!(2)
    });
    let stats = ask(&w, "stats", json!(null))["ok"].clone();
    assert_eq!(stats["pool"]["size"], 1);
    assert!(stats["rusage"]["utime_s"].as_f64().is_some(), "{stats}");
}

/// `registered` lists this binary's tasks; `conf` the queues; a bad argument, a task the
/// worker does not know, an unknown command and a pool resize each get an error reply that
/// says what is wrong, and the worker goes on answering.
fn bad_commands_get_clear_errors(fresh: Fresh) {
    let w = start(fresh);
    let registered = ask(&w, "registered", json!(null));
    let names: Vec<&str> = registered["ok"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&echo::NAME) && names.contains(&held::NAME),
        "{names:?}"
    );
    assert_eq!(
        ask(&w, "conf", json!(null))["ok"]["queues"],
        json!(["q-main"])
    );

    let err = |v: Value| {
        v["error"]
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| panic!("not an error: {v}"))
    };
    assert!(err(ask(
        &w,
        "rate_limit",
        json!({"task": echo::NAME, "rate": "fast"})
    ))
    .contains("\"fast\""));
    assert!(err(ask(
        &w,
        "rate_limit",
        json!({"task": "no.such.task", "rate": "1/s"})
    ))
    .contains("no.such.task"));
    assert!(err(ask(&w, "rate_limit", json!({"rate": "1/s"}))).contains("\"task\""));
    assert!(err(ask(
        &w,
        "time_limit",
        json!({"task": echo::NAME, "soft_s": 5, "hard_s": 1})
    ))
    .contains("over the hard"));
    assert!(err(ask(&w, "pool_shrink", json!({"n": 1}))).contains("at least 1 slot"));
    assert!(err(ask(&w, "pool_grow", json!({"n": 0}))).contains("count ≥ 1"));
    assert!(err(ask(&w, "autoscale", json!({"max_min": "1,3"}))).contains("below min"));
    assert!(err(ask(&w, "autoscale", json!({"max": 3}))).contains("\"min\""));
    assert!(err(ask(&w, "frobnicate", json!(null))).contains("known: ping"));
    assert!(err(ask(&w, "revoke", json!({"task_id": "nope"}))).contains("\"nope\""));
    assert!(err(ask(&w, "cancel_consumer", json!({"queue": "q-main"}))).contains("only queue"));
    assert_eq!(ask(&w, "ping", json!(null)), json!({"ok": "pong"}));
}

/// `rate_limit` and `time_limit` show in the worker's record (which the server's task types
/// read); `add_consumer` makes the worker take a queue it did not, `cancel_consumer` drops it.
fn limits_and_consumers_change_the_worker(fresh: Fresh) {
    let w = start(fresh);
    assert!(ask(
        &w,
        "rate_limit",
        json!({"task": echo::NAME, "rate": "50/s"})
    )["ok"]
        .is_string());
    assert!(ask(
        &w,
        "time_limit",
        json!({"task": echo::NAME, "soft_s": 3, "hard_s": 4})
    )["ok"]
        .is_string());
    eventually("the heartbeat carries the limits", || {
        let ws = w
            .backend
            .presence()
            .workers(Duration::from_secs(60))
            .unwrap();
        ws.iter().any(|i| {
            i.id == w.id
                && i.registered.iter().any(|n| n == echo::NAME)
                && i.limits.get(echo::NAME).is_some_and(|l| {
                    l.rate_limit.as_deref() == Some("50/s")
                        && l.soft_time_limit_s == Some(3.0)
                        && l.time_limit_s == Some(4.0)
                })
        })
    });
    // Rate-limited, it still runs.
    let id = send(&w, echo::NAME, json!([5]), "q-main");
    wait_state(&w, id, TaskState::Success);

    let extra = send(&w, echo::NAME, json!([6]), "q-extra");
    assert!(ask(&w, "add_consumer", json!({"queue": "q-extra"}))["ok"].is_string());
    wait_state(&w, extra, TaskState::Success);
    assert_eq!(
        ask(&w, "conf", json!(null))["ok"]["queues"],
        json!(["q-main", "q-extra"])
    );
    assert!(ask(&w, "cancel_consumer", json!({"queue": "q-extra"}))["ok"].is_string());
    assert_eq!(
        ask(&w, "conf", json!(null))["ok"]["queues"],
        json!(["q-main"])
    );
}

/// A destination that never answers is listed as missing once the timeout passes; each
/// control command is recorded as a `control-issued` event naming its destination, command
/// and issuer; `shutdown` stops the worker warmly.
fn missing_audit_and_shutdown(fresh: Fresh) {
    let mut w = start(fresh);
    eventually("the worker is registered", || {
        w.backend
            .presence()
            .workers(Duration::from_secs(60))
            .unwrap()
            .iter()
            .any(|i| i.id == w.id)
    });
    let request = ControlRequest::new("ping", json!(null), "test");
    let to = [w.id.clone(), "ghost@nowhere.1".to_owned()];
    let g = broadcast(&w.backend, &to, &request, Duration::from_millis(800), false).unwrap();
    assert_eq!(g.replies.keys().collect::<Vec<_>>(), [&w.id]);
    assert_eq!(g.missing, ["ghost@nowhere.1"]);
    // With no destination named, every live worker is asked.
    let all = ask_all(&w, &[], "ping", json!(null));
    assert!(
        all.replies.contains_key(&w.id) && all.missing.is_empty(),
        "{all:?}"
    );

    assert!(ask(&w, "shutdown", json!(null))["ok"].is_string());
    let report = w.thread.take().unwrap().join().unwrap();
    assert_eq!(report, WorkerReport::default());
    let events = w.backend.events().read_events(0, 1000).unwrap().events;
    let issued: Vec<_> = events
        .iter()
        .filter(|e| e.kind == EventKind::ControlIssued)
        .collect();
    assert!(
        issued.iter().any(|e| e.name.as_deref() == Some("shutdown")
            && e.worker.as_deref() == Some(w.id.as_str())
            && e.error.as_deref() == Some("test")),
        "{issued:?}"
    );
}

/// `(running, waiting in the pool's queue)` as `active` and `reserved` tell.
fn in_hand(w: &Running) -> (usize, usize) {
    let count = |what| ask(w, what, json!(null))["ok"].as_array().unwrap().len();
    (count("active"), count("reserved"))
}

fn pool_of(w: &Running) -> Value {
    ask(w, "stats", json!(null))["ok"]["pool"].clone()
}

/// `pool_grow` lets more tasks run at once, `pool_shrink` fewer, and never stops a running
/// one; `autoscale` brings the pool within its bounds at once. Seen through `active`.
fn grow_and_shrink_change_how_many_run_at_once(fresh: Fresh) {
    let w = start(fresh);
    let group = lovage_core::TaskId::new().to_string();
    let first: Vec<_> = (0..3)
        .map(|_| send(&w, held::NAME, json!([group]), "q-main"))
        .collect();
    eventually("one running, one waiting for the only slot", || {
        in_hand(&w) == (1, 1)
    });
    assert_eq!(
        ask(&w, "pool_grow", json!({"n": 2}))["ok"],
        json!("pool grown by 2 to 3")
    );
    eventually("three running", || in_hand(&w).0 == 3);
    let pool = pool_of(&w);
    assert_eq!(
        (pool["size"].as_u64(), pool["autoscale"].as_bool()),
        (Some(3), Some(false))
    );
    assert_eq!(ask(&w, "conf", json!(null))["ok"]["concurrency"], json!(3));
    // A shrink takes effect as tasks end: all three still run.
    assert!(ask(&w, "pool_shrink", json!({"n": 2}))["ok"].is_string());
    assert_eq!(in_hand(&w).0, 3);
    assert_eq!(pool_of(&w)["size"], json!(1));
    RELEASED.lock().unwrap().push(group);
    for id in first {
        wait_state(&w, id, TaskState::Success);
    }
    // One slot again: of the next tasks one runs while the other waits.
    let group = lovage_core::TaskId::new().to_string();
    let next: Vec<_> = (0..2)
        .map(|_| send(&w, held::NAME, json!([group]), "q-main"))
        .collect();
    eventually("one running, one waiting after the shrink", || {
        in_hand(&w) == (1, 1)
    });
    // Turning the autoscaler on with min 2 grows the pool to 2 at once.
    assert_eq!(
        ask(&w, "autoscale", json!({"max_min": "4,2"}))["ok"],
        json!("autoscale 4,2 (now 2)")
    );
    eventually("both running", || in_hand(&w) == (2, 0));
    let conf = ask(&w, "conf", json!(null))["ok"].clone();
    assert_eq!(
        (
            conf["autoscale"]["max"].as_u64(),
            conf["autoscale"]["min"].as_u64()
        ),
        (Some(4), Some(2))
    );
    RELEASED.lock().unwrap().push(group);
    for id in next {
        wait_state(&w, id, TaskState::Success);
    }
}

/// With `autoscale 3,1` a backlog of held tasks grows the pool to 3 (they run at once), and
/// once they end and the slots stay idle past the idle time it shrinks back to 1.
fn autoscale_grows_under_backlog_and_shrinks_when_idle(fresh: Fresh) {
    let w = start_with(fresh, |c| {
        c.autoscale = Some(lovage_worker::Autoscale {
            max: 3,
            min: 1,
            idle: Duration::from_millis(300),
        });
    });
    assert_eq!(pool_of(&w)["size"], json!(1));
    let group = lovage_core::TaskId::new().to_string();
    let ids: Vec<_> = (0..5)
        .map(|_| send(&w, held::NAME, json!([group]), "q-main"))
        .collect();
    eventually("grown to max: three running", || in_hand(&w).0 == 3);
    let pool = pool_of(&w);
    assert_eq!(
        (
            pool["size"].as_u64(),
            pool["max_concurrency"].as_u64(),
            pool["min_concurrency"].as_u64()
        ),
        (Some(3), Some(3), Some(1))
    );
    assert_eq!(in_hand(&w).0, 3, "never more than max");
    RELEASED.lock().unwrap().push(group);
    for id in ids {
        wait_state(&w, id, TaskState::Success);
    }
    eventually("shrunk back to min when idle", || {
        pool_of(&w)["size"] == json!(1)
    });
    eventually("the record shows the size", || {
        w.backend
            .presence()
            .workers(Duration::from_secs(60))
            .unwrap()
            .iter()
            .any(|i| i.id == w.id && i.pool == "threads x1 (autoscale 3,1)")
    });
}

/// A message the worker's reserve cannot decode is set aside by the broker (dead letter,
/// FAILURE record) and, with events on, told of as `task-rejected` with its id, the decode
/// error and the worker; the good message beside it runs.
fn a_corrupt_message_is_a_task_rejected_event(fresh: Fresh) {
    let app = fresh.app();
    let mut ids = Vec::new();
    for x in [1, 2] {
        let mut sig = Signature::new(echo::NAME, &[x], Codec::Json).unwrap();
        sig.options.queue = Some("q-main".into());
        ids.push(app.send_signature(sig).unwrap());
    }
    fresh.damage(ids[0]);
    let w = start_with(fresh, |c| c.events = true);
    wait_state(&w, ids[1], TaskState::Success);
    wait_state(&w, ids[0], TaskState::Failure);
    let mut rejected = Vec::new();
    eventually("a task-rejected event", || {
        let events = w.backend.events().read_events(0, 1000).unwrap().events;
        rejected = events
            .into_iter()
            .filter(|e| e.kind == EventKind::TaskRejected)
            .collect();
        !rejected.is_empty()
    });
    assert_eq!(rejected.len(), 1, "{rejected:?}");
    let e = &rejected[0];
    assert_eq!(e.task_id, Some(ids[0]), "{e:?}");
    assert_eq!(e.worker.as_deref(), Some(w.id.as_str()), "{e:?}");
    assert_eq!(e.state, Some(TaskState::Failure), "{e:?}");
    assert!(
        e.error
            .as_deref()
            .unwrap()
            .starts_with(lovage_core::kinds::CORRUPT_MESSAGE),
        "{e:?}"
    );
}

/// `stats` counts a fused chain (one `lovage.graph.chain` message) per link, under the
/// links' own task names, and the chain messages with their links beside them.
fn stats_count_a_fused_chain_per_link(fresh: Fresh) {
    use lovage_flow::graph::{chain_args, ChainLink, CHAIN_TASK};
    let w = start(fresh);
    let link = |i: u32, args: Value| ChainLink {
        task: echo::NAME.into(),
        codec: Codec::Json,
        args: vec![args],
        slot: 0,
        node: i,
        key: format!("echo-{i}"),
    };
    let links = [
        link(0, json!(7)),
        link(1, Value::Null),
        link(2, Value::Null),
    ];
    let mut chain = Signature::from_encoded(
        CHAIN_TASK,
        chain_args(&links, Codec::Json).unwrap(),
        Codec::Json,
    );
    chain.options.queue = Some("q-main".into());
    let chain = w.app.send_signature(chain).unwrap();
    let plain = send(&w, echo::NAME, json!([1]), "q-main");
    wait_state(&w, chain, TaskState::Success);
    wait_state(&w, plain, TaskState::Success);
    eventually("stats count the chain's links and the plain task", || {
        ask(&w, "stats", json!(null))["ok"]["total"][echo::NAME] == json!(4)
    });
    let stats = ask(&w, "stats", json!(null))["ok"].clone();
    assert_eq!(stats["total"], json!({ echo::NAME: 4 }), "{stats}");
    assert_eq!(
        stats["fused_chains"],
        json!({"messages": 1, "links": 3}),
        "{stats}"
    );
}

macro_rules! on_backends {
    ($($name:ident),*) => {
        mod sqlite {
            $(#[test] fn $name() { super::$name(super::common::sqlite_backend()) })*
        }
        mod redis {
            $(#[test] fn $name() { super::$name(super::common::redis_backend()) })*
        }
    };
}

on_backends!(
    a_busy_worker_answers_and_terminates,
    bad_commands_get_clear_errors,
    limits_and_consumers_change_the_worker,
    missing_audit_and_shutdown,
    grow_and_shrink_change_how_many_run_at_once,
    autoscale_grows_under_backlog_and_shrinks_when_idle,
    a_corrupt_message_is_a_task_rejected_event,
    stats_count_a_fused_chain_per_link
);
