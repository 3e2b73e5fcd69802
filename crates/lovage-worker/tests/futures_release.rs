//! Results released when no future needs them (Dask's semantics), on memory, SQLite and
//! Redis: the client forgets a finished task's record once its last future is dropped, but
//! not while a clone lives, a call sent with `submit_after` waits for it, another client
//! holds it (a keyed submit found it), or after `fire_and_forget`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr,
    clippy::undocumented_unsafe_blocks
)] // tests panic to fail and print what they saw

mod common;

use std::time::{Duration, Instant};

use lovage_broker::{connect, holders_dict, App, ResultRecord, Timestamp};
use lovage_core::{Codec, TaskId, TaskState};
use lovage_flow::SubmitAfter;
use lovage_macros::task;

use common::{worker, Fresh};

const LONG: Duration = Duration::from_secs(60);
/// Long enough for the client's watcher to have released a record it was going to release
/// (it does so within a pass, 200 ms, or a recheck, 500 ms).
const SETTLE: Duration = Duration::from_millis(1500);

#[task(crate = lovage_core)]
fn square(x: i64) -> i64 {
    x * x
}

#[task(crate = lovage_core)]
fn add(a: i64, b: i64) -> i64 {
    a + b
}

/// Waits (bounded) until none of `ids` has a record; panics naming one that still has.
fn until_forgotten(app: &App, ids: &[TaskId]) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let left: Vec<TaskId> = ids
            .iter()
            .zip(app.records(ids).unwrap())
            .filter(|(_, r)| r.is_some())
            .map(|(id, _)| *id)
            .collect();
        if left.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{} records are still stored after their futures were dropped, {}'s among them",
            left.len(),
            left[0]
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Futures dropped after their tasks finished (taken by `result`, `gather`, or dropped
/// unread; from `submit`, `map` or `submit_after`) release their records.
fn dropped_futures_release_their_results(fresh: Fresh) {
    let _w = worker(&fresh.backend);
    let app = fresh.app();
    let client = app.client().unwrap();
    let one = client.submit(square::s(3)).unwrap();
    let id = one.id();
    assert_eq!(one.result_timeout(LONG).unwrap(), 9);
    assert!(
        app.record(id).unwrap().is_some(),
        "held while the future lives"
    );
    drop(one);
    let many = client.map(square::s, 0..50).unwrap();
    let ids: Vec<TaskId> = many.iter().map(|f| f.id()).collect();
    let unread = client.submit(square::s(4)).unwrap();
    let unread_id = unread.id();
    while !unread.done() {
        std::thread::sleep(Duration::from_millis(10));
    }
    drop(unread);
    assert_eq!(client.gather(many).unwrap().len(), 50);
    let call = client.submit_after(add::after(1, 2)).unwrap();
    let call_id = call.id();
    assert_eq!(call.result_timeout(LONG).unwrap(), 3);
    drop(call);
    until_forgotten(&app, &[id, unread_id, call_id]);
    until_forgotten(&app, &ids);
}

/// A clone holds the record with the original; a future handed to `fire_and_forget` keeps
/// its record for its time to live, whatever becomes of its clones.
fn a_clone_keeps_the_result(fresh: Fresh) {
    let _w = worker(&fresh.backend);
    let app = fresh.app();
    let client = app.client().unwrap();
    let first = client.submit(square::s(5)).unwrap();
    let second = first.clone();
    assert_eq!(first.result_timeout(LONG).unwrap(), 25);
    let id = first.id();
    drop(first);
    std::thread::sleep(SETTLE);
    assert!(
        app.record(id).unwrap().is_some(),
        "the clone still holds it"
    );
    assert_eq!(second.result_timeout(LONG).unwrap(), 25);
    second.release();
    until_forgotten(&app, &[id]);

    // (Handed over once finished: fire_and_forget stops the watch on its task, clones' too.)
    let kept = client.submit(square::s(6)).unwrap();
    let clone = kept.clone();
    let kept_id = kept.id();
    assert_eq!(kept.result_timeout(LONG).unwrap(), 36);
    client.fire_and_forget(kept);
    drop(clone);
    std::thread::sleep(SETTLE);
    assert!(
        app.record(kept_id).unwrap().is_some(),
        "fire_and_forget keeps the record"
    );
}

/// An input whose futures are gone keeps its record while a call sent with `submit_after`
/// still waits for it, and loses it once the call is served. The input is made to look
/// finished (its record stored by hand) before a worker runs it, so its waiting list still
/// holds the call's entry when its future is dropped.
fn a_waiting_dependent_keeps_its_input(fresh: Fresh) {
    let app = fresh.app();
    let client = app.client().unwrap();
    let a = client.submit(square::s(3)).unwrap();
    let a_id = a.id();
    let b = client.submit_after(add::after(&a, 1)).unwrap();
    let done = ResultRecord {
        id: a_id,
        task: square::NAME.into(),
        state: TaskState::Success,
        value: Some(Codec::Json.encode(&9i64, "test value").unwrap()),
        codec: Codec::Json,
        error: None,
        attempts: 1,
        worker: None,
        started: None,
        updated: Timestamp::now(),
        expires: None,
    };
    fresh.backend.results().store(&[done]).unwrap();
    assert_eq!(a.result_timeout(LONG).unwrap(), 9);
    drop(a);
    std::thread::sleep(SETTLE);
    assert!(
        app.record(a_id).unwrap().is_some(),
        "the call waiting for it keeps it"
    );
    // The worker runs `a`, sends `b` and empties `a`'s waiting list: now nothing needs it.
    let _w = worker(&fresh.backend);
    assert_eq!(b.result_timeout(LONG).unwrap(), 10);
    until_forgotten(&app, &[a_id]);
}

/// A keyed result two clients hold (each on its own connection, as two processes would):
/// the first to drop its last future does not forget it under the other, whichever of them
/// sent the task; the last one does.
fn two_clients_release_a_shared_result_once(fresh: Fresh) {
    let _w = worker(&fresh.backend);
    let app_a = fresh.app();
    let app_b = App::with_backend(connect(fresh.backend.url()).unwrap());
    let a = app_a.client().unwrap();
    let b = app_b.client().unwrap();

    // The sender lets go first.
    let sent = a.submit_keyed("shared-square", square::s(7)).unwrap();
    assert_eq!(sent.result_timeout(LONG).unwrap(), 49);
    let id = sent.id();
    let found = b.submit_keyed("shared-square", square::s(7)).unwrap();
    assert_eq!(found.id(), id, "B's keyed submit found A's task");
    drop(sent);
    std::thread::sleep(SETTLE);
    assert!(
        app_a.record(id).unwrap().is_some(),
        "A's release forgot a result B still holds"
    );
    assert_eq!(found.result_timeout(LONG).unwrap(), 49);
    drop(found);
    until_forgotten(&app_a, &[id]);
    assert!(
        fresh
            .backend
            .shared()
            .dict_is_empty(&holders_dict(id))
            .unwrap(),
        "the holders are cleared with the record"
    );

    // The other client lets go first.
    let sent = a.submit_keyed("shared-cube", square::s(8)).unwrap();
    assert_eq!(sent.result_timeout(LONG).unwrap(), 64);
    let id = sent.id();
    let found = b.submit_keyed("shared-cube", square::s(8)).unwrap();
    assert_eq!(found.id(), id);
    assert_eq!(found.result_timeout(LONG).unwrap(), 64);
    drop(found);
    std::thread::sleep(SETTLE);
    assert!(
        app_a.record(id).unwrap().is_some(),
        "B's release forgot a result A (its sender) still holds"
    );
    drop(sent);
    until_forgotten(&app_a, &[id]);
    assert!(fresh
        .backend
        .shared()
        .dict_is_empty(&holders_dict(id))
        .unwrap());
}

macro_rules! on_every_backend {
    ($($test:ident),* $(,)?) => {
        mod memory_backend {
            $(#[test] fn $test() { super::$test(super::common::memory_backend()); })*
        }
        mod sqlite_backend {
            $(#[test] fn $test() { super::$test(super::common::sqlite_backend()); })*
        }
        mod redis_backend {
            $(#[test] fn $test() { super::$test(super::common::redis_backend()); })*
        }
    };
}

on_every_backend!(
    dropped_futures_release_their_results,
    a_clone_keeps_the_result,
    a_waiting_dependent_keeps_its_input,
    two_clients_release_a_shared_result_once,
);
