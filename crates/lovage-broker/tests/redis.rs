//! What only the Redis backend promises, beside the shared contract (tests/conformance.rs): it
//! refuses a key prefix written in another layout, and wakes waiters after the server lost its
//! scripts. Each test works under a key prefix of its own on `REDIS_URL` (default
//! 127.0.0.1:6379).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr,
    clippy::undocumented_unsafe_blocks
)] // tests panic to fail and print what they saw

use std::time::{Duration, Instant};

use lovage_broker::conformance::{fixtures, record, LONG, WAKE};
use lovage_broker::connect;
use lovage_core::{TaskId, TaskState};

/// A prefix written by another Redis key layout is refused, not silently misread.
#[test]
fn redis_refuses_a_prefix_in_another_layout() {
    let base = fixtures::redis_url();
    let client = redis::Client::open(base.as_str()).unwrap();
    let mut c = client.get_connection().unwrap();
    let (old, previous, newer) = (
        format!("lovage-test-{}", TaskId::new()),
        format!("lovage-test-{}", TaskId::new()),
        format!("lovage-test-{}", TaskId::new()),
    );
    // Layout 2 kept a key per result, which this layout would not find.
    let _: () = redis::cmd("SET")
        .arg(format!("{previous}:layout"))
        .arg("2")
        .query(&mut c)
        .unwrap();
    let err = connect(&format!("{base}?prefix={previous}")).expect_err("refused");
    assert!(err.to_string().contains("layout \"2\""), "{err}");
    let _: () = redis::cmd("SET")
        .arg(format!("{old}:seq"))
        .arg(7)
        .query(&mut c)
        .unwrap();
    let _: () = redis::cmd("SET")
        .arg(format!("{newer}:layout"))
        .arg("9")
        .query(&mut c)
        .unwrap();
    let err = connect(&format!("{base}?prefix={old}")).expect_err("refused");
    assert!(err.to_string().contains("layout \"1\""), "{err}");
    let err = connect(&format!("{base}?prefix={newer}")).expect_err("refused");
    assert!(err.to_string().contains("layout \"9\""), "{err}");
    let _: () = redis::cmd("DEL")
        .arg(format!("{old}:seq"))
        .arg(format!("{previous}:layout"))
        .arg(format!("{newer}:layout"))
        .query(&mut c)
        .unwrap();
}

/// Results are stored and their waiters woken in one round trip with the script's hash; a
/// server that lost its scripts (a restart, `SCRIPT FLUSH`) still wakes the waiter.
#[test]
fn redis_wakes_a_waiter_after_losing_its_scripts() {
    let f = fixtures::redis();
    let base = fixtures::redis_url();
    let r = f.backend.results();
    let id = TaskId::new();
    // Loads the script once, so the pipelined EVALSHA is what meets the flushed cache.
    r.store(&[record(TaskId::new(), TaskState::Success)])
        .unwrap();
    let client = redis::Client::open(base.as_str()).unwrap();
    let _: () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query(&mut client.get_connection().unwrap())
        .unwrap();
    let writer = {
        let b = f.backend.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            let wrote = Instant::now();
            b.results()
                .store(&[record(id, TaskState::Success)])
                .unwrap();
            wrote
        })
    };
    let done = r.wait(id, LONG).unwrap().unwrap();
    let returned = Instant::now();
    let wrote = writer.join().unwrap();
    assert_eq!(done.state, TaskState::Success);
    // A waiter not woken would find the result only at its re-read, 30 seconds on.
    assert!(
        returned.duration_since(wrote) < WAKE,
        "the waiter was not woken: it returned {:?} after the write",
        returned.duration_since(wrote)
    );
}
