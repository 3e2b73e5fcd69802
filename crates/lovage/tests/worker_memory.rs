//! Tasks waiting for their ETA live in the broker, not in a worker: 100,000 tasks with a
//! countdown of an hour leave the worker's memory flat and nothing is delivered early.
//! (Memory is measured, not time; the bound is generous.)

mod common;

use common::{Killed, RedisPrefix};

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use lovage::{App, Codec, Signature};

const BIN: &str = env!("CARGO_BIN_EXE_lovage");

/// Resident memory of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/PID/status")
}

fn eta_tasks_stay_in_the_broker(url: &str) {
    let app = App::connect(url).unwrap();
    let worker = Killed(
        Command::new(BIN)
            .args(["worker", "--broker", url, "--concurrency", "2"])
            .env("LOVAGE_LOG", "error")
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while app
        .backend()
        .presence()
        .workers(Duration::from_secs(30))
        .unwrap()
        .is_empty()
    {
        assert!(Instant::now() < deadline, "worker never registered");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    let before = rss_kib(worker.0.id());
    for _ in 0..100 {
        let batch = (0..1000).map(|_| {
            let mut s = Signature::new("lovage.noop", &[0u8; 0], Codec::Json).unwrap();
            s.options.countdown = Some(Duration::from_secs(3600));
            s
        });
        app.send_batch(batch).unwrap();
    }
    // Give the worker several reserve rounds to (wrongly) pick anything up.
    std::thread::sleep(Duration::from_secs(2));
    let after = rss_kib(worker.0.id());
    let stats = app.backend().admin().stats().unwrap();
    assert_eq!(
        (stats[0].scheduled, stats[0].ready, stats[0].reserved),
        (100_000, 0, 0),
        "{stats:?}"
    );
    let w = &app
        .backend()
        .presence()
        .workers(Duration::from_secs(30))
        .unwrap()[0];
    assert_eq!((w.tasks_done, w.active), (0, 0), "nothing ran early");
    assert!(
        after < before + 16 * 1024,
        "worker memory grew from {before} KiB to {after} KiB with 100,000 ETA tasks waiting"
    );
    eprintln!(
        "worker RSS: {before} KiB idle, {after} KiB with 100,000 tasks waiting for their ETA"
    );
}

#[test]
fn eta_tasks_stay_in_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    eta_tasks_stay_in_the_broker(&format!("sqlite://{}", dir.path().join("eta.db").display()));
}

#[test]
fn eta_tasks_stay_in_redis() {
    let redis = RedisPrefix::new();
    eta_tasks_stay_in_the_broker(&redis.url());
}
