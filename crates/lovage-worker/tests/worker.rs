//! A worker running against real backends (memory, SQLite and Redis) in this process: each
//! scenario runs once per backend, Redis under a key prefix of its own.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr,
    clippy::undocumented_unsafe_blocks
)] // tests panic to fail and print what they saw

mod common;

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use lovage_broker::{App, Backend, Revoked};
use lovage_core::{kinds, Codec, Signature, TaskId, TaskState, TypedSignature};
use lovage_macros::task;
use lovage_worker::{PoolKind, Worker, WorkerConfig};

use common::{memory_backend, redis_backend, sqlite_backend, Fresh};

const LONG: Duration = Duration::from_secs(30);

#[task(crate = lovage_core)]
fn add(a: i64, b: i64) -> i64 {
    a + b
}

#[task(crate = lovage_core)]
fn fails(msg: String) -> Result<(), String> {
    Err(msg)
}

/// Calls per key, so tests running in parallel threads count separately.
static FLAKY_CALLS: Mutex<BTreeMap<String, u32>> = Mutex::new(BTreeMap::new());

#[task(crate = lovage_core, max_retries = 3, retry_backoff = "10ms", retry_jitter = false)]
fn flaky(key: String) -> Result<u32, String> {
    let n = {
        let mut calls = FLAKY_CALLS.lock().unwrap();
        let n = calls.entry(key).or_insert(0);
        *n += 1;
        *n
    };
    if n < 3 {
        Err(format!("failure {n}"))
    } else {
        Ok(n)
    }
}

#[task(crate = lovage_core, max_retries = 1, retry_backoff = "10ms", retry_jitter = false)]
fn always_fails() -> Result<(), String> {
    Err("never works".into())
}

/// Keys of cooperative tasks that saw their cancel token and stopped early.
static STOPPED_EARLY: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Keys of cooperative tasks whose body started.
static STARTED: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Works in small steps for up to `max_ms`, checking between them whether to stop.
#[task(crate = lovage_core)]
fn cooperative(key: String, max_ms: u64) -> Result<u64, lovage_core::TaskError> {
    STARTED.lock().unwrap().push(key.clone());
    let start = std::time::Instant::now();
    while start.elapsed() < Duration::from_millis(max_ms) {
        if let Err(e) = lovage_core::check_cancelled() {
            STOPPED_EARLY.lock().unwrap().push(key);
            return Err(e);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(max_ms)
}

#[task(crate = lovage_core, soft_time_limit = "200ms")]
fn slow_but_polite(key: String) -> Result<u64, lovage_core::TaskError> {
    cooperative(key, 120_000)
}

/// Runs per key of [`counted`] (a map, so the scenarios' threads count separately).
static RUNS: Mutex<BTreeMap<String, u32>> = Mutex::new(BTreeMap::new());

/// Counts its runs under `key` and returns the count so far.
#[task(crate = lovage_core)]
fn counted(key: String) -> u32 {
    let mut runs = RUNS.lock().unwrap();
    let n = runs.entry(key).or_insert(0);
    *n += 1;
    *n
}

fn runs(key: &str) -> u32 {
    RUNS.lock().unwrap().get(key).copied().unwrap_or(0)
}

#[task(crate = lovage_core)]
fn sleepy(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

struct Running {
    app: App,
    backend: Backend,
    shutdown: lovage_worker::Shutdown,
    thread: Option<std::thread::JoinHandle<lovage_worker::WorkerReport>>,
    _fresh: Fresh,
}

impl Running {
    fn stop(self) -> lovage_worker::WorkerReport {
        self.stop_keeping_backend().0
    }

    /// Stops the worker and hands back its backend, to read records afterwards (dropping it
    /// deletes a Redis prefix's keys).
    fn stop_keeping_backend(mut self) -> (lovage_worker::WorkerReport, Fresh) {
        self.shutdown.graceful();
        let report = self.thread.take().unwrap().join().unwrap();
        (report, self._fresh)
    }
}

/// The scenarios' worker: two threads, a 5 s lease, polling every 50 ms.
fn config(concurrency: usize) -> WorkerConfig {
    WorkerConfig {
        concurrency,
        prefetch: 8,
        pool: PoolKind::Threads,
        poll: Duration::from_millis(50),
        lease: Duration::from_secs(5),
        // On, so every scenario also runs with the events written beside its results.
        events: true,
        ..Default::default()
    }
}

fn start(fresh: Fresh, config: WorkerConfig) -> Running {
    let backend = fresh.backend.clone();
    let worker = Worker::new(backend.clone(), config).unwrap();
    let shutdown = worker.shutdown_handle();
    let thread = std::thread::spawn(move || worker.run().expect("start the worker threads"));
    Running {
        app: App::with_backend(backend.clone()),
        backend,
        shutdown,
        thread: Some(thread),
        _fresh: fresh,
    }
}

fn untyped<R: serde::de::DeserializeOwned>(
    task: &str,
    args: &impl serde::Serialize,
) -> TypedSignature<R> {
    TypedSignature::new(Signature::new(task, args, Codec::Json).unwrap())
}

fn runs_tasks_and_records_results(w: Running) {
    let results: Vec<_> = (0..200)
        .map(|i| w.app.send(add::s(i, 1)).unwrap())
        .collect();
    for (i, r) in results.iter().enumerate() {
        assert_eq!(r.get(LONG).unwrap(), i as i64 + 1);
        assert_eq!(r.state().unwrap(), TaskState::Success);
    }
    let rec = results[0].record().unwrap().unwrap();
    let who = rec.worker.unwrap();
    assert!(who.starts_with("worker") && who.contains('@'), "{who}");
    assert_eq!(rec.attempts, 1);
    let report = w.stop();
    assert_eq!(report.succeeded, 200);
}

fn failures_are_recorded_and_dead_lettered(w: Running) {
    let r = w.app.send(fails::s("it went wrong".into())).unwrap();
    let err = r.get(LONG).unwrap_err();
    assert_eq!(
        (err.kind.as_str(), err.message.as_str()),
        (kinds::FAILED, "it went wrong")
    );
    assert_eq!(r.state().unwrap(), TaskState::Failure);
    // The result is stored first, then the task is dead-lettered.
    let deadline = std::time::Instant::now() + LONG;
    let dead = loop {
        let dead = w.backend.admin().dead_letters(10).unwrap();
        if !dead.is_empty() || std::time::Instant::now() > deadline {
            break dead;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    assert_eq!(dead[0].envelope.id, r.id());
    // The worker is still serving.
    assert_eq!(w.app.send(add::s(1, 1)).unwrap().get(LONG).unwrap(), 2);
    w.stop();
}

fn bad_input_fails_the_task_not_the_worker(w: Running) {
    let unknown = w
        .app
        .send(untyped::<i64>("nobody.registered.this", &[1]))
        .unwrap();
    let err = unknown.get(LONG).unwrap_err();
    assert_eq!(err.kind, kinds::UNKNOWN_TASK);
    assert!(
        err.message.contains("worker::add"),
        "lists the registered tasks: {err}"
    );
    let wrong_args = w.app.send(untyped::<i64>(add::NAME, &("one", 2))).unwrap();
    let err = wrong_args.get(LONG).unwrap_err();
    assert_eq!(err.kind, kinds::CODEC, "{err}");
    assert!(
        err.message.contains("arguments of task worker::add"),
        "{err}"
    );
    assert_eq!(w.app.send(add::s(2, 2)).unwrap().get(LONG).unwrap(), 4);
    w.stop();
}

fn retries_follow_the_policy(w: Running) {
    let r = w.app.send(flaky::s(TaskId::new().to_string())).unwrap();
    assert_eq!(r.get(LONG).unwrap(), 3, "third attempt succeeds");
    assert_eq!(r.record().unwrap().unwrap().attempts, 3);
    let r = w.app.send(always_fails::s()).unwrap();
    let err = r.get(LONG).unwrap_err();
    assert_eq!(err.message, "never works");
    assert_eq!(
        r.record().unwrap().unwrap().attempts,
        2,
        "one try plus one retry"
    );
    let report = w.stop();
    assert_eq!(report.retried, 3);
}

fn revoked_and_expired_tasks_do_not_run(w: Running) {
    // Keep both workers busy so the next tasks wait in the broker. The delays leave CI's
    // loaded Redis 1.5 s for the sends and the revoke below.
    let busy: Vec<_> = (0..2)
        .map(|_| w.app.send(sleepy::s(2000)).unwrap())
        .collect();
    let keys: Vec<String> = (0..3).map(|_| TaskId::new().to_string()).collect();
    let later: Vec<_> = keys
        .iter()
        .map(|k| {
            w.app
                .send(counted::s(k.clone()).countdown(Duration::from_millis(1500)))
                .unwrap()
        })
        .collect();
    assert_eq!(later[0].revoke().unwrap(), Revoked::Pending);
    let expired_key = TaskId::new().to_string();
    let expired = w
        .app
        .send(
            counted::s(expired_key.clone())
                .countdown(Duration::from_millis(1500))
                .expires(Duration::from_millis(50)),
        )
        .unwrap();
    assert_eq!(later[0].get(LONG).unwrap_err().kind, kinds::REVOKED);
    assert_eq!(expired.get(LONG).unwrap_err().kind, kinds::REVOKED);
    assert!(expired.get(LONG).unwrap_err().message.contains("expired"));
    assert_eq!(later[1].get(LONG).unwrap(), 1);
    assert_eq!(later[2].get(LONG).unwrap(), 1);
    for b in busy {
        b.get(LONG).unwrap();
    }
    // Stopped gracefully, the worker has finished all it took: a revoked or expired task it
    // ran would be counted by now. (`App::revoke` writes REVOKED itself, so the records alone
    // prove nothing.)
    let (report, _backend) = w.stop_keeping_backend();
    assert_eq!(runs(&keys[0]), 0, "the revoked task ran");
    assert_eq!(runs(&expired_key), 0, "the expired task ran");
    assert_eq!((runs(&keys[1]), runs(&keys[2])), (1, 1));
    assert_eq!(report.succeeded, 4, "{report:?}");
    // Revoked tasks are still readable as REVOKED afterwards.
    assert_eq!(later[0].state().unwrap(), TaskState::Revoked);
    assert_eq!(expired.state().unwrap(), TaskState::Revoked);
}

fn graceful_shutdown_finishes_running_tasks(w: Running) {
    let key = TaskId::new().to_string();
    let r = w.app.send(cooperative::s(key.clone(), 300)).unwrap();
    // Started, not only reserved: a graceful stop hands back what it reserved but has not
    // started (`a_graceful_stop_hands_back_tasks_not_started`), and on a loaded machine the
    // gap between the two is long enough to stop in.
    wait_until_started(&key);
    let (report, _backend) = w.stop_keeping_backend();
    assert_eq!(report.succeeded, 1);
    assert_eq!(r.get(Duration::ZERO).unwrap(), 300);
}

/// Waits until the body of the cooperative task `key` runs.
fn wait_until_started(key: &str) {
    let deadline = std::time::Instant::now() + LONG;
    while !STARTED.lock().unwrap().iter().any(|k| k == key) {
        assert!(std::time::Instant::now() < deadline, "never started");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn revoking_a_running_task_cancels_it(w: Running) {
    let key = TaskId::new().to_string();
    let r = w.app.send(cooperative::s(key.clone(), 120_000)).unwrap();
    // Running, not only reserved: a task revoked before it starts never runs.
    wait_until_started(&key);
    assert_eq!(r.revoke().unwrap(), Revoked::Running);
    let err = r.get(Duration::from_secs(60)).unwrap_err();
    assert_eq!(err.kind, kinds::REVOKED, "{err}");
    assert!(
        STOPPED_EARLY.lock().unwrap().contains(&key),
        "the task saw its token and stopped"
    );
    w.stop();
}

fn soft_time_limits_ask_the_task_to_stop(w: Running) {
    let key = TaskId::new().to_string();
    let r = w.app.send(slow_but_polite::s(key.clone())).unwrap();
    let err = r.get(Duration::from_secs(60)).unwrap_err();
    assert_eq!(err.kind, kinds::SOFT_TIME_LIMIT_EXCEEDED, "{err}");
    assert!(STOPPED_EARLY.lock().unwrap().contains(&key));
    assert_eq!(r.state().unwrap(), TaskState::Failure);
    w.stop();
}

#[task(crate = lovage_core, track_started = true)]
fn tracked(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

fn track_started_records_started_while_it_runs(w: Running) {
    let r = w.app.send(tracked::s(400)).unwrap();
    let deadline = std::time::Instant::now() + LONG;
    while r.state().unwrap() != TaskState::Started {
        assert!(std::time::Instant::now() < deadline, "never STARTED");
        assert_ne!(
            r.state().unwrap(),
            TaskState::Success,
            "finished without STARTED"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(r.get(LONG).unwrap(), 400);
    assert_eq!(r.state().unwrap(), TaskState::Success);
    w.stop();
}

#[task(crate = lovage_core, acks_late = false)]
fn early(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

#[task(crate = lovage_core, acks_late = false, max_retries = 3, retry_backoff = "10ms", retry_jitter = false)]
fn early_flaky(key: String) -> Result<u32, String> {
    flaky(key)
}

fn acks_early_takes_the_task_out_of_the_broker_when_it_starts(w: Running) {
    let r = w.app.send(early::s(500)).unwrap();
    // Seen while it runs: no result yet, and nothing in the broker (a task acked late stays
    // reserved until its result is stored).
    let mut seen_running_unheld = false;
    while !r.ready().unwrap() {
        let held = !w.backend.admin().stats().unwrap().is_empty();
        if !held && !r.ready().unwrap() && w.backend.results().get(r.id()).unwrap().is_none() {
            seen_running_unheld = true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(
        seen_running_unheld,
        "the task left the broker when it started"
    );
    assert_eq!(r.get(LONG).unwrap(), 500);
    // Retries still happen: the retry is sent anew.
    let key = format!("early-{}", TaskId::new());
    let r = w.app.send(early_flaky::s(key)).unwrap();
    assert_eq!(r.get(LONG).unwrap(), 3);
    w.stop();
}

#[task(crate = lovage_core, acks_late = false)]
fn early_fails() -> Result<(), String> {
    Err("after the early ack".into())
}

fn a_task_acked_at_start_that_fails_for_good_is_dead_lettered(w: Running) {
    let r = w.app.send(early_fails::s()).unwrap();
    assert_eq!(r.get(LONG).unwrap_err().message, "after the early ack");
    // The result is stored first, then the dead letter written.
    let deadline = std::time::Instant::now() + LONG;
    let dead = loop {
        let dead = w.backend.admin().dead_letters(10).unwrap();
        if !dead.is_empty() || std::time::Instant::now() > deadline {
            break dead;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    assert_eq!(dead.len(), 1, "one dead letter");
    assert_eq!(dead[0].envelope.id, r.id());
    assert_eq!(dead[0].error.message, "after the early ack");
    w.stop();
}

/// Fails with WorkerLost the first two times (as when a process-pool child dies).
#[task(crate = lovage_core, reject_on_worker_lost = true)]
fn loses_its_worker(key: String) -> Result<u32, lovage_core::TaskError> {
    let n = {
        let mut calls = FLAKY_CALLS.lock().unwrap();
        let n = calls.entry(key).or_insert(0);
        *n += 1;
        *n
    };
    if n < 3 {
        Err(lovage_core::TaskError::new(
            kinds::WORKER_LOST,
            "child killed by signal 9",
        ))
    } else {
        Ok(n)
    }
}

#[task(crate = lovage_core)]
fn loses_its_worker_plainly() -> Result<u32, lovage_core::TaskError> {
    Err(lovage_core::TaskError::new(
        kinds::WORKER_LOST,
        "child killed by signal 9",
    ))
}

fn reject_on_worker_lost_runs_the_task_again(w: Running) {
    let key = format!("lost-{}", TaskId::new());
    let r = w.app.send(loses_its_worker::s(key)).unwrap();
    assert_eq!(
        r.get(LONG).unwrap(),
        3,
        "run again after each loss, then succeeded"
    );
    // Without the option, a lost worker fails the task.
    let r = w.app.send(loses_its_worker_plainly::s()).unwrap();
    assert_eq!(r.get(LONG).unwrap_err().kind, kinds::WORKER_LOST);
    w.stop();
}

/// Sleeps `ms`, counting its runs under `key`; returns this run's number.
#[task(crate = lovage_core)]
fn counted_sleep(key: String, ms: u64) -> u32 {
    let n = counted(key);
    std::thread::sleep(Duration::from_millis(ms));
    n
}

fn a_task_longer_than_its_lease_runs_once(b: Fresh) {
    // The keeper renews every third of the lease; without renewal the lease runs out twice
    // over while the task runs, and the second thread would take it again. CI lapsed a 300 ms
    // and then a 1 s lease on Redis, shared with tests that move 64 MiB values through it
    // (each blocks Redis for a while), so the keeper has 1.3 s of slack here and nextest
    // retries the test once (.config/nextest.toml).
    let w = start(
        b,
        WorkerConfig {
            lease: Duration::from_millis(2000),
            ..config(2)
        },
    );
    let key = TaskId::new().to_string();
    let r = w.app.send(counted_sleep::s(key.clone(), 5000)).unwrap();
    assert_eq!(r.get(LONG).unwrap(), 1);
    let (report, _backend) = w.stop_keeping_backend();
    let rec = r.record().unwrap().unwrap();
    assert_eq!(
        (rec.state, rec.attempts),
        (TaskState::Success, 1),
        "{rec:?}"
    );
    assert_eq!(runs(&key), 1, "ran again while it was running");
    assert_eq!(report.succeeded, 1, "{report:?}");
}

/// Benchmark mode: a zero-worker finishes every task without running it — a counted task's
/// body never runs, a task no worker registered succeeds too — with the fixed result 0, and a
/// chain's next step is still released (and finished the same way).
fn a_zero_worker_finishes_tasks_without_running_them(b: Fresh) {
    let w = start(
        b,
        WorkerConfig {
            zero_worker: true,
            ..config(2)
        },
    );
    let key = TaskId::new().to_string();
    let counted_run = w.app.send(counted::s(key.clone())).unwrap();
    assert_eq!(counted_run.get(LONG).unwrap(), 0, "the fixed result");
    let unknown = w
        .app
        .send(untyped::<u64>("nobody.registered.this", &[1]))
        .unwrap();
    assert_eq!(unknown.get(LONG).unwrap(), 0);
    let chain = lovage_flow::chain([
        lovage_core::Canvas::from(add::s(1, 2)),
        lovage_core::Canvas::from(add::partial(10)),
    ]);
    let sent = lovage_flow::send(&w.app, &chain).unwrap();
    assert_eq!(
        sent.get::<i64>(LONG).unwrap(),
        0,
        "the chain's second step was released and finished"
    );
    let (report, _backend) = w.stop_keeping_backend();
    assert_eq!(runs(&key), 0, "the task's body ran");
    assert_eq!(report.succeeded, 4, "{report:?}");
}

/// The order tasks ran in, per key of [`logged`].
static RUN_LOG: Mutex<BTreeMap<String, Vec<String>>> = Mutex::new(BTreeMap::new());

/// Writes `label` in the run log of `key`; with `fail_once`, fails its first run (and is
/// retried at once).
#[task(crate = lovage_core, max_retries = 1, retry_backoff = "0ms", retry_jitter = false)]
fn logged(key: String, label: String, fail_once: bool) -> Result<(), String> {
    let mut log = RUN_LOG.lock().unwrap();
    let runs = log.entry(key).or_default();
    let first = !runs.contains(&label);
    runs.push(label);
    if fail_once && first {
        Err("first run fails".into())
    } else {
        Ok(())
    }
}

fn a_retried_task_keeps_its_priority_and_place(b: Fresh) {
    let key = TaskId::new().to_string();
    let app = b.app();
    let send = |label: &str, priority: u8, fail_once: bool| {
        app.send(logged::s(key.clone(), label.into(), fail_once).priority(priority))
            .unwrap()
    };
    // All queued before the worker starts, lower priorities sent first (so a retry that lost
    // its priority, or went to the back of its queue, runs later than it should).
    let sent = [
        send("low-1", 1, false),
        send("mid-1", 5, false),
        send("high-1", 9, true),
        send("high-2", 9, false),
        send("mid-2", 5, false),
        send("low-2", 1, false),
    ];
    // One task at a time and none held beyond it: the broker's order is the run order.
    let w = start(
        b,
        WorkerConfig {
            prefetch: 0,
            ..config(1)
        },
    );
    for r in &sent {
        r.get(LONG).unwrap();
    }
    let (report, _backend) = w.stop_keeping_backend();
    assert_eq!(report.retried, 1, "{report:?}");
    assert_eq!(sent[2].record().unwrap().unwrap().attempts, 2);
    let log = RUN_LOG.lock().unwrap()[&key].clone();
    assert_eq!(
        log,
        ["high-1", "high-1", "high-2", "mid-1", "mid-2", "low-1", "low-2"],
        "the retry of high-1 kept its priority and its place before high-2"
    );
}

/// A worker of no slots would reserve nothing and wait for room forever: it is refused.
#[test]
fn a_worker_of_no_slots_is_refused() {
    let fresh = memory_backend();
    let refused = Worker::new(
        fresh.backend.clone(),
        WorkerConfig {
            concurrency: 0,
            ..config(1)
        },
    );
    let Err(e) = refused else {
        panic!("a worker of concurrency 0 was made")
    };
    assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput, "{e}");
    assert!(e.to_string().contains("concurrency"), "{e}");
}

/// Sums a field of the queue counts.
fn held(backend: &Backend, field: fn(&lovage_broker::QueueStats) -> u64) -> u64 {
    backend.admin().stats().unwrap().iter().map(field).sum()
}

fn a_prefetched_task_that_expires_before_it_starts_does_not_run(b: Fresh) {
    let app = b.app();
    let long = app.send(sleepy::s(3000)).unwrap();
    let key = TaskId::new().to_string();
    let short = app
        .send(counted::s(key.clone()).expires(Duration::from_millis(1500)))
        .unwrap();
    // One slot: the long task runs, the short one is prefetched (reserved with it, before it
    // expires) and waits in the pool behind it until after it expired.
    let w = start(b, config(1));
    assert_eq!(long.get(LONG).unwrap(), 3000);
    let err = short.get(LONG).unwrap_err();
    let (report, _backend) = w.stop_keeping_backend();
    assert_eq!(runs(&key), 0, "the expired task ran");
    assert_eq!(err.kind, kinds::REVOKED, "{err}");
    assert!(err.message.contains("expired"), "{err}");
    assert_eq!(short.state().unwrap(), TaskState::Revoked);
    assert_eq!((report.succeeded, report.revoked), (1, 1), "{report:?}");
}

fn started_is_when_the_task_began_not_when_it_was_fetched(b: Fresh) {
    let app = b.app();
    let first = app.send(sleepy::s(1000)).unwrap();
    let second = app.send(sleepy::s(0)).unwrap();
    // One slot: both are fetched together, the second waits in the pool behind the first.
    let w = start(b, config(1));
    first.get(LONG).unwrap();
    second.get(LONG).unwrap();
    let (_, _backend) = w.stop_keeping_backend();
    let began = |r: &lovage_broker::AsyncResult<u64>| {
        r.record().unwrap().unwrap().started.unwrap().as_millis()
    };
    let waited = began(&second) - began(&first);
    assert!(
        waited >= 999,
        "the second started {waited} ms after the first, which slept 1000 ms in the only slot"
    );
}

/// With `track_started`, a task prefetched behind another in the only slot is not STARTED
/// while it waits in the pool's queue; its STARTED record comes when the pool starts it, dated
/// then (after the first task's 2 s).
fn track_started_is_stored_when_the_task_starts_not_when_it_is_prefetched(b: Fresh) {
    let app = b.app();
    let first = app.send(tracked::s(2000)).unwrap();
    let second = app.send(tracked::s(1000)).unwrap();
    let w = start(b, config(1));
    let deadline = std::time::Instant::now() + LONG;
    // Both fetched together: the first runs, the second waits in the pool behind it.
    while first.state().unwrap() != TaskState::Started || held(&w.backend, |s| s.reserved) < 2 {
        assert!(std::time::Instant::now() < deadline, "never took both");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(
        second.record().unwrap().map(|r| r.state),
        None,
        "STARTED while it waited behind the first"
    );
    while second.state().unwrap() != TaskState::Started {
        assert!(
            std::time::Instant::now() < deadline,
            "the second never STARTED"
        );
        assert_ne!(
            second.state().unwrap(),
            TaskState::Success,
            "finished without STARTED"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let began = |r: &lovage_broker::AsyncResult<u64>| {
        r.record().unwrap().unwrap().started.unwrap().as_millis()
    };
    let second_began = began(&second);
    first.get(LONG).unwrap();
    let waited = second_began - began(&first);
    assert!(
        waited >= 1999,
        "the second's STARTED says it began {waited} ms after the first, which slept 2000 ms in the only slot"
    );
    second.get(LONG).unwrap();
    w.stop();
}

fn a_graceful_stop_hands_back_tasks_not_started(b: Fresh) {
    let app = b.app();
    let long_key = TaskId::new().to_string();
    let long: Vec<_> = (0..2)
        .map(|_| app.send(counted_sleep::s(long_key.clone(), 2000)).unwrap())
        .collect();
    let key = TaskId::new().to_string();
    let waiting: Vec<_> = (0..2)
        .map(|_| app.send(counted::s(key.clone())).unwrap())
        .collect();
    // Two slots and a prefetch of two: the long tasks run, the others wait in the pool.
    let w = start(b, config(2));
    let deadline = std::time::Instant::now() + LONG;
    // All four reserved and both long ones running (a pool thread may wake late on a busy
    // machine: reserved alone does not mean started).
    while held(&w.backend, |s| s.reserved) < 4 || runs(&long_key) < 2 {
        assert!(std::time::Instant::now() < deadline, "never took all four");
        std::thread::sleep(Duration::from_millis(5));
    }
    let (report, b) = w.stop_keeping_backend();
    assert_eq!(
        report.succeeded, 2,
        "the running tasks finished: {report:?}"
    );
    let mut ends: Vec<u32> = long
        .iter()
        .map(|r| r.get(Duration::ZERO).unwrap())
        .collect();
    ends.sort_unstable();
    assert_eq!(ends, [1, 2], "each long task ran once");
    assert_eq!(runs(&key), 0, "a task not started ran during the stop");
    assert_eq!(held(&b.backend, |s| s.reserved), 0);
    assert_eq!(
        held(&b.backend, |s| s.ready),
        2,
        "handed back, ready at once"
    );
    // Another worker runs them, each on its first attempt.
    let w = start(b, config(2));
    for r in &waiting {
        r.get(LONG).unwrap();
        assert_eq!(r.record().unwrap().unwrap().attempts, 1);
    }
    w.stop();
    assert_eq!(runs(&key), 2);
}

/// The worker publishes what happens to the broker's event stream: its start, each task it
/// took (received) and how each ended (batched with the finisher's store), a task seen
/// running, tasks it refused (unknown name, arguments that do not decode), its heartbeats.
fn events_tell_what_the_worker_did(w: Running) {
    use lovage_broker::ops::EventKind;
    let ok = w.app.send(add::s(2, 3)).unwrap();
    let bad = w.app.send(fails::s("no".into())).unwrap();
    let slow = w.app.send(sleepy::s(400)).unwrap();
    let unknown = w
        .app
        .send_signature(Signature::new("no.such.task", &[1], Codec::Json).unwrap())
        .unwrap();
    let garbled = w
        .app
        .send_signature(Signature::new(add::NAME, &["two", "three"], Codec::Json).unwrap())
        .unwrap();
    ok.get(LONG).unwrap();
    bad.get(LONG).unwrap_err();
    slow.get(LONG).unwrap();
    for id in [unknown, garbled] {
        let rec = w.app.wait_record(id, LONG).unwrap();
        assert_eq!(rec.map(|r| r.state), Some(TaskState::Failure), "{id}");
    }
    let events = w.backend.events();
    let deadline = std::time::Instant::now() + LONG;
    let seen = loop {
        let batch = events.read_events(0, 1000).unwrap();
        let kinds: Vec<EventKind> = batch.events.iter().map(|e| e.kind).collect();
        if kinds.contains(&EventKind::WorkerHeartbeat) && kinds.contains(&EventKind::TaskStarted)
            || std::time::Instant::now() > deadline
        {
            break batch.events;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let of = |id: TaskId, kind: EventKind| {
        seen.iter()
            .find(|e| e.task_id == Some(id) && e.kind == kind)
            .unwrap_or_else(|| panic!("no {kind} for {id} in {seen:?}"))
    };
    let done = of(ok.id(), EventKind::TaskSucceeded);
    assert!(
        done.name.as_deref().is_some_and(|n| n.ends_with("add")),
        "{done:?}"
    );
    assert_eq!(done.queue.as_deref(), Some("default"));
    assert!(
        done.worker.as_deref().is_some_and(|w| w.contains('@')),
        "{done:?}"
    );
    assert!(done.runtime_ms.is_some());
    let failed = of(bad.id(), EventKind::TaskFailed);
    assert!(
        failed.error.as_deref().is_some_and(|e| e.contains("no")),
        "{failed:?}"
    );
    // A task still unsettled 100 ms after it was reserved is told of as received; a quicker
    // one may be told of by its outcome alone. Never is a received event after the outcome.
    let received = of(slow.id(), EventKind::TaskReceived);
    assert_eq!(received.state, Some(TaskState::Received), "{received:?}");
    assert_eq!(received.queue.as_deref(), Some("default"));
    assert!(
        received.worker.is_some() && received.name.is_some(),
        "{received:?}"
    );
    for id in [ok.id(), bad.id(), slow.id(), unknown, garbled] {
        let Some(received) = seen
            .iter()
            .find(|e| e.task_id == Some(id) && e.kind == EventKind::TaskReceived)
        else {
            continue;
        };
        let last = seen
            .iter()
            .filter(|e| e.task_id == Some(id) && e.kind != EventKind::TaskReceived)
            .map(|e| e.seq)
            .max()
            .unwrap();
        assert!(received.seq < last, "received after its outcome: {seen:?}");
    }
    let refused = of(unknown, EventKind::TaskRejected);
    assert!(
        refused
            .error
            .as_deref()
            .is_some_and(|e| e.contains("no.such.task")),
        "{refused:?}"
    );
    let refused = of(garbled, EventKind::TaskRejected);
    assert!(
        refused
            .error
            .as_deref()
            .is_some_and(|e| e.starts_with(kinds::CODEC)),
        "{refused:?}"
    );
    assert!(
        !seen
            .iter()
            .any(|e| e.kind == EventKind::TaskFailed
                && [unknown, garbled].contains(&e.task_id.unwrap())),
        "a refused task is rejected, not failed: {seen:?}"
    );
    of(slow.id(), EventKind::TaskStarted);
    let slow_done = of(slow.id(), EventKind::TaskSucceeded);
    assert!(
        slow_done.runtime_ms.is_some_and(|ms| ms >= 400),
        "{slow_done:?}"
    );
    assert!(seen.iter().any(|e| e.kind == EventKind::WorkerOnline));
    let seqs: Vec<u64> = seen.iter().map(|e| e.seq).collect();
    assert!(seqs.windows(2).all(|p| p[1] == p[0] + 1), "{seqs:?}");
    w.stop();
}

macro_rules! worker_tests {
    ($backend:ident, $make:expr) => {
        mod $backend {
            use super::*;
            // Scenarios on a worker started with the usual configuration.
            worker_tests!(@running $make;
                runs_tasks_and_records_results,
                failures_are_recorded_and_dead_lettered,
                bad_input_fails_the_task_not_the_worker,
                retries_follow_the_policy,
                revoked_and_expired_tasks_do_not_run,
                graceful_shutdown_finishes_running_tasks,
                revoking_a_running_task_cancels_it,
                soft_time_limits_ask_the_task_to_stop,
                track_started_records_started_while_it_runs,
                acks_early_takes_the_task_out_of_the_broker_when_it_starts,
                reject_on_worker_lost_runs_the_task_again,
                a_task_acked_at_start_that_fails_for_good_is_dead_lettered,
                events_tell_what_the_worker_did,
            );
            // Scenarios that configure and start their worker themselves.
            worker_tests!(@fresh $make;
                a_task_longer_than_its_lease_runs_once,
                a_retried_task_keeps_its_priority_and_place,
                a_prefetched_task_that_expires_before_it_starts_does_not_run,
                a_graceful_stop_hands_back_tasks_not_started,
                started_is_when_the_task_began_not_when_it_was_fetched,
                track_started_is_stored_when_the_task_starts_not_when_it_is_prefetched,
                a_zero_worker_finishes_tasks_without_running_them,
            );
        }
    };
    (@running $make:expr; $($test:ident),* $(,)?) => {
        $(
            #[test]
            fn $test() {
                super::$test(start($make, config(2)))
            }
        )*
    };
    (@fresh $make:expr; $($test:ident),* $(,)?) => {
        $(
            #[test]
            fn $test() {
                super::$test($make)
            }
        )*
    };
}

worker_tests!(memory, memory_backend());
worker_tests!(sqlite, sqlite_backend());
worker_tests!(redis, redis_backend());
