//! Global rate limits: two workers share one token bucket in the broker.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr,
    clippy::undocumented_unsafe_blocks
)] // tests panic to fail and print what they saw

mod common;

use std::sync::Mutex;
use std::time::{Duration, Instant};

use lovage_broker::{connect, App, Backend};
use lovage_core::{TaskId, TaskState};
use lovage_macros::task;
use lovage_worker::{PoolKind, Worker, WorkerConfig};

/// When each run started, per key (tests run in parallel).
static RUNS: Mutex<Vec<(String, Instant)>> = Mutex::new(Vec::new());

#[task(crate = lovage_core, rate_limit = "20/s")]
fn limited(key: String) -> u32 {
    RUNS.lock().unwrap().push((key, Instant::now()));
    1
}

/// A worker named `name` (two in one process need names of their own: the id is
/// `name@host.pid`).
fn worker(
    backend: Backend,
    name: &str,
) -> (
    lovage_worker::Shutdown,
    std::thread::JoinHandle<lovage_worker::WorkerReport>,
) {
    let config = WorkerConfig {
        concurrency: 2,
        prefetch: 16,
        pool: PoolKind::Threads,
        poll: Duration::from_millis(20),
        name: name.into(),
        ..Default::default()
    };
    let w = Worker::new(backend, config).unwrap();
    let stop = w.shutdown_handle();
    (
        stop,
        std::thread::spawn(move || w.run().expect("start the worker threads")),
    )
}

/// 40 tasks limited to 20/s on two workers: all succeed, each on its first attempt, both
/// workers run some, and no one-second window holds much more than the limit. A task starts
/// at its slot or later, so starts late by up to a quarter second (two cores running the
/// suite's other tests) can put the slots of 1.25 s in one window: at most 25. A limit kept
/// by each worker alone would let ~40 start in one second, and no limit all 40 within a few
/// milliseconds.
fn two_workers_share_the_limit(url: &str) {
    let key = TaskId::new().to_string();
    let app = App::connect(url).unwrap();
    let workers = [
        worker(connect(url).unwrap(), "one"),
        worker(connect(url).unwrap(), "two"),
    ];
    let results: Vec<_> = (0..40)
        .map(|_| app.send(limited::s(key.clone())).unwrap())
        .collect();
    for r in &results {
        assert_eq!(r.get(Duration::from_secs(60)).unwrap(), 1);
        let rec = r.record().unwrap().unwrap();
        assert_eq!(rec.state, TaskState::Success);
        assert_eq!(rec.attempts, 1, "being held back is not an attempt");
    }
    let mut ran = Vec::new();
    for (stop, thread) in workers {
        stop.graceful();
        ran.push(thread.join().unwrap().succeeded);
    }
    // Both workers ran some: the limit held across workers, not within one.
    assert!(
        ran.iter().all(|n| *n > 0),
        "each worker ran tasks (successes per worker: {ran:?})"
    );
    assert_eq!(ran.iter().sum::<u64>(), 40, "{ran:?}");
    let mut runs: Vec<Instant> = RUNS
        .lock()
        .unwrap()
        .iter()
        .filter(|(k, _)| *k == key)
        .map(|(_, t)| *t)
        .collect();
    runs.sort();
    assert_eq!(runs.len(), 40, "each task ran once");
    let busiest = runs
        .iter()
        .map(|start| {
            runs.iter()
                .filter(|t| **t >= *start && **t < *start + Duration::from_secs(1))
                .count()
        })
        .max()
        .unwrap();
    assert!(
        busiest <= 25,
        "{busiest} runs within one second under a 20/s limit"
    );
}

#[test]
fn two_workers_share_one_rate_limit_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    two_workers_share_the_limit(&format!("sqlite://{}", dir.path().join("r.db").display()));
}

#[test]
fn two_workers_share_one_rate_limit_on_redis() {
    let prefix = common::RedisPrefix::new();
    two_workers_share_the_limit(&prefix.url());
}

#[task(crate = lovage_core, rate_limit = "50/s")]
fn limited_fast() -> u32 {
    1
}

/// Tasks waiting in a worker for their rate-limit slots count against what it may hold: one
/// slot and a prefetch of one never hold more than a couple of tasks, though a 50/s limit
/// books up to 50 slots within the pacer's horizon.
fn tasks_waiting_for_a_slot_count_against_capacity(url: &str) {
    let app = App::connect(url).unwrap();
    let backend = connect(url).unwrap();
    let results: Vec<_> = (0..60)
        .map(|_| app.send(limited_fast::s()).unwrap())
        .collect();
    let config = WorkerConfig {
        concurrency: 1,
        prefetch: 1,
        pool: PoolKind::Threads,
        poll: Duration::from_millis(20),
        name: "capacity".into(),
        ..Default::default()
    };
    let w = Worker::new(connect(url).unwrap(), config).unwrap();
    let stop = w.shutdown_handle();
    let thread = std::thread::spawn(move || w.run().expect("start the worker threads"));
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut most_held = 0;
    while !results.iter().all(|r| r.ready().unwrap()) {
        assert!(Instant::now() < deadline, "the tasks did not all finish");
        let held: u64 = backend
            .admin()
            .stats()
            .unwrap()
            .iter()
            .map(|s| s.reserved)
            .sum();
        most_held = most_held.max(held);
        std::thread::sleep(Duration::from_millis(5));
    }
    stop.graceful();
    assert_eq!(thread.join().unwrap().succeeded, 60);
    // concurrency + prefetch is 2; twice that leaves room for how the counts are read.
    assert!(
        most_held <= 4,
        "the worker held {most_held} tasks with concurrency 1 and prefetch 1"
    );
}

#[test]
fn tasks_waiting_for_a_slot_count_against_capacity_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    tasks_waiting_for_a_slot_count_against_capacity(&format!(
        "sqlite://{}",
        dir.path().join("r.db").display()
    ));
}

#[test]
fn tasks_waiting_for_a_slot_count_against_capacity_on_redis() {
    let prefix = common::RedisPrefix::new();
    tasks_waiting_for_a_slot_count_against_capacity(&prefix.url());
}
