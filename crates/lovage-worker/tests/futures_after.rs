//! Futures passed as other calls' arguments (`task::after(&future, ..)` sent with
//! `SubmitAfter::submit_after`), resolved by the workers, on memory, SQLite and Redis.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr,
    clippy::undocumented_unsafe_blocks
)] // tests panic to fail and print what they saw

mod common;

use std::time::Duration;

use common::{worker, worker_on, Fresh};
use lovage_broker::futures::all;
use lovage_broker::{App, Backend};
use lovage_core::TaskState;
use lovage_flow::after::waiting_dict;
use lovage_flow::graph::DEPENDENCY_FAILED;
use lovage_flow::SubmitAfter;
use lovage_macros::task;

const LONG: Duration = Duration::from_secs(60);

#[task(crate = lovage_core)]
fn square(x: i64) -> i64 {
    x * x
}

#[task(crate = lovage_core)]
fn add(a: i64, b: i64) -> i64 {
    a + b
}

#[task(crate = lovage_core)]
fn total(xs: Vec<i64>) -> i64 {
    xs.iter().sum()
}

#[task(crate = lovage_core)]
fn refuse(why: String) -> Result<i64, String> {
    Err(why)
}

/// a = 3², b = a + 1, c = b + a, d = c + c: each call waits for the futures it takes.
fn a_chain_of_futures_runs_in_order(fresh: Fresh) {
    let _w = worker(&fresh.backend);
    let client = fresh.app().client().unwrap();
    let a = client.submit(square::s(3)).unwrap();
    let b = client.submit_after(add::after(&a, 1)).unwrap();
    let c = client.submit_after(add::after(&b, &a)).unwrap();
    let d = client.submit_after(add::after(&c, &c)).unwrap();
    // Plain values still work.
    let plain = client.submit_after(add::after(1, 2)).unwrap();
    assert_eq!(d.result_timeout(LONG).unwrap(), 38);
    assert_eq!(c.result_timeout(LONG).unwrap(), 19);
    assert_eq!(b.result_timeout(LONG).unwrap(), 10);
    assert_eq!(plain.result_timeout(LONG).unwrap(), 3);
    // A future handed to a call by value: the call still waits for it.
    let e = client.submit(square::s(5)).unwrap();
    let f = client.submit_after(add::after(e, 1)).unwrap();
    assert_eq!(f.result_timeout(LONG).unwrap(), 26);
}

/// Dependents submitted while their inputs finish: both sides of the race (the caller fills
/// a slot, or the input's worker does) give every value once.
fn dependents_sent_while_inputs_finish(fresh: Fresh) {
    let _w = worker(&fresh.backend);
    let client = fresh.app().client().unwrap();
    let inputs = client.map(square::s, 0..200).unwrap();
    let outs: Vec<_> = inputs
        .iter()
        .map(|f| client.submit_after(add::after(f, f)).unwrap())
        .collect();
    for (x, f) in outs.iter().enumerate() {
        assert_eq!(f.result_timeout(LONG).unwrap(), 2 * (x * x) as i64);
    }
}

/// A list of futures where the task takes a `Vec` (Dask's `client.submit(sum, futures)`): the
/// call waits for every one, some of them done before it is sent.
fn a_list_of_futures_is_one_argument(fresh: Fresh) {
    let _w = worker(&fresh.backend);
    let client = fresh.app().client().unwrap();
    let early = client.submit(square::s(100)).unwrap();
    assert_eq!(early.result_timeout(LONG).unwrap(), 10_000);
    let mut futs = client.map(square::s, 0..50).unwrap();
    futs.push(early);
    let sum = client.submit_after(total::after(all(&futs))).unwrap();
    let want: i64 = (0..50).map(|x| x * x).sum::<i64>() + 10_000;
    assert_eq!(sum.result_timeout(LONG).unwrap(), want);
    let one = client.submit_after(total::after(all(&futs[3..4]))).unwrap();
    assert_eq!(one.result_timeout(LONG).unwrap(), 9);
    let none = client.submit_after(total::after(all::<i64>(&[]))).unwrap();
    assert_eq!(none.result_timeout(LONG).unwrap(), 0);
    let bad = client.submit(refuse::s("one bad page".into())).unwrap();
    let with_bad = vec![client.submit(square::s(2)).unwrap(), bad];
    let failed = client.submit_after(total::after(all(&with_bad))).unwrap();
    let err = failed.result_timeout(LONG).unwrap_err();
    assert_eq!(err.kind, DEPENDENCY_FAILED, "{err:?}");
    assert!(
        err.causes.iter().any(|c| c.contains("one bad page")),
        "{err:?}"
    );
}

/// A failed input fails its dependents, transitively, with DependencyFailed naming it.
fn a_failed_input_fails_its_dependents(fresh: Fresh) {
    let _w = worker(&fresh.backend);
    let client = fresh.app().client().unwrap();
    let bad = client.submit(refuse::s("no such page".into())).unwrap();
    let bad_id = bad.id().to_string();
    let dep = client.submit_after(add::after(&bad, 1)).unwrap();
    let dep2 = client.submit_after(add::after(&dep, 1)).unwrap();
    let good = client.submit(square::s(2)).unwrap();
    let other = client.submit_after(add::after(&good, 1)).unwrap();
    for f in [dep, dep2] {
        let err = f.result_timeout(LONG).unwrap_err();
        assert_eq!(err.kind, DEPENDENCY_FAILED, "{err:?}");
        assert!(err.message.contains(&bad_id), "{err:?}");
        assert!(
            err.causes.iter().any(|c| c.contains("no such page")),
            "{err:?}"
        );
    }
    assert_eq!(
        other.result_timeout(LONG).unwrap(),
        5,
        "other branches finish"
    );
}

/// An input that finished (or failed) before its dependent was sent.
fn an_input_finished_before_its_dependent_is_sent(fresh: Fresh) {
    let _w = worker(&fresh.backend);
    let client = fresh.app().client().unwrap();
    let a = client.submit(square::s(4)).unwrap();
    assert_eq!(a.result_timeout(LONG).unwrap(), 16);
    let b = client.submit_after(add::after(&a, 1)).unwrap();
    assert_eq!(b.result_timeout(LONG).unwrap(), 17);
    let bad = client.submit(refuse::s("gone".into())).unwrap();
    assert!(bad.result_timeout(LONG).is_err());
    let dep = client.submit_after(add::after(&bad, &a)).unwrap();
    let err = dep.result_timeout(LONG).unwrap_err();
    assert_eq!(err.kind, DEPENDENCY_FAILED, "{err:?}");
}

/// The caller sends a chain and drops its client (and every future) before any worker is
/// up: the workers started afterwards run the whole chain.
fn the_chain_finishes_after_the_caller_is_gone(fresh: Fresh) {
    let app: App = fresh.app();
    let (c_id, d_id) = {
        let client = app.client().unwrap();
        let a = client.submit(square::s(3)).unwrap();
        let b = client.submit_after(add::after(&a, 1)).unwrap();
        let c = client.submit_after(add::after(&b, &a)).unwrap();
        let d = client.submit_after(add::after(&c, 100)).unwrap();
        let ids = (c.id(), d.id());
        client.fire_and_forget(d);
        drop(client);
        ids
    };
    let _w = worker(&fresh.backend);
    for (id, want) in [(c_id, 19), (d_id, 119)] {
        let rec = app.wait_record(id, LONG).unwrap().unwrap();
        assert_eq!(rec.state, TaskState::Success, "{rec:?}");
        assert_eq!(rec.outcome::<i64>().unwrap().unwrap(), want);
    }
}

/// Waits (bounded) until every one of `ids`' waiting lists is empty; panics naming one that
/// is not.
fn until_waiting_lists_are_empty(backend: &Backend, ids: &[lovage_core::TaskId]) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let left: Vec<_> = ids
            .iter()
            .filter(|&&id| backend.shared().dict_len(&waiting_dict(id)).unwrap() > 0)
            .collect();
        if left.is_empty() {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{} waiting lists still hold entries after the run, {}'s among them",
            left.len(),
            left[0]
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// After a run of `after` calls (inputs done before and after their dependents were sent,
/// lists of futures, a failed input), every waiting list is empty again: the worker that
/// sends a call, or the caller that served it, removes its entry.
fn the_waiting_lists_are_empty_after_a_run(fresh: Fresh) {
    let _w = worker(&fresh.backend);
    let client = fresh.app().client().unwrap();
    let a = client.submit(square::s(3)).unwrap();
    let b = client.submit_after(add::after(&a, 1)).unwrap();
    let c = client.submit_after(add::after(&b, &a)).unwrap();
    let xs = client.map(square::s, 0..20).unwrap();
    let sum = client.submit_after(total::after(all(&xs))).unwrap();
    assert_eq!(c.result_timeout(LONG).unwrap(), 19);
    assert_eq!(
        sum.result_timeout(LONG).unwrap(),
        (0..20).map(|x| x * x).sum::<i64>()
    );
    // An input finished before its dependent was sent: the caller fills the slot itself.
    let late = client.submit_after(add::after(&a, &b)).unwrap();
    assert_eq!(late.result_timeout(LONG).unwrap(), 19);
    let bad = client.submit(refuse::s("no".into())).unwrap();
    let dep = client.submit_after(add::after(&bad, 1)).unwrap();
    let dep2 = client.submit_after(add::after(&dep, 1)).unwrap();
    assert!(dep2.result_timeout(LONG).is_err());
    let mut ids = vec![a.id(), b.id(), c.id(), sum.id(), bad.id(), dep.id()];
    ids.extend(xs.iter().map(|f| f.id()));
    until_waiting_lists_are_empty(&fresh.backend, &ids);
}

/// A future a task got from `ctx.submit` is an input like a client's: a call given it while
/// the child still runs waits for it (before, only a child already finished was seen).
fn a_future_from_a_task_is_a_real_input(fresh: Fresh) {
    let _w = worker(&fresh.backend);
    let app = fresh.app();
    let parent = app.send(nap_then_add::s(300, 5)).unwrap();
    assert_eq!(parent.get(LONG).unwrap(), 305);
}

/// A future from `client.future(id)` on a task sent without the marker (`app.send`) is an
/// input too: a call given it while the task runs waits for it (the client serves the
/// task's waiting list when it sees the record final), and the list is empty afterwards.
fn a_future_on_a_task_sent_elsewhere_is_a_real_input(fresh: Fresh) {
    let _w = worker(&fresh.backend);
    let app = fresh.app();
    let client = app.client().unwrap();
    let sent = app.send(nap::s(300)).unwrap();
    let input = client.future::<i64>(sent.id());
    let b = client.submit_after(add::after(&input, 1)).unwrap();
    let c = client.submit_after(add::after(&b, &input)).unwrap();
    assert_eq!(c.result_timeout(LONG).unwrap(), 601);
    until_waiting_lists_are_empty(&fresh.backend, &[sent.id(), b.id()]);
}

/// Per-call options on `after` calls (with an input, and with none): the queue and priority
/// are the message's once the inputs are in, over the task's registered ones.
fn an_after_call_takes_per_call_options(fresh: Fresh) {
    let w = worker(&fresh.backend);
    let client = fresh.app().client().unwrap();
    let a = client.submit(square::s(3)).unwrap();
    let b = client
        .submit_after(add::after(&a, 1).queue("after-q").priority(7))
        .unwrap();
    let c = client
        .submit_after(add::after(1, 2).queue("after-q").priority(3))
        .unwrap();
    assert_eq!(a.result_timeout(LONG).unwrap(), 9);
    drop(w);
    // Nobody consumes "after-q" yet: both wait there with their priorities.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let mut queued = Vec::new();
    while queued.len() < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "the calls never reached their queue: {queued:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
        queued = fresh.backend.queue_ops().peek("after-q", 10).unwrap();
    }
    let priority_of = |id| queued.iter().find(|e| e.id == id).map(|e| e.priority);
    assert_eq!(priority_of(b.id()), Some(7), "{queued:?}");
    assert_eq!(priority_of(c.id()), Some(3), "{queued:?}");
    let _w = worker_on(&fresh.backend, &["after-q"]);
    assert_eq!(b.result_timeout(LONG).unwrap(), 10);
    assert_eq!(c.result_timeout(LONG).unwrap(), 3);
}

#[task(crate = lovage_core)]
fn nap(ms: u64) -> i64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms as i64
}

/// Submits `nap(ms)` as a child, then `add(child, k)` while the child sleeps, and returns
/// the sum (bounded: an input never released fails the task instead of hanging it).
#[task(crate = lovage_core)]
fn nap_then_add(ms: u64, k: i64) -> Result<i64, String> {
    let ctx = lovage_broker::ctx::current().ok_or("not run by a worker")?;
    let child = ctx.submit(nap::s(ms)).map_err(|e| e.to_string())?;
    let client = ctx.client().map_err(|e| e.to_string())?;
    let sum = client
        .submit_after(add::after(&child, k))
        .map_err(|e| e.to_string())?;
    if child.done() {
        return Err("the child finished before its dependent was sent".into());
    }
    sum.result_timeout(Duration::from_secs(20))
        .map_err(|e| e.to_string())
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
    a_chain_of_futures_runs_in_order,
    dependents_sent_while_inputs_finish,
    a_failed_input_fails_its_dependents,
    a_list_of_futures_is_one_argument,
    an_input_finished_before_its_dependent_is_sent,
    the_chain_finishes_after_the_caller_is_gone,
    the_waiting_lists_are_empty_after_a_run,
    a_future_from_a_task_is_a_real_input,
    an_after_call_takes_per_call_options,
    a_future_on_a_task_sent_elsewhere_is_a_real_input,
);
