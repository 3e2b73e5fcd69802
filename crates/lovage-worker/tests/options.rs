//! A task's registered options (`#[task(...)]`) hold for a message that carries none, as a task
//! sent from the CLI or another language does: the worker merges them once, at reserve.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests panic to fail

mod common;

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use lovage_broker::Envelope;
use lovage_core::{Codec, Signature, TaskOptions, TaskState};
use lovage_macros::task;
use lovage_worker::{Worker, WorkerConfig};

static QUIET_RUNS: AtomicU32 = AtomicU32::new(0);

#[task(crate = lovage_core, ignore_result = true)]
fn quiet(x: i64) -> i64 {
    QUIET_RUNS.fetch_add(1, Ordering::SeqCst);
    x
}

#[task(crate = lovage_core)]
fn loud(x: i64) -> i64 {
    x
}

#[test]
fn ignore_result_from_the_task_holds_for_a_bare_message() {
    let fresh = common::sqlite_backend();
    let app = fresh.app();
    // What `lovage submit` sends: a name and arguments, no options.
    let bare = |task: &str| {
        Envelope::from_signature(Signature {
            task: task.to_owned(),
            args: b"[7]".to_vec(),
            codec: Codec::Json,
            options: TaskOptions::default(),
        })
    };
    let (quiet_msg, loud_msg) = (bare(quiet::NAME), bare(loud::NAME));
    assert_eq!(
        quiet_msg.options.ignore_result, None,
        "the message carries no option"
    );
    fresh
        .backend
        .broker()
        .enqueue(&[quiet_msg.clone(), loud_msg.clone()])
        .unwrap();
    let worker = Worker::new(
        fresh.backend.clone(),
        WorkerConfig {
            concurrency: 1,
            poll: Duration::from_millis(50),
            ..WorkerConfig::default()
        },
    )
    .unwrap();
    let stop = worker.shutdown_handle();
    let running = std::thread::spawn(move || worker.run().expect("start the worker threads"));
    let loud_done = app
        .wait_record(loud_msg.id, Duration::from_secs(30))
        .unwrap();
    assert_eq!(loud_done.map(|r| r.state), Some(TaskState::Success));
    // The broker drains once both ran; then the quiet task must have run and stored nothing.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !app
        .queues()
        .unwrap()
        .iter()
        .all(|q| q.ready + q.reserved == 0)
    {
        assert!(Instant::now() < deadline, "the broker did not drain");
        std::thread::sleep(Duration::from_millis(20));
    }
    stop.graceful();
    let report = running.join().unwrap();
    assert_eq!(report.succeeded, 2);
    assert_eq!(
        QUIET_RUNS.load(Ordering::SeqCst),
        1,
        "the quiet task ran once"
    );
    assert_eq!(
        app.record(quiet_msg.id).unwrap(),
        None,
        "#[task(ignore_result)] must hold although the message did not say so"
    );
}
