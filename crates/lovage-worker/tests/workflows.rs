//! Workflows (chain, group, chord, callbacks) run by a real worker on every backend: memory,
//! SQLite and Redis (each test under its own key prefix).

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

use lovage_broker::{connect, App, Backend};
use lovage_core::{Canvas, Failure, TaskId, TaskState};
use lovage_flow::{chain, chord, group, UPSTREAM_FAILED};
use lovage_macros::task;
use lovage_worker::{PoolKind, Worker, WorkerConfig};

const LONG: Duration = Duration::from_secs(60);

#[task(crate = lovage_core)]
fn add(a: i64, b: i64) -> i64 {
    a + b
}

#[task(crate = lovage_core)]
fn append(mut acc: Vec<i64>, x: i64) -> Vec<i64> {
    acc.push(x);
    acc
}

#[task(crate = lovage_core)]
fn total(xs: Vec<i64>) -> i64 {
    xs.iter().sum()
}

#[task(crate = lovage_core)]
fn fails(msg: String) -> Result<i64, String> {
    Err(msg)
}

/// An error callback: says which callback saw which failure, and counts its runs under `tag`.
#[task(crate = lovage_core)]
fn noted(failure: Failure, tag: String) -> String {
    count(&tag);
    format!("{tag}: {} failed: {}", failure.task, failure.error.message)
}

/// Runs per key, so tests in parallel count separately.
static CALLS: Mutex<BTreeMap<String, u32>> = Mutex::new(BTreeMap::new());

fn count(key: &str) -> u32 {
    let mut calls = CALLS.lock().unwrap();
    let n = calls.entry(key.to_owned()).or_insert(0);
    *n += 1;
    *n
}

fn calls(key: &str) -> u32 {
    CALLS.lock().unwrap().get(key).copied().unwrap_or(0)
}

/// Sums its list and counts its runs under `key`.
#[task(crate = lovage_core)]
fn counted_total(xs: Vec<i64>, key: String) -> i64 {
    count(&key);
    xs.iter().sum()
}

/// Fails twice, then returns 3.
#[task(crate = lovage_core, max_retries = 3, retry_backoff = "20ms", retry_jitter = false)]
fn flaky(key: String) -> Result<i64, String> {
    match count(&key) {
        n if n < 3 => Err(format!("failure {n}")),
        _ => Ok(3),
    }
}

struct Running {
    app: App,
    shutdown: lovage_worker::Shutdown,
    thread: Option<std::thread::JoinHandle<lovage_worker::WorkerReport>>,
    cleanup: Option<Box<dyn FnOnce()>>,
    _dir: Option<tempfile::TempDir>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.shutdown.graceful();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        if let Some(cleanup) = self.cleanup.take() {
            cleanup();
        }
    }
}

impl Running {
    /// Waits until the broker holds no task, then stops the worker gracefully and checks that
    /// nothing was left to run later: the runs counted after this are all there will be (a
    /// callback sent twice shows up, however late the second one comes).
    fn stop(&mut self) {
        let drained = || {
            self.app
                .backend()
                .admin()
                .stats()
                .unwrap()
                .iter()
                .all(|s| s.ready + s.scheduled + s.reserved == 0)
        };
        let deadline = std::time::Instant::now() + LONG;
        while !drained() {
            assert!(
                std::time::Instant::now() < deadline,
                "the broker did not drain: {:?}",
                self.app.backend().admin().stats()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        self.shutdown.graceful();
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
        assert!(
            drained(),
            "left in the broker after the stop: {:?}",
            self.app.backend().admin().stats()
        );
    }
}

fn start(backend: Backend) -> Running {
    start_with(backend, |_| {})
}

/// [`start`] with the config changed by `tweak` first.
fn start_with(backend: Backend, tweak: impl FnOnce(&mut WorkerConfig)) -> Running {
    let mut config = WorkerConfig {
        concurrency: 2,
        prefetch: 64,
        pool: PoolKind::Threads,
        poll: Duration::from_millis(50),
        lease: Duration::from_secs(10),
        ..Default::default()
    };
    tweak(&mut config);
    let worker = Worker::new(backend.clone(), config).unwrap();
    let shutdown = worker.shutdown_handle();
    let thread = std::thread::spawn(move || worker.run().expect("start the worker threads"));
    Running {
        app: App::with_backend(backend),
        shutdown,
        thread: Some(thread),
        cleanup: None,
        _dir: None,
    }
}

fn memory() -> Running {
    start(connect(&format!("memory://flow-{}", TaskId::new())).unwrap())
}

fn sqlite() -> Running {
    let dir = tempfile::tempdir().unwrap();
    let backend = connect(&format!("sqlite://{}", dir.path().join("f.db").display())).unwrap();
    let mut w = start(backend);
    w._dir = Some(dir);
    w
}

fn redis() -> Running {
    let prefix = common::RedisPrefix::new();
    let mut w = start(connect(&prefix.url()).unwrap());
    w.cleanup = Some(Box::new(move || drop(prefix)));
    w
}

fn send(w: &Running, canvas: &Canvas) -> lovage_flow::WorkflowResult {
    lovage_flow::send(&w.app, canvas).unwrap()
}

#[task(crate = lovage_core)]
fn slow_add(a: i64, b: i64) -> i64 {
    std::thread::sleep(Duration::from_millis(300));
    a + b
}

/// Revoking a step that was not sent yet (or waits in the queue) stops the workflow there and
/// says so: the steps after it fail with UpstreamFailed and the error callback runs.
fn revoking_a_step_fails_the_rest_of_its_workflow(w: Running) {
    let second = Canvas::from(add::partial(1));
    let second_id = second.result_id();
    let cb = Canvas::from(noted::partial("revoked".into()));
    let cb_id = cb.result_id();
    let wf = chain([
        Canvas::from(slow_add::s(1, 1)),
        second,
        add::partial(2).into(),
    ])
    .on_error(cb);
    let sent = send(&w, &wf);
    w.app.revoke(second_id).unwrap();
    let note: String = w.app.result(cb_id).get(LONG).unwrap();
    assert!(
        note.starts_with("revoked: ") && note.contains("revoked"),
        "{note}"
    );
    assert_eq!(sent.get::<i64>(LONG).unwrap_err().kind, UPSTREAM_FAILED);
    assert_eq!(
        w.app.result::<i64>(second_id).state().unwrap(),
        TaskState::Revoked
    );
}

fn a_workflow_is_sent_once(w: Running) {
    let wf = chain([Canvas::from(add::s(1, 2)), add::partial(3).into()]);
    assert_eq!(send(&w, &wf).get::<i64>(LONG).unwrap(), 6);
    let err = lovage_flow::send(&w.app, &wf).unwrap_err();
    assert!(err.to_string().contains("sent already"), "{err}");
}

fn chain_runs_in_order_passing_each_result_on(w: Running) {
    let wf = chain([
        Canvas::from(append::s(vec![], 1)),
        append::partial(2).into(),
        append::partial(3).into(),
        append::partial(4).into(),
    ]);
    assert_eq!(
        send(&w, &wf).get::<Vec<i64>>(LONG).unwrap(),
        vec![1, 2, 3, 4]
    );
    // An immutable step ignores what came before.
    let wf = chain([
        Canvas::from(add::s(1, 2)),
        Canvas::from(add::s(10, 10)).immutable(),
    ]);
    assert_eq!(send(&w, &wf).get::<i64>(LONG).unwrap(), 20);
}

fn group_results_come_back_in_member_order(w: Running) {
    let wf = group((0..20).map(|i| add::s(i, i)));
    let sent = send(&w, &wf);
    let want: Vec<i64> = (0..20).map(|i| i * 2).collect();
    assert_eq!(sent.get::<Vec<i64>>(LONG).unwrap(), want);
    let each: Vec<i64> = sent
        .members::<i64>()
        .iter()
        .map(|r| r.get(LONG).unwrap())
        .collect();
    assert_eq!(each, want);
}

fn chords_of_1_2_and_10000_members_fire_once_with_every_result(mut w: Running) {
    let mut keys = Vec::new();
    for n in [1i64, 2, 10_000] {
        let key = format!("chord-{}", TaskId::new());
        let wf = chord(
            (0..n).map(|i| add::s(i, 0)),
            counted_total::partial(key.clone()),
        );
        let got = send(&w, &wf).get::<i64>(LONG).unwrap();
        assert_eq!(got, n * (n - 1) / 2, "chord of {n}");
        keys.push((n, key));
    }
    // An empty chord calls its body with an empty list.
    let key = format!("chord-{}", TaskId::new());
    let wf = chord(Vec::<Canvas>::new(), counted_total::partial(key.clone()));
    assert_eq!(send(&w, &wf).get::<i64>(LONG).unwrap(), 0);
    keys.push((0, key));
    w.stop();
    for (n, key) in keys {
        assert_eq!(calls(&key), 1, "the callback of a chord of {n} ran once");
    }
}

fn nested_workflows_compose(w: Running) {
    // A group inside a chain feeds the next step (a chord).
    let wf = chain([
        Canvas::from(add::s(1, 1)),
        group([add::partial(1), add::partial(2)]),
        total::partial().into(),
    ]);
    assert_eq!(send(&w, &wf).get::<i64>(LONG).unwrap(), 3 + 4);
    // A chord inside a chain, then one more step.
    let wf = chain([
        chord([add::s(1, 1), add::s(2, 2)], total::partial()),
        add::partial(100).into(),
    ]);
    assert_eq!(send(&w, &wf).get::<i64>(LONG).unwrap(), 106);
    // A group of chains.
    let wf = group([
        chain([Canvas::from(add::s(1, 1)), add::partial(1).into()]),
        chain([Canvas::from(add::s(2, 2)), add::partial(2).into()]),
    ]);
    assert_eq!(send(&w, &wf).get::<Vec<i64>>(LONG).unwrap(), vec![3, 6]);
    // A link is a side branch with the result.
    let cb = Canvas::from(add::partial(1000));
    let cb_id = cb.result_id();
    let sent = send(&w, &Canvas::from(add::s(1, 2)).link(cb));
    assert_eq!(sent.get::<i64>(LONG).unwrap(), 3);
    assert_eq!(w.app.result::<i64>(cb_id).get(LONG).unwrap(), 1003);
}

fn errors_reach_every_enclosing_error_callback_once(mut w: Running) {
    let inner_tag = format!("inner-{}", TaskId::new());
    let outer_tag = format!("outer-{}", TaskId::new());
    let inner_cb = Canvas::from(noted::partial(inner_tag.clone()));
    let outer_cb = Canvas::from(noted::partial(outer_tag.clone()));
    let (inner_id, outer_id) = (inner_cb.result_id(), outer_cb.result_id());
    let after = Canvas::from(add::partial(1));
    let after_id = after.result_id();
    let wf = chain([
        Canvas::from(add::s(1, 1)),
        chain([
            Canvas::from(fails::s("boom".into())).immutable(),
            add::partial(2).into(),
        ])
        .on_error(inner_cb),
        after,
    ])
    .on_error(outer_cb);
    let sent = send(&w, &wf);
    let inner: String = w.app.result(inner_id).get(LONG).unwrap();
    let outer: String = w.app.result(outer_id).get(LONG).unwrap();
    assert!(
        inner.starts_with(&format!("{inner_tag}: ")) && inner.ends_with("failed: boom"),
        "{inner}"
    );
    assert!(
        outer.starts_with(&format!("{outer_tag}: ")) && outer.ends_with("failed: boom"),
        "{outer}"
    );
    // What never ran says why, so nobody waits forever.
    let err = sent.get::<i64>(LONG).unwrap_err();
    assert_eq!(err.kind, UPSTREAM_FAILED);
    assert_eq!(sent.id(), after_id);

    // A failing chord member fails the chord and calls its error callback with the cause.
    let key = format!("never-{}", TaskId::new());
    let chord_tag = format!("chord-{}", TaskId::new());
    let cb = Canvas::from(noted::partial(chord_tag.clone()));
    let cb_id = cb.result_id();
    let wf = chord(
        [
            Canvas::from(add::s(1, 1)),
            fails::s("member down".into()).into(),
            add::s(2, 2).into(),
        ],
        counted_total::partial(key.clone()),
    )
    .on_error(cb);
    let sent = send(&w, &wf);
    let note: String = w.app.result(cb_id).get(LONG).unwrap();
    assert!(note.ends_with("failed: member down"), "{note}");
    let err = sent.get::<i64>(LONG).unwrap_err();
    assert_eq!(err.kind, UPSTREAM_FAILED);
    assert!(err.to_string().contains("member down"), "{err}");
    w.stop();
    assert_eq!(calls(&inner_tag), 1, "the inner error callback ran once");
    assert_eq!(calls(&outer_tag), 1, "the outer error callback ran once");
    assert_eq!(calls(&chord_tag), 1, "the chord's error callback ran once");
    assert_eq!(calls(&key), 0, "the body of a failed chord never runs");
}

fn a_retrying_member_does_not_fire_the_chord_early(mut w: Running) {
    let flaky_key = format!("flaky-{}", TaskId::new());
    let body_key = format!("body-{}", TaskId::new());
    let wf = chord(
        [
            Canvas::from(flaky::s(flaky_key.clone())),
            add::s(1, 1).into(),
        ],
        counted_total::partial(body_key.clone()),
    );
    let sent = send(&w, &wf);
    assert_eq!(sent.get::<i64>(LONG).unwrap(), 3 + 2);
    w.stop();
    assert_eq!(calls(&flaky_key), 3, "two failures, then success");
    assert_eq!(calls(&body_key), 1, "the callback ran once");
    let state = w.app.result::<i64>(sent.member_ids()[0]).state().unwrap();
    assert_eq!(state, TaskState::Success);
}

fn arguments_by_name_cannot_take_a_result(w: Running) {
    let by_name = lovage_core::Signature::new(
        add::NAME,
        &serde_json::json!({"a": 1, "b": 2}),
        lovage_core::Codec::Json,
    )
    .unwrap();
    let wf = chain([Canvas::from(add::s(1, 1)), by_name.into()]);
    let err = lovage_flow::send(&w.app, &wf).unwrap_err();
    assert!(err.to_string().contains("given by name"), "{err}");
}

/// What a worker killed between continuing a chord member and acking it leads to: the member
/// runs again and finishes again. Done by hand here, with no worker, so the repeat is certain.
fn a_member_finishing_twice_fires_the_chord_once(mut w: Running) {
    // Stop the worker: this test plays the worker itself.
    w.shutdown.graceful();
    w.thread.take().unwrap().join().unwrap();
    let backend = w.app.backend().clone();
    let wf = chord([add::s(1, 1), add::s(2, 2)], total::partial());
    let sent = send(&w, &wf);
    let queues = vec!["default".to_owned()];
    let lease = Duration::from_secs(30);
    let members = backend.broker().reserve(&queues, 10, lease, LONG).unwrap();
    assert_eq!(members.len(), 2);
    let ctx = lovage_flow::Context {
        backend: &backend,
        result_ttl: None,
        worker: Some("by-hand"),
        sent_events: false,
        steal_after: None,
    };
    let finish = |i: usize, value: i64| {
        let bytes = serde_json::to_vec(&value).unwrap();
        lovage_flow::advance(
            &ctx,
            &members[i].envelope,
            lovage_flow::Finished::Success(&bytes),
        )
        .unwrap();
    };
    finish(0, 2);
    finish(1, 4);
    finish(1, 4); // the repeat
    let body = backend.broker().reserve(&queues, 10, lease, LONG).unwrap();
    assert_eq!(body.len(), 1, "one callback");
    assert_eq!(body[0].envelope.id, sent.id());
    backend.broker().complete(&[body[0].lease]).unwrap();
    finish(0, 2); // a repeat after the callback ran
    let again = backend
        .broker()
        .reserve(&queues, 10, lease, Duration::from_millis(300))
        .unwrap();
    assert!(
        again.is_empty(),
        "the callback is not sent again: {again:?}"
    );
}

/// A task whose rest-of-chain blob was damaged in the store: the task's own result stands,
/// its workflow fails with WorkflowError naming the blob (the error callback in its stack hears
/// it), and the worker goes on with other work. The blob's id was never seen by this process,
/// so it is read from the store, not from the chain cache.
fn a_corrupt_chain_blob_fails_its_workflow_and_nothing_else(mut w: Running) {
    use lovage_broker::Envelope;
    use lovage_core::canvas::Frame;
    let blob = TaskId::new();
    w.app
        .backend()
        .results()
        .put_blob(blob, b"\xc1 not MessagePack")
        .unwrap();
    let tag = format!("blob-{}", TaskId::new());
    let cb = Canvas::from(noted::partial(tag.clone()));
    let cb_id = cb.result_id();
    let mut env = Envelope::from_signature(add::s(1, 2).signature().clone());
    env.flow = vec![Frame::OnError(vec![cb]), Frame::ChainRef { blob, next: 1 }];
    let id = env.id;
    w.app.backend().broker().enqueue(&[env]).unwrap();
    let note: String = w.app.result(cb_id).get(LONG).unwrap();
    assert!(
        note.contains(&blob.to_string()),
        "the error callback hears which blob: {note}"
    );
    assert_eq!(w.app.result::<i64>(id).get(LONG).unwrap(), 3);
    let later = w.app.send(add::s(2, 3)).unwrap();
    assert_eq!(later.get(LONG).unwrap(), 5, "the worker goes on");
    w.stop();
    assert_eq!(calls(&tag), 1);
}

/// With `task-sent` opted in where a chain of 3 is sent and in the worker that continues it,
/// each step is told of as sent, once and in order: the first by `lovage_flow::send`, the
/// others by the worker as it sends them. Worker events (`--events`) stay off: the opt-in is
/// its own, as Celery's `task_send_sent_event`.
fn each_chain_step_is_told_of_as_sent(backend: Backend) {
    let mut w = start_with(backend, |c| c.sent_events = true);
    let app = w.app.clone().sent_events(true);
    let steps = [
        Canvas::from(add::s(1, 2)),
        add::partial(3).into(),
        add::partial(4).into(),
    ];
    let ids: Vec<Option<TaskId>> = steps.iter().map(|c| Some(c.result_id())).collect();
    let sent = lovage_flow::send(&app, &chain(steps)).unwrap();
    assert_eq!(sent.get::<i64>(LONG).unwrap(), 10);
    w.stop();
    let events = app.backend().events().read_events(0, 1000).unwrap().events;
    let told: Vec<Option<TaskId>> = events
        .iter()
        .filter(|e| e.kind == lovage_broker::ops::EventKind::TaskSent)
        .map(|e| e.task_id)
        .collect();
    assert_eq!(told, ids, "{events:?}");
    assert!(
        events
            .iter()
            .all(|e| e.kind == lovage_broker::ops::EventKind::TaskSent),
        "worker events are off: {events:?}"
    );
}

/// A step sent by `lovage_flow::advance` (a tool or test that settles a task by hand) is
/// told of as sent when its context opts in, once per step it sends, and not when it does not.
fn a_step_sent_by_advance_is_told_of_as_sent(mut w: Running) {
    use lovage_broker::ops::EventKind;
    // Stop the worker: this test settles the steps itself.
    w.shutdown.graceful();
    w.thread.take().unwrap().join().unwrap();
    let backend = w.app.backend().clone();
    let steps = [
        Canvas::from(add::s(1, 2)),
        add::partial(3).into(),
        add::partial(4).into(),
    ];
    let ids: Vec<TaskId> = steps.iter().map(|c| c.result_id()).collect();
    send(&w, &chain(steps));
    let queues = vec!["default".to_owned()];
    let lease = Duration::from_secs(30);
    let told_sent = || -> Vec<TaskId> {
        backend
            .events()
            .read_events(0, 1000)
            .unwrap()
            .events
            .iter()
            .filter(|e| e.kind == EventKind::TaskSent)
            .filter_map(|e| e.task_id)
            .collect()
    };
    let finish_next = |sent_events: bool, value: i64| {
        let got = backend.broker().reserve(&queues, 10, lease, LONG).unwrap();
        assert_eq!(got.len(), 1, "one step at a time");
        let ctx = lovage_flow::Context {
            backend: &backend,
            result_ttl: None,
            worker: Some("by-hand"),
            sent_events,
            steal_after: None,
        };
        let bytes = serde_json::to_vec(&value).unwrap();
        lovage_flow::advance(
            &ctx,
            &got[0].envelope,
            lovage_flow::Finished::Success(&bytes),
        )
        .unwrap();
        backend.broker().complete(&[got[0].lease]).unwrap();
    };
    finish_next(false, 3);
    assert_eq!(
        told_sent(),
        Vec::<TaskId>::new(),
        "not opted in: nothing told"
    );
    finish_next(true, 6);
    assert_eq!(told_sent(), vec![ids[2]], "the third step, told once");
}

#[test]
fn a_step_sent_by_advance_is_told_of_as_sent_on_sqlite() {
    a_step_sent_by_advance_is_told_of_as_sent(sqlite());
}

#[test]
fn a_step_sent_by_advance_is_told_of_as_sent_on_redis() {
    a_step_sent_by_advance_is_told_of_as_sent(redis());
}

#[test]
fn each_chain_step_is_told_of_as_sent_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let backend = connect(&format!("sqlite://{}", dir.path().join("f.db").display())).unwrap();
    each_chain_step_is_told_of_as_sent(backend);
}

#[test]
fn each_chain_step_is_told_of_as_sent_on_redis() {
    let prefix = common::RedisPrefix::new();
    each_chain_step_is_told_of_as_sent(connect(&prefix.url()).unwrap());
}

macro_rules! on_every_backend {
    ($($test:ident),* $(,)?) => {
        mod memory_backend {
            $(#[test] fn $test() { super::$test(super::memory()); })*
        }
        mod sqlite_backend {
            $(#[test] fn $test() { super::$test(super::sqlite()); })*
        }
        mod redis_backend {
            $(#[test] fn $test() { super::$test(super::redis()); })*
        }
    };
}

on_every_backend!(
    a_corrupt_chain_blob_fails_its_workflow_and_nothing_else,
    chain_runs_in_order_passing_each_result_on,
    group_results_come_back_in_member_order,
    chords_of_1_2_and_10000_members_fire_once_with_every_result,
    nested_workflows_compose,
    errors_reach_every_enclosing_error_callback_once,
    a_retrying_member_does_not_fire_the_chord_early,
    arguments_by_name_cannot_take_a_result,
    a_member_finishing_twice_fires_the_chord_once,
    a_workflow_is_sent_once,
    revoking_a_step_fails_the_rest_of_its_workflow,
);
