//! Resources (issue 16, item 5; Dask's `resources={'GPU': 1}`) against real workers on memory,
//! SQLite and Redis: a task needing `gpu` runs only on the worker started with `gpu=1`, never
//! two at once there even with two slots, while other tasks run anywhere; a task needing more
//! than any worker has is not run (nor failed) by anyone.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr,
    clippy::undocumented_unsafe_blocks
)] // tests panic to fail and print what they saw

mod common;

use std::collections::BTreeMap;
use std::sync::{Condvar, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lovage_broker::{App, Backend};
use lovage_core::{ResourceUnits, Resources, TaskState};
use lovage_macros::task;
use lovage_worker::{PoolKind, Worker, WorkerConfig};

use common::Fresh;

const LONG: Duration = Duration::from_secs(60);

/// Sleeps `ms`; returns when it started and ended (nanoseconds since the epoch): the
/// workers share this process's clock, so the intervals of two tasks compare.
#[task(crate = lovage_core)]
fn hold(ms: u64) -> (u128, u128) {
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

/// `hold` with its resources in its registration (`#[task(resources = "gpu")]`), not per call.
#[task(crate = lovage_core, resources = "gpu")]
fn gpu_hold(ms: u64) -> (u128, u128) {
    hold(ms)
}

/// Calls met so far, by meeting key; `meet` waits on it.
static MET: (Mutex<BTreeMap<String, usize>>, Condvar) =
    (Mutex::new(BTreeMap::new()), Condvar::new());

/// Waits (at most 30 s) until `n` calls with this key are running at once; returns whether
/// they met, i.e. ran side by side.
#[task(crate = lovage_core)]
fn meet(key: String, n: usize) -> bool {
    let (lock, cv) = &MET;
    let mut met = lock.lock().unwrap();
    *met.entry(key.clone()).or_default() += 1;
    cv.notify_all();
    let (met, _) = cv
        .wait_timeout_while(met, LONG / 2, |m| m[&key] < n)
        .unwrap();
    met[&key] >= n
}

/// Two workers of two slots each on one backend, `gpu` (with `gpu=1`) and `plain` (no
/// resources); stopped when dropped.
struct Pair {
    app: App,
    stops: Vec<lovage_worker::Shutdown>,
    threads: Vec<std::thread::JoinHandle<lovage_worker::WorkerReport>>,
    _fresh: Fresh,
}

impl Drop for Pair {
    fn drop(&mut self) {
        for s in &self.stops {
            s.graceful();
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn start(fresh: Fresh) -> Pair {
    let backend: Backend = fresh.backend.clone();
    let mut stops = Vec::new();
    let mut threads = Vec::new();
    for (name, resources) in [
        ("gpu", lovage_core::parse_resources("gpu=1").unwrap()),
        ("plain", Resources::new()),
    ] {
        let config = WorkerConfig {
            name: name.into(),
            concurrency: 2,
            pool: PoolKind::Threads,
            poll: Duration::from_millis(20),
            resources,
            ..Default::default()
        };
        let worker = Worker::new(backend.clone(), config).unwrap();
        stops.push(worker.shutdown_handle());
        threads.push(std::thread::spawn(move || worker.run().expect("worker")));
    }
    Pair {
        app: App::with_backend(backend),
        stops,
        threads,
        _fresh: fresh,
    }
}

/// The name part of the worker id that stored `id`'s record (`gpu@host.pid`, `gpu-3@…`).
fn ran_on(app: &App, id: lovage_core::TaskId) -> String {
    let rec = app.backend().results().get(id).unwrap().expect("a record");
    assert_eq!(rec.state, TaskState::Success, "{rec:?}");
    let worker = rec.worker.expect("the worker is recorded");
    let name = worker.split('@').next().unwrap();
    name.split('-').next().unwrap().to_owned()
}

fn gpu_tasks_run_only_on_the_gpu_worker_one_at_a_time(p: Pair) {
    let client = p.app.client().unwrap();
    // Needs more than any worker has: nobody runs it, nobody fails it.
    let too_big = client.submit(hold::s(0).resource("gpu", 2)).unwrap();
    let gpu = client
        .map(|_| hold::s(30).resource("gpu", 1), 0..6)
        .unwrap();
    let plain = client.map(|_| hold::s(5), 0..12).unwrap();
    let gpu_ids: Vec<_> = gpu.iter().map(|f| f.id()).collect();
    let plain_ids: Vec<_> = plain.iter().map(|f| f.id()).collect();
    // The futures live on while their records are read: they hold them.
    let mut spans: Vec<(u128, u128)> = gpu
        .iter()
        .map(|f| f.result_timeout(LONG).unwrap())
        .collect();
    for f in &plain {
        f.result_timeout(LONG).unwrap();
    }
    for id in gpu_ids {
        assert_eq!(
            ran_on(&p.app, id),
            "gpu",
            "a gpu task ran on a worker without gpu"
        );
    }
    let plain_on: std::collections::BTreeSet<String> =
        plain_ids.iter().map(|id| ran_on(&p.app, *id)).collect();
    assert!(!plain_on.is_empty());
    spans.sort();
    for w in spans.windows(2) {
        assert!(
            w[1].0 >= w[0].1,
            "two gpu tasks overlapped on a worker with gpu=1: {:?} and {:?}",
            w[0],
            w[1]
        );
    }
    assert!(!too_big.done(), "a task needing 2 gpus ran or failed");
    let rec = p.app.backend().results().get(too_big.id()).unwrap();
    assert!(
        rec.as_ref().is_none_or(|r| !r.state.is_final()),
        "a task needing 2 gpus has a final record: {rec:?}"
    );
    client.cancel(&too_big).unwrap();
}

/// A task registered with `resources = "gpu"` needs it on every call: every call runs on the
/// gpu worker, one at a time there.
fn a_task_registered_with_resources_runs_only_where_they_are(p: Pair) {
    let client = p.app.client().unwrap();
    let calls = client.map(|_| gpu_hold::s(10), 0..6).unwrap();
    let ids: Vec<_> = calls.iter().map(|f| f.id()).collect();
    // The futures live on while their records are read: they hold them.
    let mut spans: Vec<(u128, u128)> = calls
        .iter()
        .map(|f| f.result_timeout(LONG).unwrap())
        .collect();
    for id in ids {
        assert_eq!(ran_on(&p.app, id), "gpu", "a gpu task ran without gpu");
    }
    spans.sort();
    assert!(
        spans.windows(2).all(|w| w[1].0 >= w[0].1),
        "two gpu tasks overlapped: {spans:?}"
    );
}

/// A worker's heartbeat record tells what it was started with (`lovage workers`, the
/// server's `/api/v1/workers`).
fn a_worker_record_shows_its_resources(p: Pair) {
    // Each worker's first heartbeat is written when its thread starts running.
    let deadline = std::time::Instant::now() + LONG;
    let ws = loop {
        let ws = p.app.workers(LONG).unwrap();
        if ws.len() == 2 || std::time::Instant::now() > deadline {
            break ws;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let of = |name: &str| {
        ws.iter()
            .find(|w| {
                w.id.starts_with(&format!("{name}@")) || w.id.starts_with(&format!("{name}-"))
            })
            .unwrap_or_else(|| panic!("no {name} worker in {ws:?}"))
            .resources
            .clone()
    };
    assert_eq!(of("gpu"), lovage_core::parse_resources("gpu=1").unwrap());
    assert!(of("plain").is_empty());
}

/// Fractional units (Dask's `resources={'GPU': 0.5}`) on the `gpu=1` worker: two halves run
/// there side by side, while a 0.75 task never runs beside another gpu task (0.75 + 0.5 > 1).
fn fractional_units_share_the_gpu_worker(p: Pair) {
    let client = p.app.client().unwrap();
    let key = lovage_core::TaskId::new().to_string();
    let halves = client
        .map(|_| meet::s(key.clone(), 2).resource("gpu", 0.5), 0..2)
        .unwrap();
    for f in &halves {
        assert!(
            f.result_timeout(LONG).unwrap(),
            "two gpu=0.5 tasks did not run at once on a gpu=1 worker"
        );
        assert_eq!(ran_on(&p.app, f.id()), "gpu");
    }
    let big = client
        .map(|_| hold::s(40).resource("gpu", 0.75), 0..3)
        .unwrap();
    let small = client
        .map(|_| hold::s(40).resource("gpu", "0.5"), 0..3)
        .unwrap();
    let spans = |fs: &[lovage_broker::TaskFuture<(u128, u128)>]| -> Vec<(u128, u128)> {
        fs.iter().map(|f| f.result_timeout(LONG).unwrap()).collect()
    };
    let (big_spans, small_spans) = (spans(&big), spans(&small));
    for f in big.iter().chain(&small) {
        assert_eq!(ran_on(&p.app, f.id()), "gpu");
    }
    for (i, b) in big_spans.iter().enumerate() {
        let others = big_spans
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, s)| s)
            .chain(&small_spans);
        for o in others {
            assert!(
                o.0 >= b.1 || b.0 >= o.1,
                "a gpu=0.75 task overlapped another gpu task on a gpu=1 worker: {b:?} and {o:?}"
            );
        }
    }
}

fn a_bad_resource_is_refused_when_sent(p: Pair) {
    let client = p.app.client().unwrap();
    let Err(err) = client.submit(hold::s(0).resource("g pu", 1)) else {
        panic!("a resource name with a space is refused");
    };
    assert!(err.to_string().contains("resource name \"g pu\""), "{err}");
    let Err(err) = client.submit(hold::s(0).resource("gpu", 0)) else {
        panic!("0 units are refused");
    };
    assert!(err.to_string().contains("more than 0 units"), "{err}");
    for (units, says) in [
        (f64::NAN, "not a number of units"),
        (-0.5, "not a number of units"),
        (0.0005, "more than 3 decimals"),
    ] {
        let Err(err) = client.submit(hold::s(0).resource("gpu", units)) else {
            panic!("{units} gpu is refused");
        };
        assert!(err.to_string().contains(says), "{units}: {err}");
    }
    let Err(err) = client.submit(hold::s(0).resource("gpu", "0.12345")) else {
        panic!("5 decimals are refused");
    };
    assert!(err.to_string().contains("more than 3 decimals"), "{err}");
}

macro_rules! on_every_backend {
    ($($name:ident),* $(,)?) => {
        mod memory { $( #[test] fn $name() { super::$name(super::start(super::common::memory_backend())) } )* }
        mod sqlite { $( #[test] fn $name() { super::$name(super::start(super::common::sqlite_backend())) } )* }
        mod redis { $( #[test] fn $name() { super::$name(super::start(super::common::redis_backend())) } )* }
    };
}

on_every_backend!(
    gpu_tasks_run_only_on_the_gpu_worker_one_at_a_time,
    a_task_registered_with_resources_runs_only_where_they_are,
    a_worker_record_shows_its_resources,
    a_bad_resource_is_refused_when_sent,
    fractional_units_share_the_gpu_worker,
);

#[test]
fn a_worker_refuses_bad_resources_with_the_reason() {
    let fresh = common::memory_backend();
    let config = |resources: Resources| WorkerConfig {
        resources,
        ..Default::default()
    };
    let e = Worker::new(
        fresh.backend.clone(),
        config(Resources::from([("gpu".to_owned(), ResourceUnits::ZERO)])),
    )
    .err()
    .unwrap();
    assert!(e.to_string().contains("more than 0 units"), "{e}");
    let five: Resources = (0..5)
        .map(|i| (format!("r{i}"), ResourceUnits::whole(1)))
        .collect();
    let e = Worker::new(fresh.backend.clone(), config(five))
        .err()
        .unwrap();
    assert!(e.to_string().contains("at most 4"), "{e}");
}
