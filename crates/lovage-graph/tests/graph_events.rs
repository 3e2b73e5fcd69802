//! `task-sent` for a graph sent to a broker (issue 15's events, Celery's
//! `task_send_sent_event`): with the opt-in on the caller's app and on the workers, every task
//! node is told of as sent exactly once — the roots by the caller, the others by the worker
//! that completes their last input.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr
)] // tests panic to fail and print what they saw

use std::collections::BTreeMap;
use std::time::Duration;

use lovage_broker::ops::EventKind;
use lovage_graph::{Broker, Graph};
use lovage_macros::task;
use lovage_testkit::{Fresh, Workers};
use lovage_worker::{PoolKind, WorkerConfig};

#[task(crate = lovage_core, graph = lovage_graph)]
fn square(x: i64) -> i64 {
    x * x
}

#[task(crate = lovage_core, graph = lovage_graph)]
fn inc(x: i64) -> i64 {
    x + 1
}

#[task(crate = lovage_core, graph = lovage_graph)]
fn add(a: i64, b: i64) -> i64 {
    a + b
}

fn every_node_is_told_of_as_sent_once(kind: &str) {
    let f = Fresh::new(kind);
    let workers = Workers::start(
        &f.backend,
        [WorkerConfig {
            concurrency: 2,
            pool: PoolKind::Threads,
            poll: Duration::from_millis(20),
            sent_events: true,
            ..Default::default()
        }],
    );
    let client = f.app().sent_events(true).client().unwrap();
    // A diamond (no single-consumer chain, so each node is a message of its own): one root
    // the caller sends, three nodes the workers send.
    let g = Graph::new();
    let a = square::delayed(&g, 3);
    let b = inc::delayed(&g, a);
    let c = square::delayed(&g, a);
    let d = add::delayed(&g, b, c);
    assert_eq!(g.compute(Broker(&client), d).unwrap(), 10 + 81);
    workers.stop();
    let events = f.backend.events().read_events(0, 1000).unwrap().events;
    let mut sent: BTreeMap<String, Vec<_>> = BTreeMap::new();
    for e in events.iter().filter(|e| e.kind == EventKind::TaskSent) {
        sent.entry(e.name.clone().unwrap_or_default())
            .or_default()
            .push(e.task_id.expect("a task-sent event names its task"));
    }
    let counts: BTreeMap<&str, usize> = sent.iter().map(|(k, v)| (k.as_str(), v.len())).collect();
    assert_eq!(
        counts,
        BTreeMap::from([
            ("graph_events::add", 1),
            ("graph_events::inc", 1),
            ("graph_events::square", 2),
        ]),
        "{events:?}"
    );
    let mut ids: Vec<_> = sent.values().flatten().collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 4, "each node once: {events:?}");
}

#[test]
fn every_node_is_told_of_as_sent_once_on_sqlite() {
    every_node_is_told_of_as_sent_once("sqlite");
}

#[test]
fn every_node_is_told_of_as_sent_once_on_redis() {
    every_node_is_told_of_as_sent_once("redis");
}
