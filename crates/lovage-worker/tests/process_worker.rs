//! A worker on a process pool: children that really die, soft time limits delivered by
//! SIGUSR1, and revokes that kill the child running the task. Each scenario runs on memory,
//! SQLite and Redis.
//!
//! The pool starts this test binary again as its children, so it has a `main` of its own
//! (`harness = false`) that calls `lovage_pool::child_main` first, as lovage-pool's
//! process_pool tests do. Task bodies run in the children, so they report through files, not
//! statics.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr,
    clippy::undocumented_unsafe_blocks
)] // tests panic to fail and print what they saw

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use libtest_mimic::{Arguments, Trial};
use lovage_broker::{App, Revoked};
use lovage_core::{kinds, TaskState};
use lovage_macros::task;
use lovage_worker::{PoolKind, Worker, WorkerConfig, WorkerReport};

use common::{memory_backend, redis_backend, sqlite_backend, Fresh};

const LONG: Duration = Duration::from_secs(30);

/// Adds one to the count in the file `path` and returns the new count.
fn bump(path: &str) -> u32 {
    let n = std::fs::read_to_string(path)
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
        .unwrap_or(0)
        + 1;
    std::fs::write(path, n.to_string()).unwrap();
    n
}

fn count(path: &Path) -> u32 {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// Its process dies by SIGKILL on every run before the `lives`-th (counted in `path`).
fn die_until(path: &str, lives: u32) -> u32 {
    let n = bump(path);
    if n < lives {
        // SAFETY: signalling our own process.
        unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
        std::thread::sleep(Duration::from_secs(60));
    }
    n
}

#[task(crate = lovage_core, reject_on_worker_lost = true)]
fn dies_twice(path: String) -> u32 {
    die_until(&path, 3)
}

#[task(crate = lovage_core)]
fn dies_once(path: String) -> u32 {
    die_until(&path, 2)
}

/// Works in small steps for up to `max_ms`, stopping when its cancel token says so; writes
/// `stopped` or `finished` in `path`.
#[task(crate = lovage_core, soft_time_limit = "300ms")]
fn polite(path: String, max_ms: u64) -> Result<u64, lovage_core::TaskError> {
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(max_ms) {
        if let Err(e) = lovage_core::check_cancelled() {
            std::fs::write(&path, "stopped").unwrap();
            return Err(e);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    std::fs::write(&path, "finished").unwrap();
    Ok(max_ms)
}

/// Writes its pid in `dir/started`, sleeps `ms` (deaf to cancel tokens: only a kill stops
/// it), then writes `dir/finished`.
#[task(crate = lovage_core)]
fn stubborn(dir: String, ms: u64) -> u32 {
    let dir = Path::new(&dir);
    std::fs::write(dir.join("started"), std::process::id().to_string()).unwrap();
    std::thread::sleep(Duration::from_millis(ms));
    std::fs::write(dir.join("finished"), "").unwrap();
    std::process::id()
}

#[task(crate = lovage_core)]
fn pid() -> u32 {
    std::process::id()
}

struct Running {
    app: App,
    shutdown: lovage_worker::Shutdown,
    thread: Option<std::thread::JoinHandle<WorkerReport>>,
    fresh: Fresh,
}

impl Running {
    /// Stops gracefully; the backend stays, to read records afterwards.
    fn stop(mut self) -> (WorkerReport, Fresh) {
        self.shutdown.graceful();
        let report = self.thread.take().unwrap().join().unwrap();
        (report, self.fresh)
    }
}

/// A worker with one child process; the keeper looks at leases (and revokes) every 333 ms.
fn start(fresh: Fresh) -> Running {
    let config = WorkerConfig {
        concurrency: 1,
        prefetch: 0,
        pool: PoolKind::Processes,
        poll: Duration::from_millis(50),
        lease: Duration::from_secs(1),
        heartbeat: Duration::from_millis(200),
        ..Default::default()
    };
    let worker = Worker::new(fresh.backend.clone(), config).unwrap();
    let shutdown = worker.shutdown_handle();
    let thread = std::thread::spawn(move || worker.run().expect("start the worker threads"));
    Running {
        app: fresh.app(),
        shutdown,
        thread: Some(thread),
        fresh,
    }
}

fn path_str(p: &Path) -> String {
    p.to_str().unwrap().to_owned()
}

fn reject_on_worker_lost_reruns_a_task_whose_child_died(fresh: Fresh) {
    let dir = tempfile::tempdir().unwrap();
    let w = start(fresh);
    let twice = dir.path().join("twice");
    let r = w.app.send(dies_twice::s(path_str(&twice))).unwrap();
    assert_eq!(r.get(LONG).unwrap(), 3, "run again after each death");
    let rec = r.record().unwrap().unwrap();
    assert_eq!(
        (rec.state, rec.attempts),
        (TaskState::Success, 3),
        "{rec:?}"
    );
    // Without the option, the first death fails the task.
    let once = dir.path().join("once");
    let plain = w.app.send(dies_once::s(path_str(&once))).unwrap();
    let err = plain.get(LONG).unwrap_err();
    assert_eq!(err.kind, kinds::WORKER_LOST, "{err}");
    let (report, _backend) = w.stop();
    assert_eq!(count(&twice), 3, "three runs, two of them killed");
    assert_eq!(count(&once), 1, "not run again");
    assert_eq!((report.succeeded, report.failed), (1, 1), "{report:?}");
}

fn a_soft_time_limit_reaches_the_child_by_signal(fresh: Fresh) {
    let dir = tempfile::tempdir().unwrap();
    let w = start(fresh);
    let out = dir.path().join("out");
    // Ten seconds of work unless told to stop at 300 ms.
    let r = w.app.send(polite::s(path_str(&out), 10_000)).unwrap();
    let err = r.get(LONG).unwrap_err();
    assert_eq!(err.kind, kinds::SOFT_TIME_LIMIT_EXCEEDED, "{err}");
    assert_eq!(
        std::fs::read_to_string(&out).unwrap(),
        "stopped",
        "the task saw its token"
    );
    assert_eq!(r.state().unwrap(), TaskState::Failure);
    // The child was asked, not killed: it serves the next task.
    assert!(w.app.send(pid::s()).unwrap().get(LONG).is_ok());
    let (report, _backend) = w.stop();
    assert_eq!((report.succeeded, report.failed), (1, 1), "{report:?}");
}

fn alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    unsafe { libc::kill(pid, 0) == 0 }
}

fn revoking_a_running_task_kills_its_child(fresh: Fresh) {
    let dir = tempfile::tempdir().unwrap();
    let w = start(fresh);
    let task_ms = 3000;
    let r = w
        .app
        .send(stubborn::s(path_str(dir.path()), task_ms))
        .unwrap();
    let started = dir.path().join("started");
    let deadline = Instant::now() + LONG;
    while !started.exists() || std::fs::read_to_string(&started).unwrap().is_empty() {
        assert!(Instant::now() < deadline, "never started");
        std::thread::sleep(Duration::from_millis(5));
    }
    let since = Instant::now();
    let child: i32 = std::fs::read_to_string(&started).unwrap().parse().unwrap();
    assert_eq!(r.revoke().unwrap(), Revoked::Running);
    let err = r.get(LONG).unwrap_err();
    assert_eq!(err.kind, kinds::REVOKED, "{err}");
    let rec = r.record().unwrap().unwrap();
    assert_eq!(rec.state, TaskState::Revoked, "{rec:?}");
    // The child is gone (the pool reaps it), long before the task would have ended.
    let deadline = Instant::now() + LONG;
    while alive(child) {
        assert!(Instant::now() < deadline, "child {child} still alive");
        std::thread::sleep(Duration::from_millis(5));
    }
    // The worker goes on, in a new child.
    let next = w.app.send(pid::s()).unwrap().get(LONG).unwrap();
    assert_ne!(next as i32, child);
    // Past the time the task would have taken, it has not finished.
    std::thread::sleep(Duration::from_millis(task_ms + 500).saturating_sub(since.elapsed()));
    assert!(!dir.path().join("finished").exists(), "the task finished");
    let (report, _backend) = w.stop();
    assert_eq!((report.succeeded, report.revoked), (1, 1), "{report:?}");
}

/// A backend's name and how to open a fresh one.
type Backend = (&'static str, fn() -> Fresh);
/// A scenario's name and body.
type Scenario = (&'static str, fn(Fresh));

fn main() {
    lovage_pool::child_main();
    let backends: [Backend; 3] = [
        ("memory", memory_backend),
        ("sqlite", sqlite_backend),
        ("redis", redis_backend),
    ];
    let scenarios: [Scenario; 3] = [
        (
            "reject_on_worker_lost_reruns_a_task_whose_child_died",
            reject_on_worker_lost_reruns_a_task_whose_child_died,
        ),
        (
            "a_soft_time_limit_reaches_the_child_by_signal",
            a_soft_time_limit_reaches_the_child_by_signal,
        ),
        (
            "revoking_a_running_task_kills_its_child",
            revoking_a_running_task_kills_its_child,
        ),
    ];
    let trials = backends
        .iter()
        .flat_map(|&(backend, make)| {
            scenarios.iter().map(move |&(name, scenario)| {
                Trial::test(format!("{backend}::{name}"), move || {
                    scenario(make());
                    Ok(())
                })
            })
        })
        .collect();
    libtest_mimic::run(&Arguments::from_args(), trials).exit();
}
