//! The futures client (`app.client()`: submit, map, gather, as_completed, wait, cancel,
//! fire_and_forget) against a real worker on every backend: memory, SQLite and Redis.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr,
    clippy::undocumented_unsafe_blocks
)] // tests panic to fail and print what they saw

mod common;

use std::collections::HashSet;
use std::time::Duration;

use lovage_broker::futures::ReturnWhen;
use lovage_broker::{App, Backend};
use lovage_core::{kinds, TaskState};
use lovage_macros::task;
use lovage_worker::{PoolKind, Worker, WorkerConfig};

use common::Fresh;

const LONG: Duration = Duration::from_secs(60);

#[task(crate = lovage_core)]
fn square(x: i64) -> i64 {
    x * x
}

#[task(crate = lovage_core)]
fn nap(ms: u64) -> i64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms as i64
}

#[task(crate = lovage_core)]
fn refuse(why: String) -> Result<i64, String> {
    Err(why)
}

struct Running {
    app: App,
    shutdown: lovage_worker::Shutdown,
    thread: Option<std::thread::JoinHandle<lovage_worker::WorkerReport>>,
    _fresh: Fresh,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.shutdown.graceful();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn start(fresh: Fresh) -> Running {
    let backend: Backend = fresh.backend.clone();
    let config = WorkerConfig {
        concurrency: 2,
        prefetch: 64,
        pool: PoolKind::Threads,
        poll: Duration::from_millis(50),
        lease: Duration::from_secs(10),
        ..Default::default()
    };
    let worker = Worker::new(backend.clone(), config).unwrap();
    let shutdown = worker.shutdown_handle();
    let thread = std::thread::spawn(move || worker.run().expect("start the worker threads"));
    Running {
        app: App::with_backend(backend),
        shutdown,
        thread: Some(thread),
        _fresh: fresh,
    }
}

fn submit_map_and_gather_give_every_value_in_order(w: Running) {
    let client = w.app.client().unwrap();
    let one = client.submit(square::s(7)).unwrap();
    assert_eq!(one.result_timeout(LONG).unwrap(), 49);
    let futures = client.map(square::s, 0..2500).unwrap();
    assert_eq!(futures.len(), 2500);
    let values = client.gather(futures).unwrap();
    assert_eq!(values, (0..2500).map(|x| x * x).collect::<Vec<i64>>());
    assert_eq!(client.pending(), 0);
}

fn as_completed_yields_each_future_once_and_takes_more(w: Running) {
    let client = w.app.client().unwrap();
    let futures = client.map(square::s, 0..300).unwrap();
    let mut ids: HashSet<_> = futures.iter().map(|f| f.id()).collect();
    let mut it = client.as_completed(futures);
    it.add(client.submit(square::s(1000)).unwrap());
    let mut total = 0i64;
    let mut seen = 0;
    while let Some(f) = it.next_timeout(LONG) {
        assert!(f.done());
        ids.remove(&f.id());
        total += f.result().unwrap();
        seen += 1;
    }
    assert_eq!(seen, 301);
    assert!(ids.is_empty(), "futures never yielded: {ids:?}");
    assert_eq!(total, (0..300).map(|x| x * x).sum::<i64>() + 1_000_000);
}

/// `as_completed` as an async `Stream`: awaited with no thread parked per future, it yields
/// every future once and then ends.
fn as_completed_is_a_stream(w: Running) {
    use futures_core::Stream;
    let client = w.app.client().unwrap();
    let futures = client.map(square::s, 0..200).unwrap();
    let mut stream = client.as_completed(futures);
    let mut total = 0i64;
    let mut seen = 0;
    lovage_core::block_on(async {
        while let Some(f) =
            std::future::poll_fn(|cx| std::pin::Pin::new(&mut stream).poll_next(cx)).await
        {
            assert!(f.done());
            total += f.result().unwrap();
            seen += 1;
        }
    });
    assert_eq!(seen, 200);
    assert_eq!(total, (0..200).map(|x| x * x).sum::<i64>());
}

fn wait_returns_when_its_condition_holds(w: Running) {
    let client = w.app.client().unwrap();
    let slow = client
        .submit(nap::s(0).countdown(Duration::from_secs(3600)))
        .unwrap();
    let fast = client.submit(square::s(3)).unwrap();
    let fast_id = fast.id();
    let waited = client.wait(vec![slow, fast], ReturnWhen::FirstCompleted, Some(LONG));
    assert_eq!(waited.done.len(), 1);
    assert_eq!(waited.done[0].id(), fast_id);
    let slow = waited.not_done.into_iter().next().unwrap();

    let bad = client.submit(refuse::s("no".to_string())).unwrap();
    let waited = client.wait(vec![slow, bad], ReturnWhen::FirstException, Some(LONG));
    assert_eq!(waited.done.len(), 1);
    let err = waited
        .done
        .into_iter()
        .next()
        .unwrap()
        .result()
        .unwrap_err();
    assert!(err.message.contains("no"), "{err:?}");

    let waited = client.wait(
        waited.not_done,
        ReturnWhen::AllCompleted,
        Some(Duration::from_millis(300)),
    );
    assert!(waited.done.is_empty());
    assert_eq!(waited.not_done.len(), 1);
    client.cancel(&waited.not_done[0]).unwrap();
}

fn cancel_revokes_the_task_and_ends_the_future(w: Running) {
    let client = w.app.client().unwrap();
    let later = client
        .submit(nap::s(0).countdown(Duration::from_secs(3600)))
        .unwrap();
    let id = later.id();
    client.cancel(&later).unwrap();
    assert!(later.done());
    let err = later.result().unwrap_err();
    assert_eq!(err.kind, kinds::CANCELLED);
    assert_eq!(w.app.record(id).unwrap().unwrap().state, TaskState::Revoked);
}

fn a_forgotten_task_still_runs_and_a_dropped_client_ends_its_futures(w: Running) {
    let client = w.app.client().unwrap();
    let forgotten = client.submit(square::s(12)).unwrap();
    let id = forgotten.id();
    client.fire_and_forget(forgotten);
    assert_eq!(client.pending(), 0);
    let rec = w.app.wait_record(id, LONG).unwrap().unwrap();
    assert_eq!(rec.state, TaskState::Success);

    let waiting = client
        .submit(nap::s(0).countdown(Duration::from_secs(3600)))
        .unwrap();
    drop(client);
    let err = waiting.result_timeout(LONG).unwrap_err();
    assert_eq!(err.kind, kinds::CANCELLED, "{err:?}");
}

fn a_future_can_be_awaited(w: Running) {
    let client = w.app.client().unwrap();
    let f = client.submit(square::s(9)).unwrap();
    assert_eq!(lovage_core::block_on(f).unwrap(), 81);
    let bad = client.submit(refuse::s("awaited".to_string())).unwrap();
    let err = lovage_core::block_on(bad).unwrap_err();
    assert!(err.message.contains("awaited"), "{err:?}");
}

/// Tasks that finish out of the order they were sent in (the newest first, by priority) are
/// seen by the watcher's round-robin sweep, not only once the oldest finish.
fn futures_finishing_out_of_order_complete(w: Running) {
    let client = w.app.client().unwrap();
    // More held tasks than the watcher's "oldest" set, so only its sweep sees the rest.
    let held = client
        .map(|_| nap::s(0).countdown(Duration::from_secs(3600)), 0..100)
        .unwrap();
    let rest = client.map(square::s, 0..1000).unwrap();
    for (x, f) in rest.iter().enumerate() {
        assert_eq!(f.result_timeout(LONG).unwrap(), (x * x) as i64);
    }
    assert!(held.iter().all(|f| !f.done()));
    for f in &held {
        client.cancel(f).unwrap();
    }
}

macro_rules! on_every_backend {
    ($($test:ident),* $(,)?) => {
        mod memory_backend {
            $(#[test] fn $test() { super::$test(super::start(super::common::memory_backend())); })*
        }
        mod sqlite_backend {
            $(#[test] fn $test() { super::$test(super::start(super::common::sqlite_backend())); })*
        }
        mod redis_backend {
            $(#[test] fn $test() { super::$test(super::start(super::common::redis_backend())); })*
        }
    };
}

on_every_backend!(
    submit_map_and_gather_give_every_value_in_order,
    as_completed_yields_each_future_once_and_takes_more,
    as_completed_is_a_stream,
    wait_returns_when_its_condition_holds,
    cancel_revokes_the_task_and_ends_the_future,
    a_forgotten_task_still_runs_and_a_dropped_client_ends_its_futures,
    a_future_can_be_awaited,
    futures_finishing_out_of_order_complete,
);
