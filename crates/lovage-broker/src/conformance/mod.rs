//! The conformance suite: one contract, written once, that every backend must pass (River's
//! `riverdrivertest`, Oban's engine contract). Behind the `conformance` feature.
//!
//! # Adding a backend: one line
//!
//! Give the suite a factory that opens a fresh, isolated [`Backend`] per test (a new file, a
//! new key prefix, a new schema...) wrapped in a [`Fixture`] that cleans it up, then either add
//! a line to `crates/lovage-broker/tests/conformance.rs`:
//!
//! ```ignore
//! conformance::trials("rabbitmq", my_rabbitmq_fixture),
//! ```
//!
//! or give the backend a test file of its own (with `harness = false` under its `[[test]]`):
//!
//! ```ignore
//! fn main() {
//!     lovage_broker::conformance::exercise("rabbitmq", my_rabbitmq_fixture);
//! }
//! ```
//!
//! Each test then shows as one line, `BACKEND::TEST` (`cargo test -p lovage-broker --test
//! conformance -- redis::` runs one backend, `-- --exact sqlite::extend_keeps_a_lease` one
//! test); `cargo nextest` lists them the same way. What only one backend promises (a file
//! format, a key layout) stays in that backend's own test file.
//!
//! # Writing a test
//!
//! Tests are declared once, inside a `conformance_tests!` block of one of this module's
//! files (the task's life in `broker`, tasks queued for a worker in `affinity`, outcomes in `results`, results two clients share in `holders`, workflows in `workflow`, locks,
//! rate limits and worker presence in `coordination`, the operators' traits in `ops`, shared dicts and lists in `shared`); the block makes both the function and
//! the module's entry in the list, so no test is written without being run. A test takes the
//! [`Fixture`] by value and drops it (cleaning up) when it returns or panics. `cargo fmt` does
//! not look inside a macro's braces; to format a block, rename `conformance_tests! {` to
//! `mod conformance_tests_fmt {`, run `rustfmt --edition 2021` on the file, and rename it back.
//!
//! Timing: tests wait for things that must happen (with generous upper bounds) and check things
//! that must not happen before a time; none asserts that anything is fast. A test that says a
//! waiter *wakes* gives it a long timeout ([`LONG`]) and checks it returned within [`WAKE`] of
//! the event, far below that timeout: a waiter that only re-reads at its timeout fails.

// Test code: it panics to fail.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::any::Any;
use std::sync::Arc;
use std::time::{Duration, Instant};

use libtest_mimic::{Arguments, Trial};
use lovage_core::{kinds, Codec, Signature, TaskError, TaskId, TaskState};

use crate::{Backend, Broker, Delivery, Envelope, ResultRecord, Timestamp};

/// Declares conformance tests once: each `fn name(f: Fixture) { ... }` becomes a public
/// function, and the block's `TESTS` lists them all by name.
macro_rules! conformance_tests {
    ($($(#[$meta:meta])* fn $name:ident($f:ident: Fixture) $body:block)*) => {
        $(
            $(#[$meta])*
            pub fn $name($f: Fixture) $body
        )*

        /// This file's tests, by name, in order.
        pub const TESTS: &[(&str, fn(Fixture))] = &[$((stringify!($name), $name as fn(Fixture))),*];
    };
}

pub mod affinity;
pub mod broker;
pub mod coordination;
pub mod fixtures;
pub mod holders;
pub mod ops;
pub mod results;
pub mod shared;
pub mod workflow;

/// A backend for one test, what keeps its storage alive, what cleans it up afterwards, and
/// how it is expected to differ where the contract lets backends differ.
pub struct Fixture {
    /// The backend under test, fresh and isolated from every other test's.
    pub backend: Backend,
    /// True for a backend whose records expire by themselves (Redis key expiry), so
    /// [`crate::ResultStore::purge_expired`] has nothing to delete and returns 0; false for one
    /// whose `purge_expired` deletes the expired records and counts them.
    pub expires_by_itself: bool,
    /// The URL the backend was opened from (unredacted), so a test can open the same storage
    /// again with other query parameters.
    url: Option<String>,
    cleanup: Option<Box<dyn FnOnce()>>,
    // Dropped after `backend` (fields drop in order): a temporary directory, a server.
    _keep: Vec<Box<dyn Any>>,
}

impl Fixture {
    /// A fixture for `backend`, whose expired records `purge_expired` deletes.
    pub fn new(backend: Backend) -> Self {
        Fixture {
            backend,
            expires_by_itself: false,
            url: None,
            cleanup: None,
            _keep: Vec::new(),
        }
    }

    /// Keeps `value` alive as long as the backend (a temporary directory, say), dropping it
    /// after the backend.
    pub fn keep(mut self, value: impl Any) -> Self {
        self._keep.push(Box::new(value));
        self
    }

    /// Runs `cleanup` when the test ends, passed or failed (deleting a key prefix, say).
    pub fn on_drop(mut self, cleanup: impl FnOnce() + 'static) -> Self {
        self.cleanup = Some(Box::new(cleanup));
        self
    }

    /// Records the URL `connect` opened the backend from, so tests can open the same storage
    /// with query parameters of their own ([`Fixture::reopen`]).
    pub fn reopens_at(mut self, url: impl Into<String>) -> Self {
        self.url = Some(url.into());
        self
    }

    /// The same storage opened again through [`connect`](crate::connect), with `param`
    /// (`key=value`) added to its URL's query. Panics for a fixture without
    /// [`Fixture::reopens_at`]: the tests that call it check options every backend takes.
    pub fn reopen(&self, param: &str) -> Backend {
        let url = self
            .url
            .as_deref()
            .expect("this test opens the backend again: give its fixture `reopens_at(url)`");
        let (base, fragment) = match url.split_once('#') {
            Some((b, f)) => (b, format!("#{f}")),
            None => (url, String::new()),
        };
        let sep = if base.contains('?') { '&' } else { '?' };
        crate::connect(&format!("{base}{sep}{param}{fragment}")).unwrap()
    }

    /// Marks a backend whose records expire by themselves: `purge_expired` returns 0.
    pub fn expires_by_itself(mut self) -> Self {
        self.expires_by_itself = true;
        self
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        if let Some(cleanup) = self.cleanup.take() {
            cleanup();
        }
    }
}

/// One conformance test: it takes a fresh fixture and panics if the backend breaks the
/// contract.
pub type Test = fn(Fixture);

/// Every test of the suite, by name.
pub fn tests() -> impl Iterator<Item = (&'static str, Test)> {
    [
        broker::TESTS,
        affinity::TESTS,
        results::TESTS,
        holders::TESTS,
        workflow::TESTS,
        coordination::TESTS,
        ops::TESTS,
        shared::TESTS,
    ]
    .into_iter()
    .flatten()
    .copied()
}

/// The whole suite for one backend, as libtest-mimic trials named `BACKEND::TEST`; `factory`
/// is called once per test, on the thread that runs it.
pub fn trials<F>(backend: &str, factory: F) -> Vec<Trial>
where
    F: Fn() -> Fixture + Send + Sync + 'static,
{
    let factory = Arc::new(factory);
    tests()
        .map(|(name, test)| {
            let factory = factory.clone();
            Trial::test(format!("{backend}::{name}"), move || {
                test(factory());
                Ok(())
            })
        })
        .collect()
}

/// Runs `trials` as a test binary's `main` (`harness = false`), taking the command line's
/// filters and options, and exits with the outcome.
pub fn run(trials: impl IntoIterator<Item = Trial>) -> ! {
    let args = Arguments::from_args();
    libtest_mimic::run(&args, trials.into_iter().collect()).exit()
}

/// Runs the whole suite against one backend as a test binary's `main`: the one line a new
/// backend's test file needs.
pub fn exercise<F>(backend: &str, factory: F) -> !
where
    F: Fn() -> Fixture + Send + Sync + 'static,
{
    run(trials(backend, factory))
}

/// How long a test waits for what must happen: a timeout no correct backend comes near.
pub const LONG: Duration = Duration::from_secs(30);

/// How soon after an event a waiter must have woken: generous, and far below [`LONG`].
pub const WAKE: Duration = Duration::from_secs(5);

/// A delay, lease or ETA that a test must still be inside when its next call lands. CI's
/// shared Redis has stalled past 300 ms beside tests that move 64 MiB values through it, so a
/// test that checks "not yet" uses this much, not less.
pub const SHORT: Duration = Duration::from_millis(1500);

/// The lease tests take when they do not test leases.
pub const LEASE: Duration = Duration::from_secs(60);

/// `[name]`, the queue list of a reserve.
pub fn q(name: &str) -> Vec<String> {
    vec![name.to_owned()]
}

/// A task for `queue` at `priority`, with a fresh id.
pub fn env(queue: &str, priority: u8) -> Envelope {
    let mut sig = Signature::new("conformance.task", &[1], Codec::Json).unwrap();
    sig.options.queue = Some(queue.into());
    sig.options.priority = Some(priority);
    Envelope::from_signature(sig)
}

/// A worker's record, beating now.
pub fn worker(id: &str) -> crate::WorkerInfo {
    let now = Timestamp::now();
    crate::WorkerInfo {
        id: id.into(),
        host: "host".into(),
        pid: 1,
        queues: vec!["a".into()],
        pool: "threads x2".into(),
        started: now,
        heartbeat: now,
        tasks_done: 0,
        active: 0,
        registered: Vec::new(),
        limits: Default::default(),
        // Kept through every backend's heartbeat record, fractions exactly.
        resources: lovage_core::parse_resources("gpu=2,tpu=0.125").unwrap_or_default(),
    }
}

/// Reserves up to `max` ready tasks of `queue` without waiting.
pub fn reserve_all(b: &dyn Broker, queue: &str, max: usize) -> Vec<Delivery> {
    b.reserve(&q(queue), max, LEASE, Duration::ZERO).unwrap()
}

/// After tasks `bad` of `sent` (all in the `default` queue) were damaged straight in the
/// backend's storage: a reserve delivers the others, in order, and each damaged one is in the
/// dead letters and has a FAILURE record, both of kind `CorruptMessage`. Backends damage their
/// own storage (tests/sqlite.rs, tests/redis.rs) and share this check.
pub fn check_bad_messages_set_aside(b: &dyn crate::Driver, sent: &[Envelope], bad: &[usize]) {
    let got = b
        .reserve(&q("default"), sent.len() + 1, LEASE, Duration::ZERO)
        .unwrap();
    let good: Vec<TaskId> = (0..sent.len())
        .filter(|i| !bad.contains(i))
        .map(|i| sent[i].id)
        .collect();
    let ids: Vec<TaskId> = got.iter().map(|d| d.envelope.id).collect();
    assert_eq!(ids, good, "the good tasks are delivered");
    let damaged: Vec<TaskId> = bad.iter().map(|&i| sent[i].id).collect();
    let dead = b.dead_letters(sent.len()).unwrap();
    assert_eq!(dead.len(), bad.len(), "{dead:?}");
    for d in &dead {
        assert_eq!(d.error.kind, kinds::CORRUPT_MESSAGE);
        assert!(damaged.contains(&d.envelope.id), "{d:?}");
    }
    for id in &damaged {
        let rec = b.get(*id).unwrap().expect("a FAILURE record");
        assert_eq!(rec.state, TaskState::Failure);
        assert_eq!(rec.error.unwrap().kind, kinds::CORRUPT_MESSAGE);
    }
    // Each is told of once, as a `task-rejected` event with its id and the decode error.
    let rejected = b.take_rejected();
    let mut told: Vec<Option<TaskId>> = rejected.iter().map(|e| e.task_id).collect();
    let mut want: Vec<Option<TaskId>> = damaged.iter().copied().map(Some).collect();
    told.sort();
    want.sort();
    assert_eq!(told, want, "{rejected:?}");
    for e in &rejected {
        assert_eq!(e.kind, crate::ops::EventKind::TaskRejected);
        let error = e.error.as_deref().unwrap_or_default();
        assert!(error.starts_with(kinds::CORRUPT_MESSAGE), "{e:?}");
    }
    assert!(
        reserve_all(b, "default", 10).is_empty(),
        "nothing is left to trip the next reserve"
    );
    assert!(b.take_rejected().is_empty(), "told of once");
}

/// Reserves one task of `queue` that becomes ready at `due` (an ETA, a delay, a lease running
/// out), with a long wait; asserts it came, and within [`WAKE`] of `due` (a reserve that only
/// looks again at the end of its wait fails).
pub fn reserve_when_due(b: &dyn Broker, queue: &str, due: Instant) -> Vec<Delivery> {
    let got = b.reserve(&q(queue), 1, LEASE, LONG).unwrap();
    let late = Instant::now().saturating_duration_since(due);
    assert_eq!(got.len(), 1, "queue {queue}: nothing came in {LONG:?}");
    assert!(
        late < WAKE,
        "queue {queue}: the task came {late:?} after it was due"
    );
    got
}

/// A record of `id` in `state`: value `42` on success, an error on failure, no expiry.
pub fn record(id: TaskId, state: TaskState) -> ResultRecord {
    ResultRecord {
        id,
        task: "conformance.task".into(),
        state,
        value: (state == TaskState::Success).then(|| b"42".to_vec()),
        codec: Codec::Json,
        error: (state == TaskState::Failure).then(|| TaskError::new("Boom", "it broke")),
        attempts: 1,
        worker: Some("w1".into()),
        started: None,
        updated: Timestamp::now(),
        expires: None,
    }
}
