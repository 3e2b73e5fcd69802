//! One suite, written once, that every backend must pass (River's driver tests, Oban's engine
//! contract). Each backend instantiates it with `conformance!(name, fixture)`; every test gets
//! its own namespace (a fresh memory backend, a fresh SQLite file, later a fresh Redis prefix),
//! so the suite runs in parallel.
//!
//! Timing: tests wait for things that must happen (with generous upper bounds) and check things
//! that must not happen before a time; none asserts that anything is fast.

use std::collections::HashSet;

use std::time::Duration;

use lovage_broker::{
    connect, App, Backend, Broker, Delivery, Envelope, JoinEntry, Lease, ResultRecord, ResultStore,
    Revoked, Timestamp, WorkerInfo,
};
use lovage_core::{kinds, Codec, Signature, TaskError, TaskId, TaskState};

/// A backend for one test, and whatever keeps its storage alive or cleans it up.
pub struct Fixture {
    pub backend: Backend,
    _keep: Option<tempfile::TempDir>,
    cleanup: Option<Box<dyn FnOnce()>>,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        if let Some(f) = self.cleanup.take() {
            f();
        }
    }
}

fn memory() -> Fixture {
    Fixture {
        backend: connect(&format!("memory://conformance-{}", TaskId::new())).unwrap(),
        _keep: None,
        cleanup: None,
    }
}

fn sqlite() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("broker.db").display());
    Fixture {
        backend: connect(&url).unwrap(),
        _keep: Some(dir),
        cleanup: None,
    }
}

/// A Redis backend under a prefix of its own (`REDIS_URL`, default 127.0.0.1:6379), whose keys
/// are deleted afterwards.
#[cfg(feature = "redis")]
fn redis() -> Fixture {
    let base = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/0".into());
    let prefix = format!("lovage-test-{}", TaskId::new());
    let backend = connect(&format!("{base}?prefix={prefix}"))
        .unwrap_or_else(|e| panic!("Redis at {base}: {e} (set REDIS_URL)"));
    let cleanup = move || {
        let client = redis::Client::open(base.as_str()).unwrap();
        let mut c = client.get_connection().unwrap();
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{prefix}:*"))
            .query(&mut c)
            .unwrap_or_default();
        if !keys.is_empty() {
            let _: () = redis::cmd("DEL").arg(keys).query(&mut c).unwrap();
        }
    };
    Fixture {
        backend,
        _keep: None,
        cleanup: Some(Box::new(cleanup)),
    }
}

const LONG: Duration = Duration::from_secs(30);
const LEASE: Duration = Duration::from_secs(60);

fn q(name: &str) -> Vec<String> {
    vec![name.to_owned()]
}

fn env(queue: &str, priority: u8) -> Envelope {
    let mut sig = Signature::new("conformance.task", &[1], Codec::Json).unwrap();
    sig.options.queue = Some(queue.into());
    sig.options.priority = Some(priority);
    Envelope::from_signature(sig)
}

fn reserve_all(b: &dyn Broker, queue: &str, max: usize) -> Vec<Delivery> {
    b.reserve(&q(queue), max, LEASE, Duration::ZERO).unwrap()
}

fn record(id: TaskId, state: TaskState) -> ResultRecord {
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

pub fn enqueue_reserve_ack(f: Fixture) {
    let b = f.backend.driver();
    let sent: Vec<Envelope> = (0..3).map(|_| env("a", 0)).collect();
    b.enqueue(&sent).unwrap();
    let got = reserve_all(b, "a", 10);
    assert_eq!(got.len(), 3);
    for (d, e) in got.iter().zip(&sent) {
        assert_eq!(d.envelope.id, e.id, "FIFO within a priority");
        assert_eq!(d.envelope.args, e.args);
        assert_eq!(d.envelope.task, e.task);
        assert_eq!((d.envelope.attempts, d.lease.delivery), (1, 1));
    }
    assert!(
        reserve_all(b, "a", 10).is_empty(),
        "reserved tasks are not delivered twice"
    );
    let stats = b.stats().unwrap();
    assert_eq!(
        (stats[0].queue.as_str(), stats[0].reserved, stats[0].ready),
        ("a", 3, 0)
    );
    let leases: Vec<Lease> = got.iter().map(|d| d.lease).collect();
    b.complete(&leases).unwrap();
    assert!(b.stats().unwrap().is_empty());
}

pub fn priority_first_then_fifo(f: Fixture) {
    let b = f.backend.driver();
    let sent: Vec<Envelope> = [0u8, 5, 9, 5, 0].iter().map(|&p| env("p", p)).collect();
    b.enqueue(&sent).unwrap();
    let order: Vec<TaskId> = reserve_all(b, "p", 10)
        .iter()
        .map(|d| d.envelope.id)
        .collect();
    let expect = vec![sent[2].id, sent[1].id, sent[3].id, sent[0].id, sent[4].id];
    assert_eq!(order, expect);
    // Across several queues too, one at a time.
    let more: Vec<Envelope> = vec![env("x", 1), env("y", 7), env("x", 3)];
    b.enqueue(&more).unwrap();
    let queues = vec!["x".to_owned(), "y".to_owned()];
    let one_by_one: Vec<TaskId> = (0..3)
        .map(|_| {
            b.reserve(&queues, 1, LEASE, Duration::ZERO).unwrap()[0]
                .envelope
                .id
        })
        .collect();
    assert_eq!(one_by_one, vec![more[1].id, more[2].id, more[0].id]);
}

pub fn queues_are_separate(f: Fixture) {
    let b = f.backend.driver();
    b.enqueue(&[env("one", 0), env("two", 0), env("two", 0)])
        .unwrap();
    assert_eq!(reserve_all(b, "two", 10).len(), 2);
    assert_eq!(reserve_all(b, "one", 10).len(), 1);
    assert!(reserve_all(b, "three", 10).is_empty());
}

/// A batch far bigger than any backend's send chunk, over three queues, with priorities and
/// ETAs mixed in, lands whole: every task in its queue, in priority then FIFO order, and the
/// ETA ones scheduled.
pub fn a_big_mixed_batch_lands_whole(f: Fixture) {
    let b = f.backend.driver();
    let later = Timestamp::now() + Duration::from_secs(3600);
    let sent: Vec<Envelope> = (0..1_100)
        .map(|i| {
            let mut e = env(["big-a", "big-b", "big-c"][i % 3], (i % 4) as u8);
            if i % 7 == 0 {
                e.eta = Some(later);
            }
            e
        })
        .collect();
    b.enqueue(&sent).unwrap();
    for queue in ["big-a", "big-b", "big-c"] {
        let mut expected: Vec<&Envelope> = sent
            .iter()
            .filter(|e| e.queue == queue && e.eta.is_none())
            .collect();
        // Higher priority first; the sort is stable, so FIFO within a priority.
        expected.sort_by_key(|e| std::cmp::Reverse(e.priority));
        let got = reserve_all(b, queue, 1_000);
        let got_ids: Vec<TaskId> = got.iter().map(|d| d.envelope.id).collect();
        let expected_ids: Vec<TaskId> = expected.iter().map(|e| e.id).collect();
        assert_eq!(got_ids, expected_ids, "queue {queue}");
        assert!(got.iter().all(|d| d.envelope.queue == queue));
        let scheduled = sent
            .iter()
            .filter(|e| e.queue == queue && e.eta.is_some())
            .count() as u64;
        let stats = b.stats().unwrap();
        let s = stats.iter().find(|s| s.queue == queue).unwrap();
        assert_eq!((s.ready, s.scheduled), (0, scheduled), "queue {queue}");
    }
}

/// A queue's name is any text: spaces and digits in it must not confuse a backend that writes
/// it beside other fields (the Redis task value).
pub fn queue_names_may_hold_spaces_and_digits(f: Fixture) {
    let b = f.backend.driver();
    let queue = "a 12 q";
    let e = env(queue, 3);
    b.enqueue(std::slice::from_ref(&e)).unwrap();
    let first = reserve_all(b, queue, 1);
    assert_eq!(first[0].envelope.queue, queue);
    b.retry(&first[0].lease, Duration::ZERO).unwrap();
    let again = reserve_all(b, queue, 1);
    assert_eq!(
        (again[0].envelope.id, again[0].lease.delivery),
        (e.id, 2),
        "back in its queue as the next delivery"
    );
    let stats = b.stats().unwrap();
    assert_eq!(
        stats
            .iter()
            .map(|s| (s.queue.as_str(), s.reserved))
            .collect::<Vec<_>>(),
        vec![(queue, 1)]
    );
    b.complete(&[again[0].lease]).unwrap();
    assert!(reserve_all(b, queue, 1).is_empty());
}

pub fn eta_tasks_wait_in_the_broker(f: Fixture) {
    let b = f.backend.driver();
    let mut e = env("eta", 0);
    let eta = Timestamp::now() + Duration::from_millis(300);
    e.eta = Some(eta);
    b.enqueue(std::slice::from_ref(&e)).unwrap();
    assert!(reserve_all(b, "eta", 1).is_empty(), "not before its ETA");
    assert_eq!(b.stats().unwrap()[0].scheduled, 1);
    let got = b.reserve(&q("eta"), 1, LEASE, LONG).unwrap();
    assert_eq!(got[0].envelope.id, e.id);
    assert!(Timestamp::now() >= eta, "delivered before its ETA");
}

pub fn an_expired_lease_delivers_again(f: Fixture) {
    let b = f.backend.driver();
    b.enqueue(&[env("lease", 0)]).unwrap();
    let first = b
        .reserve(&q("lease"), 1, Duration::from_millis(200), Duration::ZERO)
        .unwrap();
    let again = b.reserve(&q("lease"), 1, LEASE, LONG).unwrap();
    assert_eq!(again.len(), 1, "the task came back after its lease ran out");
    assert_eq!(again[0].envelope.id, first[0].envelope.id);
    assert_eq!(again[0].lease.delivery, 2);
    // The first worker's late ack must not remove the second delivery.
    b.complete(&[first[0].lease]).unwrap();
    assert_eq!(b.stats().unwrap()[0].reserved, 1);
    assert_eq!(
        b.renew(&[first[0].lease], LEASE).unwrap(),
        vec![first[0].lease]
    );
    b.complete(&[again[0].lease]).unwrap();
    assert!(b.stats().unwrap().is_empty());
}

pub fn extend_keeps_a_lease(f: Fixture) {
    let b = f.backend.driver();
    b.enqueue(&[env("ext", 0)]).unwrap();
    let d = b
        .reserve(&q("ext"), 1, Duration::from_millis(300), Duration::ZERO)
        .unwrap();
    assert!(b.renew(&[d[0].lease], LEASE).unwrap().is_empty());
    let none = b
        .reserve(&q("ext"), 1, LEASE, Duration::from_millis(600))
        .unwrap();
    assert!(none.is_empty(), "an extended lease is still held");
}

pub fn nack_returns_a_task_after_a_delay(f: Fixture) {
    let b = f.backend.driver();
    b.enqueue(&[env("nack", 0)]).unwrap();
    let d = reserve_all(b, "nack", 1);
    let before = Timestamp::now();
    b.retry(&d[0].lease, Duration::from_millis(300)).unwrap();
    assert!(reserve_all(b, "nack", 1).is_empty(), "not before its delay");
    let again = b.reserve(&q("nack"), 1, LEASE, LONG).unwrap();
    assert_eq!(again[0].envelope.id, d[0].envelope.id);
    assert_eq!(again[0].envelope.attempts, 2);
    assert!(Timestamp::now() - before >= Duration::from_millis(290));
    b.retry(&again[0].lease, Duration::ZERO).unwrap();
    assert_eq!(
        reserve_all(b, "nack", 1).len(),
        1,
        "a zero delay is ready at once"
    );
}

pub fn revoke_pending_running_and_unknown(f: Fixture) {
    let b = f.backend.driver();
    let (waiting, running) = (env("rv", 0), env("rv", 0));
    b.enqueue(std::slice::from_ref(&running)).unwrap();
    let held = reserve_all(b, "rv", 1);
    b.enqueue(std::slice::from_ref(&waiting)).unwrap();
    assert_eq!(b.revoke(waiting.id).unwrap(), Revoked::Pending);
    assert!(
        reserve_all(b, "rv", 10).is_empty(),
        "a revoked task is not delivered"
    );
    assert_eq!(b.revoke(running.id).unwrap(), Revoked::Running);
    assert_eq!(
        b.revoked(&[running.id, waiting.id, TaskId::new()])
            .unwrap()
            .len(),
        2
    );
    assert_eq!(
        b.renew(&[held[0].lease], LEASE).unwrap(),
        vec![held[0].lease],
        "the worker learns it lost the task"
    );
    let later = env("rv", 0);
    assert_eq!(b.revoke(later.id).unwrap(), Revoked::NotFound);
    b.enqueue(&[later]).unwrap();
    assert!(
        reserve_all(b, "rv", 10).is_empty(),
        "revoked before it was sent: never delivered"
    );
}

pub fn purge_removes_waiting_tasks_only(f: Fixture) {
    let b = f.backend.driver();
    b.enqueue(&[env("pg", 0)]).unwrap();
    let held = reserve_all(b, "pg", 1);
    let mut later = env("pg", 0);
    later.eta = Some(Timestamp::now() + Duration::from_secs(3600));
    b.enqueue(&[env("pg", 0), env("pg", 3), later, env("other", 0)])
        .unwrap();
    assert_eq!(b.purge("pg").unwrap(), 3);
    let stats = b.stats().unwrap();
    let pg = stats.iter().find(|s| s.queue == "pg").unwrap();
    assert_eq!((pg.ready, pg.scheduled, pg.reserved), (0, 0, 1));
    b.complete(&[held[0].lease]).unwrap();
    assert_eq!(b.stats().unwrap().len(), 1, "other queues untouched");
}

pub fn dead_letters_keep_the_last_failure(f: Fixture) {
    let b = f.backend.driver();
    let e = env("dl", 0);
    b.enqueue(std::slice::from_ref(&e)).unwrap();
    let d = reserve_all(b, "dl", 1);
    let err = TaskError::new("ValueError", "bad input").with_cause("deeper");
    b.discard(&d[0].lease, &d[0].envelope, &err).unwrap();
    assert!(b.stats().unwrap().is_empty());
    let dead = b.dead_letters(10).unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!((dead[0].envelope.id, &dead[0].error), (e.id, &err));
}

pub fn a_stale_lease_cannot_dead_letter_a_live_task(f: Fixture) {
    let b = f.backend.driver();
    b.enqueue(&[env("stale", 0)]).unwrap();
    let first = b
        .reserve(&q("stale"), 1, Duration::from_millis(200), Duration::ZERO)
        .unwrap();
    let again = b.reserve(&q("stale"), 1, LEASE, LONG).unwrap();
    assert_eq!(again.len(), 1);
    let err = TaskError::new("Late", "from the first worker");
    b.discard(&first[0].lease, &first[0].envelope, &err)
        .unwrap();
    assert!(
        b.dead_letters(10).unwrap().is_empty(),
        "the task is alive elsewhere"
    );
    assert_eq!(b.stats().unwrap()[0].reserved, 1);
}

pub fn a_queue_named_twice_delivers_each_task_once(f: Fixture) {
    let b = f.backend.driver();
    b.enqueue(&[env("twice", 0), env("twice", 0)]).unwrap();
    let queues = vec!["twice".to_owned(), "twice".to_owned()];
    let got = b.reserve(&queues, 10, LEASE, Duration::ZERO).unwrap();
    let ids: HashSet<TaskId> = got.iter().map(|d| d.envelope.id).collect();
    assert_eq!((got.len(), ids.len()), (2, 2));
}

pub fn workers_are_listed_while_they_beat(f: Fixture) {
    let b = f.backend.driver();
    let mut w = WorkerInfo {
        id: "w1@host.1".into(),
        host: "host".into(),
        pid: 1,
        queues: vec!["a".into()],
        pool: "threads x2".into(),
        started: Timestamp::now(),
        heartbeat: Timestamp::now(),
        tasks_done: 0,
        active: 0,
    };
    b.heartbeat(&w).unwrap();
    w.tasks_done = 5;
    b.heartbeat(&w).unwrap();
    let seen = b.workers(Duration::from_secs(60)).unwrap();
    assert_eq!(seen, vec![w.clone()]);
    let mut old = w.clone();
    old.id = "old@host.2".into();
    old.heartbeat = Timestamp::from_millis(Timestamp::now().as_millis() - 3_600_000);
    b.heartbeat(&old).unwrap();
    assert_eq!(
        b.workers(Duration::from_secs(60)).unwrap().len(),
        1,
        "stale workers are not listed"
    );
    b.unregister(&w.id).unwrap();
    assert!(b.workers(Duration::from_secs(60)).unwrap().is_empty());
}

pub fn results_store_get_and_wait(f: Fixture) {
    let r = f.backend.results();
    let id = TaskId::new();
    assert!(r.get(id).unwrap().is_none());
    r.store(&[record(id, TaskState::Started)]).unwrap();
    assert_eq!(r.get(id).unwrap().unwrap().state, TaskState::Started);
    // A waiter returns what it has when the timeout passes...
    let got = r.wait(id, Duration::from_millis(50)).unwrap().unwrap();
    assert_eq!(got.state, TaskState::Started);
    // ...and wakes when another thread stores the final state.
    let writer = {
        let r = f.backend.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            r.results()
                .store(&[record(id, TaskState::Success)])
                .unwrap();
        })
    };
    let done = r.wait(id, LONG).unwrap().unwrap();
    writer.join().unwrap();
    assert_eq!(
        (done.state, done.value.as_deref()),
        (TaskState::Success, Some(&b"42"[..]))
    );
    let failed = TaskId::new();
    r.store(&[record(failed, TaskState::Failure)]).unwrap();
    assert_eq!(r.get(failed).unwrap().unwrap().error.unwrap().kind, "Boom");
    let many = r.get_many(&[failed, TaskId::new(), id]).unwrap();
    let states: Vec<Option<TaskState>> = many.iter().map(|m| m.as_ref().map(|r| r.state)).collect();
    assert_eq!(
        states,
        vec![Some(TaskState::Failure), None, Some(TaskState::Success)]
    );
}

pub fn results_expire(f: Fixture) {
    let r = f.backend.results();
    let (keep, drop_) = (TaskId::new(), TaskId::new());
    let mut old = record(drop_, TaskState::Success);
    old.expires = Some(Timestamp::from_millis(Timestamp::now().as_millis() - 1));
    let mut fresh = record(keep, TaskState::Success);
    fresh.expires = Some(Timestamp::now() + Duration::from_secs(3600));
    r.store(&[old, fresh]).unwrap();
    assert!(
        r.get(drop_).unwrap().is_none(),
        "an expired record is not returned"
    );
    // A backend that expires keys itself (Redis) has nothing left to purge.
    assert!(r.purge_expired().unwrap() <= 1);
    assert!(r.get(drop_).unwrap().is_none() && r.get(keep).unwrap().is_some());
}

/// A result with a time to live is gone once it passes; a later record of a task without one
/// is kept; of two records of one task in one batch, the later wins.
pub fn a_result_lasts_its_time_to_live(f: Fixture) {
    let r = f.backend.results();
    let (short, kept) = (TaskId::new(), TaskId::new());
    let ttl = Duration::from_millis(500);
    let stored = Timestamp::now();
    let mut a = record(short, TaskState::Success);
    a.expires = Some(stored + ttl);
    let mut started = record(kept, TaskState::Started);
    started.expires = Some(stored + ttl);
    // Minted with `short` (so stored beside it, where a backend groups by creation time) and
    // kept far longer: it must not keep `short` alive.
    let long = TaskId::new();
    let mut b = record(long, TaskState::Success);
    b.expires = Some(stored + Duration::from_secs(3600));
    r.store(&[a, started, b]).unwrap();
    let mut retry = record(kept, TaskState::Retry);
    retry.expires = Some(stored + ttl);
    r.store(&[retry, record(kept, TaskState::Success)]).unwrap();
    if Timestamp::now() < stored + ttl {
        let got = r.get(short).unwrap();
        // Read while the time to live had not passed (a slow machine may be past it already).
        assert!(got.is_some() || Timestamp::now() >= stored + ttl);
    }
    std::thread::sleep(ttl + Duration::from_millis(100));
    r.purge_expired().unwrap();
    assert!(
        r.get(short).unwrap().is_none(),
        "gone after its time to live"
    );
    let got = r
        .get(kept)
        .unwrap()
        .expect("a record without expiry is kept");
    assert_eq!(
        got.state,
        TaskState::Success,
        "the later record of the batch"
    );
}

pub fn counters_are_atomic(f: Fixture) {
    let r = f.backend.results();
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let r = f.backend.clone();
            std::thread::spawn(move || {
                for _ in 0..100 {
                    r.results().incr("chord:x", 1).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(r.incr("chord:x", 0).unwrap(), 400);
    assert_eq!(r.incr("chord:x", -400).unwrap(), 0);
}

pub fn enqueue_once_drops_repeats(f: Fixture) {
    let b = f.backend.driver();
    let (a, bb, c) = (env("once", 0), env("once", 0), env("once", 0));
    b.enqueue_once(&[a.clone(), bb.clone()]).unwrap();
    b.enqueue_once(&[a.clone(), c.clone()]).unwrap();
    let got = reserve_all(b, "once", 10);
    let mut ids: Vec<TaskId> = got.iter().map(|d| d.envelope.id).collect();
    ids.sort();
    let mut want = vec![a.id, bb.id, c.id];
    want.sort();
    assert_eq!(ids, want, "each id once");
    b.complete(&got.iter().map(|d| d.lease).collect::<Vec<_>>())
        .unwrap();
    b.enqueue_once(std::slice::from_ref(&a)).unwrap();
    assert!(
        reserve_all(b, "once", 10).is_empty(),
        "an id sent once is not sent again after it ran"
    );
}

pub fn a_workflow_continuation_travels_with_the_task(f: Fixture) {
    let b = f.backend.driver();
    let next = lovage_core::Canvas::task(
        lovage_core::Signature::new("next", &(1,), lovage_core::Codec::Json).unwrap(),
    );
    let mut e = env("flow", 0);
    e.flow = vec![lovage_core::canvas::Frame::Chain(vec![next])];
    b.enqueue(std::slice::from_ref(&e)).unwrap();
    let got = reserve_all(b, "flow", 1);
    assert_eq!(got[0].envelope.flow, e.flow);
}

fn join_one(
    r: &dyn ResultStore,
    id: TaskId,
    index: u32,
    size: u32,
    value: &[u8],
) -> Option<Vec<Vec<u8>>> {
    let entry = JoinEntry {
        id,
        index,
        size,
        value,
    };
    r.join(&[entry]).unwrap().pop().unwrap()
}

pub fn joins_complete_once_every_member_is_in(f: Fixture) {
    let r = f.backend.results();
    let id = TaskId::new();
    assert_eq!(join_one(r, id, 1, 3, b"b"), None);
    assert_eq!(join_one(r, id, 0, 3, b"a"), None);
    assert_eq!(
        join_one(r, id, 1, 3, b"b2"),
        None,
        "a member recorded twice counts once"
    );
    let all = Some(vec![b"a".to_vec(), b"b2".to_vec(), b"c".to_vec()]);
    assert_eq!(join_one(r, id, 2, 3, b"c"), all);
    assert_eq!(
        join_one(r, id, 2, 3, b"c"),
        all,
        "a member run again still sees the join complete"
    );
    // Several members (of two joins) in one call: answers in order, per entry.
    let (x, y) = (TaskId::new(), TaskId::new());
    let entries = [
        JoinEntry {
            id: x,
            index: 0,
            size: 2,
            value: b"x0",
        },
        JoinEntry {
            id: y,
            index: 0,
            size: 1,
            value: b"y0",
        },
        JoinEntry {
            id: x,
            index: 1,
            size: 2,
            value: b"x1",
        },
    ];
    assert_eq!(
        r.join(&entries).unwrap(),
        vec![
            None,
            Some(vec![b"y0".to_vec()]),
            Some(vec![b"x0".to_vec(), b"x1".to_vec()])
        ]
    );
    // Members finishing concurrently: exactly one sees the join complete first.
    let id = TaskId::new();
    let n = 64u32;
    let firsts = std::sync::atomic::AtomicU32::new(0);
    std::thread::scope(|s| {
        for t in 0..4u32 {
            let firsts = &firsts;
            s.spawn(move || {
                for i in (t..n).step_by(4) {
                    if join_one(r, id, i, n, &i.to_le_bytes()).is_some() {
                        firsts.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    }
                }
            });
        }
    });
    assert_eq!(firsts.into_inner(), 1);
    let values = join_one(r, id, 0, n, &0u32.to_le_bytes()).unwrap();
    assert_eq!(values.len(), n as usize);
    assert_eq!(values[5], 5u32.to_le_bytes().to_vec());
}

pub fn a_lock_has_one_holder_and_lapses(f: Fixture) {
    let b = f.backend.driver();
    let ttl = Duration::from_millis(300);
    assert!(b.lock("leader", "a", ttl).unwrap());
    assert!(!b.lock("leader", "b", ttl).unwrap(), "held by a");
    assert!(b.lock("leader", "a", ttl).unwrap(), "a renews");
    assert!(b.lock("other", "b", ttl).unwrap(), "locks are separate");
    std::thread::sleep(Duration::from_millis(400));
    assert!(b.lock("leader", "b", ttl).unwrap(), "a lapsed; b takes it");
    assert!(!b.lock("leader", "a", ttl).unwrap());
    b.unlock("leader", "a").unwrap(); // not a's: no effect
    assert!(!b.lock("leader", "a", ttl).unwrap());
    b.unlock("leader", "b").unwrap();
    assert!(b.lock("leader", "a", ttl).unwrap(), "free again");
}

pub fn a_deferred_task_comes_back_without_counting_an_attempt(f: Fixture) {
    let b = f.backend.driver();
    b.enqueue(&[env("defer", 0)]).unwrap();
    let first = reserve_all(b, "defer", 1);
    assert_eq!(first[0].envelope.attempts, 1);
    b.snooze(&first[0].lease, Duration::from_millis(200))
        .unwrap();
    assert!(
        reserve_all(b, "defer", 1).is_empty(),
        "not before its delay"
    );
    let again = b.reserve(&q("defer"), 1, LEASE, LONG).unwrap();
    assert_eq!(
        again[0].envelope.attempts, 1,
        "a deferral is not an attempt"
    );
    // A stale lease cannot defer the live delivery.
    b.retry(&again[0].lease, Duration::ZERO).unwrap();
    let third = reserve_all(b, "defer", 1);
    assert_eq!(third[0].envelope.attempts, 2);
    b.snooze(&first[0].lease, Duration::ZERO).unwrap();
    assert_eq!(
        b.stats().unwrap()[0].reserved,
        1,
        "still held by the third delivery"
    );
}

pub fn rate_limits_book_one_slot_per_interval(f: Fixture) {
    let b = f.backend.driver();
    let key = format!("rate-{}", TaskId::new());
    let interval = Duration::from_millis(100);
    let horizon = Duration::from_millis(250);
    let (slots, next) = b.acquire(&key, interval, 5, horizon).unwrap();
    assert_eq!(
        slots.len(),
        3,
        "slots at 0, 100 and 200 ms fit the horizon: {slots:?}"
    );
    assert!(slots[0] < Duration::from_millis(5));
    assert!(slots[2] > Duration::from_millis(190) && slots[2] <= Duration::from_millis(200));
    assert!(
        next > Duration::from_millis(30) && next <= Duration::from_millis(50),
        "{next:?}"
    );
    // Another worker asking at once gets the slots after those.
    let (slots, _) = b
        .acquire(&key, interval, 5, Duration::from_millis(400))
        .unwrap();
    assert_eq!(slots.len(), 2, "{slots:?}");
    assert!(slots[0] > Duration::from_millis(290), "{slots:?}");
    // An idle limit does not save up.
    std::thread::sleep(Duration::from_millis(900));
    let (slots, _) = b.acquire(&key, interval, 5, Duration::ZERO).unwrap();
    assert_eq!(slots.len(), 1);
    // Other keys are independent.
    assert_eq!(
        b.acquire("another", interval, 1, Duration::ZERO)
            .unwrap()
            .0
            .len(),
        1
    );
}

pub fn blobs_are_kept_by_key(f: Fixture) {
    let r = f.backend.results();
    let key = TaskId::new();
    assert_eq!(r.get_blob(key).unwrap(), None);
    r.put_blob(key, b"one").unwrap();
    r.put_blob(key, b"two").unwrap();
    assert_eq!(r.get_blob(key).unwrap(), Some(b"two".to_vec()));
    assert_eq!(r.get_blob(TaskId::new()).unwrap(), None);
}

pub fn concurrent_consumers_get_every_task_once(f: Fixture) {
    let b = f.backend.clone();
    let sent: Vec<Envelope> = (0..3000).map(|i| env("many", (i % 10) as u8)).collect();
    for chunk in sent.chunks(500) {
        b.broker().enqueue(chunk).unwrap();
    }
    let consumers: Vec<_> = (0..4)
        .map(|_| {
            let b = b.clone();
            std::thread::spawn(move || {
                let mut got = Vec::new();
                loop {
                    let batch = b
                        .broker()
                        .reserve(&q("many"), 64, LEASE, Duration::from_millis(200))
                        .unwrap();
                    if batch.is_empty() {
                        return got;
                    }
                    let leases: Vec<Lease> = batch.iter().map(|d| d.lease).collect();
                    got.extend(batch.into_iter().map(|d| d.envelope.id));
                    b.broker().complete(&leases).unwrap();
                }
            })
        })
        .collect();
    let mut all: Vec<TaskId> = consumers
        .into_iter()
        .flat_map(|c| c.join().unwrap())
        .collect();
    let unique: HashSet<TaskId> = all.iter().copied().collect();
    assert_eq!(
        all.len(),
        3000,
        "each task delivered exactly once when every lease is acked"
    );
    assert_eq!(unique, sent.iter().map(|e| e.id).collect());
    all.clear();
    assert!(b.admin().stats().unwrap().is_empty());
}

pub fn the_client_sends_and_reads_results(f: Fixture) {
    let app = App::with_backend(f.backend.clone());
    let sig = lovage_core::TypedSignature::<i64>::new(
        Signature::new("conformance.add", &(2, 3), Codec::Json).unwrap(),
    );
    let res = app.send(sig).unwrap();
    assert_eq!(res.state().unwrap(), TaskState::Pending);
    assert_eq!(
        res.get(Duration::from_millis(20)).unwrap_err().kind,
        kinds::TIMEOUT
    );
    // Play the worker.
    let d = reserve_all(f.backend.broker(), "default", 1);
    assert_eq!(d[0].envelope.id, res.id());
    let mut rec = record(res.id(), TaskState::Success);
    rec.value = Some(b"5".to_vec());
    f.backend.results().store(&[rec]).unwrap();
    f.backend.broker().complete(&[d[0].lease]).unwrap();
    assert_eq!(res.get(LONG).unwrap(), 5);
    assert_eq!(lovage_core::block_on(res.get_async(LONG)).unwrap(), 5);
    // Revoking a waiting task records REVOKED for its waiters.
    let sig = lovage_core::TypedSignature::<i64>::new(
        Signature::new("conformance.add", &(1, 1), Codec::Json).unwrap(),
    );
    let res = app.send(sig).unwrap();
    assert_eq!(res.revoke().unwrap(), Revoked::Pending);
    assert_eq!(res.get(LONG).unwrap_err().kind, kinds::REVOKED);
}

macro_rules! conformance {
    ($backend:ident, $fixture:expr) => {
        mod $backend {
            use super::*;
            conformance!(@tests $fixture;
                enqueue_reserve_ack,
                priority_first_then_fifo,
                queues_are_separate,
                a_big_mixed_batch_lands_whole,
                queue_names_may_hold_spaces_and_digits,
                eta_tasks_wait_in_the_broker,
                an_expired_lease_delivers_again,
                extend_keeps_a_lease,
                nack_returns_a_task_after_a_delay,
                revoke_pending_running_and_unknown,
                purge_removes_waiting_tasks_only,
                dead_letters_keep_the_last_failure,
                a_stale_lease_cannot_dead_letter_a_live_task,
                a_queue_named_twice_delivers_each_task_once,
                workers_are_listed_while_they_beat,
                results_store_get_and_wait,
                results_expire,
                a_result_lasts_its_time_to_live,
                counters_are_atomic,
                enqueue_once_drops_repeats,
                a_workflow_continuation_travels_with_the_task,
                joins_complete_once_every_member_is_in,
                blobs_are_kept_by_key,
                a_lock_has_one_holder_and_lapses,
                a_deferred_task_comes_back_without_counting_an_attempt,
                rate_limits_book_one_slot_per_interval,
                concurrent_consumers_get_every_task_once,
                the_client_sends_and_reads_results,
            );
        }
    };
    (@tests $fixture:expr; $($test:ident),* $(,)?) => {
        $(
            #[test]
            fn $test() {
                super::$test($fixture);
            }
        )*
    };
}

conformance!(memory, memory());
conformance!(sqlite, sqlite());
#[cfg(feature = "redis")]
conformance!(redis_backend, redis());

/// A prefix written by another Redis key layout is refused, not silently misread.
#[cfg(feature = "redis")]
#[test]
fn redis_refuses_a_prefix_in_another_layout() {
    let base = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/0".into());
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
#[cfg(feature = "redis")]
#[test]
fn redis_wakes_a_waiter_after_losing_its_scripts() {
    let f = redis();
    let base = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/0".into());
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
        let r = f.backend.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            r.results()
                .store(&[record(id, TaskState::Success)])
                .unwrap();
        })
    };
    let start = std::time::Instant::now();
    let done = r.wait(id, LONG).unwrap().unwrap();
    writer.join().unwrap();
    assert_eq!(done.state, TaskState::Success);
    // A waiter not woken would find the result only at its 30-second re-check.
    assert!(
        start.elapsed() < Duration::from_secs(20),
        "the waiter was not woken"
    );
}
