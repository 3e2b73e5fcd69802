//! Tasks queued for a worker ([`Envelope::affinity`]): that worker takes them at once, others
//! only after their steal time, and a worker that is gone never strands one. Every way of
//! sending honours it (`enqueue`, `enqueue_once`, `enqueue_in_scope`).

use std::time::{Duration, Instant};

use lovage_core::TaskId;

use super::{env, q, Fixture, LEASE, LONG, SHORT, WAKE};
use crate::{Affinity, Driver, Envelope, Timestamp};

/// A task for `queue` queued for `worker`, stealable after `delay`.
fn affine(queue: &str, worker: &str, delay: Duration) -> Envelope {
    let mut e = env(queue, 0);
    e.affinity = Some(Affinity::for_worker(worker, delay));
    e
}

/// The ids `worker` (or, with `None`, any worker) reserves from `queue` now, up to `max`.
fn take(b: &dyn Driver, worker: Option<&str>, queue: &str, max: usize) -> Vec<TaskId> {
    b.reserve_as(worker, &q(queue), max, LEASE, Duration::ZERO)
        .unwrap()
        .into_iter()
        .map(|d| d.envelope.id)
        .collect()
}

/// Sends `batch` the way `how` names: 0 `enqueue`, 1 `enqueue_once`, 2 `enqueue_in_scope`.
fn send(b: &dyn Driver, how: usize, batch: &[Envelope]) {
    match how {
        0 => b.enqueue(batch).unwrap(),
        1 => b.enqueue_once(batch).unwrap(),
        _ => {
            let sent = b.enqueue_in_scope(TaskId::new(), batch, false).unwrap();
            assert!(sent.iter().all(|s| *s), "every member sent");
        }
    }
}

conformance_tests! {
    /// Its worker takes a task queued for it at once, before older tasks of the shared queue;
    /// another worker, or a reserve naming none, does not get it before its steal time.
    fn a_task_queued_for_a_worker_goes_to_it_at_once(f: Fixture) {
        let b = f.backend.driver();
        for how in 0..3 {
            let queue = format!("aff-{how}");
            let plain = env(&queue, 9);
            let mine = affine(&queue, "worker-a", LONG);
            send(b, how, &[plain.clone(), mine.clone()]);
            assert_eq!(
                take(b, Some("worker-b"), &queue, 10),
                vec![plain.id],
                "send #{how}: another worker gets only the shared task"
            );
            assert!(
                take(b, None, &queue, 10).is_empty(),
                "send #{how}: nor does a reserve naming no worker"
            );
            let got = b
                .reserve_as(Some("worker-a"), &q(&queue), 10, LEASE, Duration::ZERO)
                .unwrap();
            assert_eq!(got.len(), 1, "send #{how}: its worker takes it");
            assert_eq!(got[0].envelope.id, mine.id);
            assert_eq!(got[0].envelope.attempts, 1);
            assert_eq!(got[0].envelope.affinity, None, "used up once queued");
            assert!(
                take(b, Some("worker-a"), &queue, 10).is_empty(),
                "delivered once"
            );
            b.complete(&[got[0].lease]).unwrap();
        }
    }

    /// Its worker's tasks come first, oldest first, then the shared queue fills the rest.
    fn a_workers_own_tasks_come_before_the_shared_queue(f: Fixture) {
        let b = f.backend.driver();
        let shared: Vec<Envelope> = (0..2).map(|_| env("mix", 9)).collect();
        let mine: Vec<Envelope> = (0..2).map(|_| affine("mix", "worker-a", LONG)).collect();
        let theirs = affine("mix", "worker-b", LONG);
        b.enqueue(&[
            shared[0].clone(),
            mine[0].clone(),
            theirs.clone(),
            mine[1].clone(),
            shared[1].clone(),
        ])
        .unwrap();
        assert_eq!(
            take(b, Some("worker-a"), "mix", 3),
            vec![mine[0].id, mine[1].id, shared[0].id]
        );
        assert_eq!(take(b, Some("worker-a"), "mix", 3), vec![shared[1].id]);
        assert_eq!(take(b, Some("worker-b"), "mix", 3), vec![theirs.id]);
    }

    /// Another worker steals a task queued for a busy worker once its steal time has come, and
    /// not before; a reserve waiting meanwhile takes it then, without being woken by a send.
    fn another_worker_steals_after_the_delay(f: Fixture) {
        let b = f.backend.driver();
        let e = affine("steal", "worker-a", SHORT);
        let until = e.affinity.as_ref().unwrap().until;
        let due = Instant::now() + SHORT;
        b.enqueue(std::slice::from_ref(&e)).unwrap();
        assert!(
            take(b, Some("worker-b"), "steal", 1).is_empty(),
            "not before its steal time"
        );
        let stats = b.stats().unwrap();
        assert_eq!(
            (stats[0].ready, stats[0].scheduled),
            (0, 1),
            "it waits as scheduled"
        );
        let got = b
            .reserve_as(Some("worker-b"), &q("steal"), 1, LEASE, LONG)
            .unwrap();
        assert_eq!(got.len(), 1, "stolen within {LONG:?}");
        assert_eq!(got[0].envelope.id, e.id);
        assert!(Timestamp::now() >= until, "stolen before its steal time");
        let late = Instant::now().saturating_duration_since(due);
        assert!(late < WAKE, "stolen {late:?} after its steal time");
        assert!(
            take(b, Some("worker-a"), "steal", 1).is_empty(),
            "delivered once"
        );
    }

    /// A task queued for a worker that is gone (it never reserves again) is delivered to any
    /// worker after its steal time: nothing is stranded.
    fn a_task_queued_for_a_gone_worker_is_not_stranded(f: Fixture) {
        let b = f.backend.driver();
        let e = affine("gone", "worker-gone", SHORT);
        let due = Instant::now() + SHORT;
        send(b, 2, std::slice::from_ref(&e));
        let got = b.reserve(&q("gone"), 1, LEASE, LONG).unwrap();
        assert_eq!(got.len(), 1, "delivered within {LONG:?}");
        assert_eq!(got[0].envelope.id, e.id);
        let late = Instant::now().saturating_duration_since(due);
        assert!(late < WAKE, "delivered {late:?} after its steal time");
    }

    /// A task put back (a retry, a deferral) waits for every worker alike: its affinity was used
    /// up when it was queued.
    fn a_task_put_back_waits_for_every_worker(f: Fixture) {
        let b = f.backend.driver();
        let e = affine("back", "worker-a", LONG);
        b.enqueue(std::slice::from_ref(&e)).unwrap();
        let first = b
            .reserve_as(Some("worker-a"), &q("back"), 1, LEASE, Duration::ZERO)
            .unwrap();
        b.retry(&first[0].lease, Duration::ZERO).unwrap();
        let again = b
            .reserve_as(Some("worker-b"), &q("back"), 1, LEASE, Duration::ZERO)
            .unwrap();
        assert_eq!(again.len(), 1, "another worker takes it at once");
        assert_eq!(
            (again[0].envelope.id, again[0].envelope.attempts),
            (e.id, 2)
        );
        b.snooze(&again[0].lease, SHORT).unwrap();
        assert!(
            take(b, Some("worker-a"), "back", 1).is_empty(),
            "its first worker does not take it before its deferral is over"
        );
    }

    /// An affinity whose steal time has passed, or one of a task with a later ETA, changes
    /// nothing: the task is everyone's when it is ready.
    fn a_spent_affinity_changes_nothing(f: Fixture) {
        let b = f.backend.driver();
        let mut spent = env("spent", 0);
        spent.affinity = Some(Affinity {
            worker: "worker-a".into(),
            until: Timestamp::from_millis(Timestamp::now().as_millis() - 1000),
        });
        let mut later = affine("spent", "worker-a", LONG);
        later.eta = Some(Timestamp::now() + LONG);
        b.enqueue(&[spent.clone(), later]).unwrap();
        assert_eq!(take(b, Some("worker-b"), "spent", 10), vec![spent.id]);
        assert!(
            take(b, Some("worker-a"), "spent", 10).is_empty(),
            "its worker does not take it before its ETA"
        );
    }

    /// A worker waiting on its queues wakes when a task is queued for it, long before the
    /// task's steal time.
    fn a_waiting_worker_wakes_for_its_own_task(f: Fixture) {
        let b = f.backend.clone();
        let waiter = {
            let b = b.clone();
            std::thread::spawn(move || {
                let got = b
                    .driver()
                    .reserve_as(Some("worker-a"), &q("wake-mine"), 1, LEASE, LONG)
                    .unwrap();
                (got, Instant::now())
            })
        };
        std::thread::sleep(Duration::from_millis(200));
        let e = affine("wake-mine", "worker-a", LONG);
        let sent = Instant::now();
        b.driver().enqueue(std::slice::from_ref(&e)).unwrap();
        let (got, returned) = waiter.join().unwrap();
        assert_eq!(got.len(), 1, "the waiting worker got its task");
        assert_eq!(got[0].envelope.id, e.id);
        let after = returned.saturating_duration_since(sent);
        assert!(
            after < WAKE,
            "the waiter was not woken: it returned {after:?} after the send"
        );
    }

    /// A paused queue delivers nothing, not even to the worker a task is queued for.
    fn a_paused_queue_keeps_a_workers_own_tasks(f: Fixture) {
        let b = f.backend.driver();
        let e = affine("paused-aff", "worker-a", LONG);
        b.enqueue(std::slice::from_ref(&e)).unwrap();
        b.pause("paused-aff").unwrap();
        assert!(take(b, Some("worker-a"), "paused-aff", 1).is_empty());
        b.resume("paused-aff").unwrap();
        assert_eq!(take(b, Some("worker-a"), "paused-aff", 1), vec![e.id]);
    }
}
