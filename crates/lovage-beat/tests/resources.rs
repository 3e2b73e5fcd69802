//! A beat entry with `resources` (issue 16, item 5): its ticks are sent as a client call with
//! those resources, so they wait in the resource queue and run only on a worker that has them.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests panic to fail

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use lovage_beat::{run, BeatConfig, Schedule};
use lovage_broker::Timestamp;
use lovage_macros::task;
use lovage_testkit::{ran_on, Fresh, Workers};
use lovage_worker::{PoolKind, WorkerConfig};

/// What the schedule sends.
#[task(crate = lovage_core, name = "beat_tests.tick")]
fn tick() -> u32 {
    1
}

const EVERY_MS: i64 = 100;

fn schedule(resources: &str) -> String {
    format!(
        "[[entry]]\nname = \"gpu-tick\"\ntask = \"beat_tests.tick\"\nevery = \"{EVERY_MS}ms\"\nresources = \"{resources}\"\n"
    )
}

#[test]
fn an_entrys_resources_route_its_ticks_to_the_resource_queue() {
    let s = Schedule::parse(&schedule("gpu=0.5, mem=2")).unwrap();
    let env = s.entries[0].envelope(Timestamp::from_millis(1_000));
    assert_eq!(env.queue, "default[gpu,mem]");
    assert_eq!(
        env.options.resources,
        Some(lovage_core::parse_resources("gpu=0.5,mem=2").unwrap())
    );
    for (bad, says) in [
        ("gpu=0", "more than 0 units"),
        ("gpu=0.0001", "more than 3 decimals"),
        ("g pu", "resource name"),
    ] {
        let e = Schedule::parse(&schedule(bad)).unwrap_err().to_string();
        assert!(
            e.contains("entry \"gpu-tick\"") && e.contains(says),
            "{bad}: {e}"
        );
    }
}

/// A `gpu=0.5` entry's ticks run on the `gpu=1` worker, never on the plain one beside it.
fn ticks_run_only_where_the_resources_are(fresh: &Fresh) {
    let workers = Workers::start(
        &fresh.backend,
        [("gpu", "gpu=1"), ("plain", "")].map(|(name, res)| WorkerConfig {
            name: name.into(),
            concurrency: 2,
            pool: PoolKind::Threads,
            poll: Duration::from_millis(20),
            resources: lovage_core::parse_resources(res).unwrap(),
            ..Default::default()
        }),
    );
    let s = Schedule::parse(&schedule("gpu=0.5")).unwrap();
    let entry = &s.entries[0];
    let started = Timestamp::now().as_millis();
    let stop = AtomicBool::new(false);
    let done = std::thread::scope(|scope| {
        scope.spawn(|| {
            let config = BeatConfig {
                holder: "beat-test".into(),
                lock_ttl: Duration::from_secs(2),
            };
            run(&fresh.backend, &s, &config, &|| stop.load(Ordering::SeqCst)).unwrap();
        });
        let deadline = Instant::now() + Duration::from_secs(60);
        let done = loop {
            let now = Timestamp::now().as_millis();
            let done: Vec<_> = (started / EVERY_MS..=now / EVERY_MS)
                .map(|k| entry.tick_id(Timestamp::from_millis(k * EVERY_MS)))
                .filter(|id| {
                    fresh
                        .backend
                        .results()
                        .get(*id)
                        .unwrap()
                        .is_some_and(|r| r.state.is_final())
                })
                .collect();
            if done.len() >= 3 || Instant::now() > deadline {
                break done;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        stop.store(true, Ordering::SeqCst);
        done
    });
    assert!(done.len() >= 3, "only {} ticks ran", done.len());
    for id in done {
        assert_eq!(
            ran_on(&fresh.backend, id),
            "gpu",
            "a gpu tick ran without gpu"
        );
    }
    workers.stop();
}

#[test]
fn memory_ticks_run_only_where_the_resources_are() {
    ticks_run_only_where_the_resources_are(&Fresh::memory());
}

#[test]
fn sqlite_ticks_run_only_where_the_resources_are() {
    ticks_run_only_where_the_resources_are(&Fresh::sqlite());
}

#[test]
fn redis_ticks_run_only_where_the_resources_are() {
    ticks_run_only_where_the_resources_are(&Fresh::redis());
}
