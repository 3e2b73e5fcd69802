//! Per-node call options of a graph sent to a broker (`Graph::set_options`), against real
//! workers on memory, SQLite and Redis: `resources` (a node needing `gpu` runs only on the
//! worker with `gpu=1`, one at a time), `retry` (a node that fails twice then succeeds) and
//! `priority` (a high-priority root runs before the others); and a node that finishes on the
//! caller (`Graph::finish_on_caller`).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr
)] // tests panic to fail and print what they saw

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lovage_broker::{App, Backend};
use lovage_core::{Resources, RetryPolicy, TaskId, TaskOptions};
use lovage_graph::{Broker, Delayed, Graph, GraphError};
use lovage_macros::task;
use lovage_testkit::{ran_on, Fresh, Workers};
use lovage_worker::{PoolKind, WorkerConfig};

const LONG: Duration = Duration::from_secs(60);

/// Sleeps `ms`; returns when it started and ended (ns since the epoch, this process's clock).
#[task(crate = lovage_core, graph = lovage_graph)]
fn hold(ms: u64, tag: u64) -> (u128, u128) {
    let _ = tag;
    let now = || {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    };
    let start = now();
    std::thread::sleep(Duration::from_millis(ms));
    (start, now())
}

#[task(crate = lovage_core, graph = lovage_graph)]
fn count(spans: Vec<(u128, u128)>) -> u64 {
    spans.len() as u64
}

static FLAKY: Mutex<Option<HashMap<String, u32>>> = Mutex::new(None);

/// Fails its first `fails` runs for `tag`, then returns the number of runs.
#[task(crate = lovage_core, graph = lovage_graph)]
fn flaky(tag: String, fails: u32) -> Result<u32, String> {
    let mut runs = FLAKY.lock().unwrap();
    let n = runs
        .get_or_insert_with(HashMap::new)
        .entry(tag)
        .or_default();
    *n += 1;
    if *n <= fails {
        return Err(format!("run {n} fails on purpose"));
    }
    Ok(*n)
}

static ORDER: AtomicU64 = AtomicU64::new(0);

/// The order in which it ran among `ordered` calls of this process.
#[task(crate = lovage_core, graph = lovage_graph)]
fn ordered(tag: u64) -> u64 {
    let _ = tag;
    ORDER.fetch_add(1, Ordering::SeqCst)
}

/// The name of the thread it runs on, and how many parts it got.
#[task(crate = lovage_core, graph = lovage_graph)]
fn runs_on(parts: Vec<u64>) -> (String, usize) {
    let thread = std::thread::current();
    (thread.name().unwrap_or("").to_owned(), parts.len())
}

/// `runs_on`'s thread name, read by a task.
#[task(crate = lovage_core, graph = lovage_graph)]
fn thread_of(ran: (String, usize)) -> String {
    ran.0
}

/// Starts one worker per (name, slots, resources), stopped when dropped.
fn start(backend: &Backend, workers: &[(&str, usize, Resources)]) -> Workers {
    let configs = workers.iter().map(|(name, slots, resources)| WorkerConfig {
        name: (*name).into(),
        concurrency: *slots,
        prefetch: 1,
        pool: PoolKind::Threads,
        poll: Duration::from_millis(20),
        resources: resources.clone(),
        ..Default::default()
    });
    Workers::start(backend, configs)
}

fn gpu() -> TaskOptions {
    TaskOptions {
        resources: Some(lovage_core::parse_resources("gpu=1").unwrap()),
        ..Default::default()
    }
}

fn gpu_nodes_run_only_on_the_gpu_worker_one_at_a_time(kind: &str) {
    let f = Fresh::new(kind);
    let _w = start(
        &f.backend,
        &[
            ("gpu", 2, lovage_core::parse_resources("gpu=1").unwrap()),
            ("plain", 2, Resources::new()),
        ],
    );
    let client = App::with_backend(f.backend.clone()).client().unwrap();
    let g = Graph::new();
    let gpu_nodes: Vec<Delayed<(u128, u128)>> = (0..5)
        .map(|i| {
            let d = hold::delayed(&g, 30, i);
            g.set_options(d, gpu()).unwrap();
            d
        })
        .collect();
    let plain_nodes: Vec<Delayed<(u128, u128)>> =
        (0..8).map(|i| hold::delayed(&g, 5, 100 + i)).collect();
    let gpu_count = count::delayed(&g, gpu_nodes.clone());
    let plain_count = count::delayed(&g, plain_nodes.clone());
    let mut outputs = gpu_nodes.clone();
    outputs.extend(plain_nodes.iter().copied());
    let sent = g.submit(&client, outputs).unwrap();
    let ids: Vec<TaskId> = sent.futures.iter().map(|f| f.id()).collect();
    let mut spans = Vec::new();
    for f in sent.futures {
        spans.push(f.result_timeout(LONG).unwrap());
    }
    for id in &ids[..5] {
        assert_eq!(
            ran_on(&f.backend, *id),
            "gpu",
            "{kind}: a gpu node ran elsewhere"
        );
    }
    let mut gpu_spans = spans[..5].to_vec();
    gpu_spans.sort();
    for w in gpu_spans.windows(2) {
        assert!(
            w[1].0 >= w[0].1,
            "{kind}: two gpu nodes overlapped: {:?} {:?}",
            w[0],
            w[1]
        );
    }
    assert_eq!(
        g.compute(Broker(&client), (gpu_count, plain_count))
            .unwrap(),
        (5, 8),
        "{kind}"
    );
}

fn a_node_with_retries_succeeds_after_failing_and_one_without_fails(kind: &str) {
    let f = Fresh::new(kind);
    let _w = start(&f.backend, &[("w", 2, Resources::new())]);
    let client = App::with_backend(f.backend.clone()).client().unwrap();
    let tag = TaskId::new().to_string();
    let g = Graph::new();
    let retried = flaky::delayed(&g, format!("{tag}-a"), 2);
    g.set_options(
        retried,
        TaskOptions {
            retry: Some(RetryPolicy {
                max_retries: 3,
                backoff_base: Duration::from_millis(1),
                jitter: false,
                ..Default::default()
            }),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(
        g.compute(Broker(&client), retried).unwrap(),
        3,
        "{kind}: run 3 succeeds"
    );
    let g = Graph::new();
    let once = flaky::delayed(&g, format!("{tag}-b"), 2);
    match g.compute(Broker(&client), once) {
        Err(GraphError::Failed { error, .. }) => {
            assert!(error.message.contains("run 1 fails"), "{kind}: {error}")
        }
        other => panic!("{kind}: {other:?}"),
    }
}

fn a_high_priority_root_runs_first(kind: &str) {
    let f = Fresh::new(kind);
    let client = App::with_backend(f.backend.clone()).client().unwrap();
    let g = Graph::new();
    let low: Vec<Delayed<u64>> = (0..12).map(|i| ordered::delayed(&g, i)).collect();
    let high = ordered::delayed(&g, 99);
    g.set_options(
        high,
        TaskOptions {
            priority: Some(9),
            ..Default::default()
        },
    )
    .unwrap();
    let mut outputs = low.clone();
    outputs.push(high);
    // Sent before any worker runs, so every root waits in the queue when the worker starts.
    let sent = g.submit(&client, outputs).unwrap();
    let _w = start(&f.backend, &[("w", 1, Resources::new())]);
    let orders: Vec<u64> = sent
        .futures
        .into_iter()
        .map(|f| f.result_timeout(LONG).unwrap())
        .collect();
    let high_order = *orders.last().unwrap();
    assert!(
        orders[..12].iter().all(|o| *o > high_order),
        "{kind}: the priority-9 root ran at {high_order}, the others at {:?}",
        &orders[..12]
    );
}

fn a_finishing_node_runs_on_the_caller_unless_a_task_reads_it(kind: &str) {
    let f = Fresh::new(kind);
    let _w = start(&f.backend, &[("w", 2, Resources::new())]);
    let client = App::with_backend(f.backend.clone()).client().unwrap();
    let here = std::thread::current().name().unwrap_or("").to_owned();
    let g = Graph::new();
    let parts: Vec<Delayed<u64>> = (0..4).map(|i| ordered::delayed(&g, 1000 + i)).collect();
    let last = runs_on::delayed(&g, parts.clone());
    g.finish_on_caller(last).unwrap();
    let (thread, n) = g.compute(Broker(&client), last).unwrap();
    assert_eq!((thread.as_str(), n), (here.as_str(), 4), "{kind}");
    // The same node read by another task runs on the workers, like any task.
    let g = Graph::new();
    let parts: Vec<Delayed<u64>> = (0..4).map(|i| ordered::delayed(&g, 2000 + i)).collect();
    let middle = runs_on::delayed(&g, parts);
    g.finish_on_caller(middle).unwrap();
    let read = thread_of::delayed(&g, middle);
    let thread = g.compute(Broker(&client), read).unwrap();
    assert_ne!(
        thread, here,
        "{kind}: a node a task reads ran on the caller"
    );
}

fn options_on_a_node_that_is_not_a_task_are_refused() {
    let g = Graph::new();
    let v = g.value(3i64);
    match g.set_options(v, gpu()) {
        Err(GraphError::InvalidOptions { reason, .. }) => {
            assert!(reason.contains("registered task"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        g.finish_on_caller(v),
        Err(GraphError::InvalidOptions { .. })
    ));
    let d = hold::delayed(&g, 1, 1);
    let bad = TaskOptions {
        resources: Some(Resources::from([(
            "g pu".to_owned(),
            lovage_core::ResourceUnits::whole(1),
        )])),
        ..Default::default()
    };
    assert!(matches!(
        g.set_options(d, bad),
        Err(GraphError::InvalidOptions { .. })
    ));
}

macro_rules! on_every_backend {
    ($($name:ident),* $(,)?) => {
        mod memory { $( #[test] fn $name() { super::$name("memory") } )* }
        mod sqlite { $( #[test] fn $name() { super::$name("sqlite") } )* }
        mod redis { $( #[test] fn $name() { super::$name("redis") } )* }
    };
}

on_every_backend!(
    gpu_nodes_run_only_on_the_gpu_worker_one_at_a_time,
    a_node_with_retries_succeeds_after_failing_and_one_without_fails,
    a_high_priority_root_runs_first,
    a_finishing_node_runs_on_the_caller_unless_a_task_reads_it,
);

#[test]
fn bad_options_are_refused() {
    options_on_a_node_that_is_not_a_task_are_refused();
}
