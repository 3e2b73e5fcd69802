//! A task's life in the broker: enqueue, reserve (priority, FIFO, queues, ETA), leases that
//! run out and are extended, nack, defer, revoke, purge, dead letters, many consumers.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use lovage_core::{TaskError, TaskId};

use super::{env, q, reserve_all, reserve_when_due, Fixture, LEASE, LONG, SHORT, WAKE};
use crate::{Envelope, Lease, Revoked, Timestamp};

conformance_tests! {
    fn enqueue_reserve_ack(f: Fixture) {
        let b = f.backend.driver();
        let sent: Vec<Envelope> = (0..3).map(|_| env("a", 0)).collect();
        b.enqueue(&sent).unwrap();
        let got = reserve_all(b, "a", 10);
        assert_eq!(got.len(), 3);
        for (d, e) in got.iter().zip(&sent) {
            assert_eq!(d.envelope.id, e.id, "FIFO within a priority");
            assert_eq!(d.envelope.args, e.args);
            assert_eq!(d.envelope.task, e.task);
            assert_eq!(d.envelope.attempts, 1);
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

    fn priority_first_then_fifo(f: Fixture) {
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

    fn queues_are_separate(f: Fixture) {
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
    fn a_big_mixed_batch_lands_whole(f: Fixture) {
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
    fn queue_names_may_hold_spaces_and_digits(f: Fixture) {
        let b = f.backend.driver();
        let queue = "a 12 q";
        let e = env(queue, 3);
        b.enqueue(std::slice::from_ref(&e)).unwrap();
        let first = reserve_all(b, queue, 1);
        assert_eq!(first[0].envelope.queue, queue);
        b.retry(&first[0].lease, Duration::ZERO).unwrap();
        let again = reserve_all(b, queue, 1);
        assert_eq!(
            (again[0].envelope.id, again[0].envelope.attempts),
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

    /// A reserve waiting on an empty queue wakes when a task is sent, soon after, long before
    /// its own wait is over.
    fn a_waiting_reserve_wakes_on_enqueue(f: Fixture) {
        let b = f.backend.clone();
        let e = env("wake", 0);
        let waiter = {
            let b = b.clone();
            std::thread::spawn(move || {
                let got = b.driver().reserve(&q("wake"), 1, LEASE, LONG).unwrap();
                (got, Instant::now())
            })
        };
        std::thread::sleep(Duration::from_millis(200));
        let sent = Instant::now();
        b.driver().enqueue(std::slice::from_ref(&e)).unwrap();
        let (got, returned) = waiter.join().unwrap();
        assert_eq!(got.len(), 1, "the waiting reserve got the task");
        assert_eq!(got[0].envelope.id, e.id);
        let after = returned.saturating_duration_since(sent);
        assert!(
            after < WAKE,
            "the waiter was not woken: it returned {after:?} after the send"
        );
    }

    fn eta_tasks_wait_in_the_broker(f: Fixture) {
        let b = f.backend.driver();
        let mut e = env("eta", 0);
        let eta = Timestamp::now() + SHORT;
        let due = Instant::now() + SHORT;
        e.eta = Some(eta);
        b.enqueue(std::slice::from_ref(&e)).unwrap();
        assert!(reserve_all(b, "eta", 1).is_empty(), "not before its ETA");
        assert_eq!(b.stats().unwrap()[0].scheduled, 1);
        let got = reserve_when_due(b, "eta", due);
        assert_eq!(got[0].envelope.id, e.id);
        assert!(Timestamp::now() >= eta, "delivered before its ETA");
    }

    fn an_expired_lease_delivers_again(f: Fixture) {
        let b = f.backend.driver();
        b.enqueue(&[env("lease", 0)]).unwrap();
        let first = b
            .reserve(&q("lease"), 1, Duration::from_millis(200), Duration::ZERO)
            .unwrap();
        let due = Instant::now() + Duration::from_millis(200);
        // The task comes back after its lease ran out.
        let again = reserve_when_due(b, "lease", due);
        assert_eq!(again[0].envelope.id, first[0].envelope.id);
        assert_eq!(again[0].envelope.attempts, 2);
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

    fn extend_keeps_a_lease(f: Fixture) {
        let b = f.backend.driver();
        b.enqueue(&[env("ext", 0)]).unwrap();
        let d = b
            .reserve(&q("ext"), 1, SHORT, Duration::ZERO)
            .unwrap();
        assert!(b.renew(&[d[0].lease], LEASE).unwrap().is_empty());
        let none = b
            .reserve(&q("ext"), 1, LEASE, SHORT * 2)
            .unwrap();
        assert!(none.is_empty(), "an extended lease is still held");
    }

    fn nack_returns_a_task_after_a_delay(f: Fixture) {
        let b = f.backend.driver();
        b.enqueue(&[env("nack", 0)]).unwrap();
        let d = reserve_all(b, "nack", 1);
        let before = Timestamp::now();
        let delay = SHORT;
        b.retry(&d[0].lease, delay).unwrap();
        let due = Instant::now() + delay;
        assert!(reserve_all(b, "nack", 1).is_empty(), "not before its delay");
        let again = reserve_when_due(b, "nack", due);
        assert_eq!(again[0].envelope.id, d[0].envelope.id);
        assert_eq!(again[0].envelope.attempts, 2);
        assert!(Timestamp::now() - before >= delay - Duration::from_millis(10));
        b.retry(&again[0].lease, Duration::ZERO).unwrap();
        assert_eq!(
            reserve_all(b, "nack", 1).len(),
            1,
            "a zero delay is ready at once"
        );
    }

    fn revoke_pending_running_and_unknown(f: Fixture) {
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

    /// Revoking a waiting task records it REVOKED in the same operation (before, the client
    /// stored the record in a second step, and a failure in between left it PENDING for good).
    /// The record carries the attempts so far, so it supersedes the RETRY record of a task
    /// revoked while it waits for its retry; a waiting workflow step is recorded too.
    fn revoking_a_waiting_task_records_it_revoked_at_once(f: Fixture) {
        let b = f.backend.driver();
        let (plain, mut step, retried) = (env("rvr", 0), env("rvr", 0), env("rvr-retry", 0));
        step.flow = vec![lovage_core::canvas::Frame::Link(Vec::new())];
        b.enqueue(&[plain.clone(), step.clone(), retried.clone()]).unwrap();
        let d = reserve_all(b, "rvr-retry", 1);
        b.store(&[crate::ResultRecord {
            attempts: 1,
            ..super::record(retried.id, lovage_core::TaskState::Retry)
        }])
        .unwrap();
        b.retry(&d[0].lease, Duration::from_secs(3600)).unwrap();
        for (e, attempts) in [(&plain, 0), (&step, 0), (&retried, 1)] {
            assert_eq!(b.revoke(e.id).unwrap(), Revoked::Pending);
            let r = b.get(e.id).unwrap().expect("recorded by revoke itself");
            assert_eq!(
                (r.state, r.attempts),
                (lovage_core::TaskState::Revoked, attempts),
                "{e:?}"
            );
        }
    }

    fn purge_removes_waiting_tasks_only(f: Fixture) {
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

    fn dead_letters_keep_the_last_failure(f: Fixture) {
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
        assert!(b.dead_letters(0).unwrap().is_empty(), "a limit of 0 is none");
    }

    fn dead_letters_past_the_cap_drop_the_oldest(f: Fixture) {
        let capped = f.reopen("dead_letters=3");
        let b = capped.driver();
        let sent: Vec<Envelope> = (0..4).map(|_| env("cap", 0)).collect();
        b.enqueue(&sent).unwrap();
        let err = TaskError::new("Boom", "for good");
        for d in reserve_all(b, "cap", 10) {
            b.discard(&d.lease, &d.envelope, &err).unwrap();
        }
        // A burial (a task no longer held) counts against the same cap.
        let late = env("cap", 0);
        b.bury(&late, &err).unwrap();
        let kept: Vec<TaskId> = b
            .dead_letters(10)
            .unwrap()
            .iter()
            .map(|d| d.envelope.id)
            .collect();
        assert_eq!(kept, vec![late.id, sent[3].id, sent[2].id], "the newest three");
    }

    fn a_task_no_longer_held_can_be_buried(f: Fixture) {
        let b = f.backend.driver();
        let e = env("bury", 0);
        b.enqueue(std::slice::from_ref(&e)).unwrap();
        let d = reserve_all(b, "bury", 1);
        // Acknowledged when it started (acks_late = false), then failed for good.
        b.complete(&[d[0].lease]).unwrap();
        let err = TaskError::new("Boom", "after the early ack");
        b.discard(&d[0].lease, &d[0].envelope, &err).unwrap();
        assert!(
            b.dead_letters(10).unwrap().is_empty(),
            "discard needs the lease"
        );
        b.bury(&d[0].envelope, &err).unwrap();
        let dead = b.dead_letters(10).unwrap();
        assert_eq!(dead.len(), 1);
        assert_eq!((dead[0].envelope.id, &dead[0].error), (e.id, &err));
        assert!(b.stats().unwrap().is_empty(), "nothing is back in a queue");
    }

    fn a_stale_lease_cannot_dead_letter_a_live_task(f: Fixture) {
        let b = f.backend.driver();
        b.enqueue(&[env("stale", 0)]).unwrap();
        let first = b
            .reserve(&q("stale"), 1, Duration::from_millis(200), Duration::ZERO)
            .unwrap();
        let again = reserve_when_due(b, "stale", Instant::now() + Duration::from_millis(200));
        assert_eq!(again[0].envelope.attempts, 2, "delivered again");
        let err = TaskError::new("Late", "from the first worker");
        b.discard(&first[0].lease, &first[0].envelope, &err)
            .unwrap();
        assert!(
            b.dead_letters(10).unwrap().is_empty(),
            "the task is alive elsewhere"
        );
        assert_eq!(b.stats().unwrap()[0].reserved, 1);
    }

    fn a_queue_named_twice_delivers_each_task_once(f: Fixture) {
        let b = f.backend.driver();
        b.enqueue(&[env("twice", 0), env("twice", 0)]).unwrap();
        let queues = vec!["twice".to_owned(), "twice".to_owned()];
        let got = b.reserve(&queues, 10, LEASE, Duration::ZERO).unwrap();
        let ids: HashSet<TaskId> = got.iter().map(|d| d.envelope.id).collect();
        assert_eq!((got.len(), ids.len()), (2, 2));
    }

    fn a_deferred_task_comes_back_without_counting_an_attempt(f: Fixture) {
        let b = f.backend.driver();
        b.enqueue(&[env("defer", 0)]).unwrap();
        let first = reserve_all(b, "defer", 1);
        assert_eq!(first[0].envelope.attempts, 1);
        b.snooze(&first[0].lease, SHORT).unwrap();
        let due = Instant::now() + SHORT;
        assert!(
            reserve_all(b, "defer", 1).is_empty(),
            "not before its delay"
        );
        let again = reserve_when_due(b, "defer", due);
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

    /// A deferral keeps the attempt count, so the next delivery has the same attempt number as
    /// the deferred one: only a fencing token tells them apart. A deferral, a nack, an ack or a
    /// dead letter repeated from the first delivery (a retry after a lost reply) leaves the
    /// second alone.
    fn a_repeated_call_from_a_deferred_delivery_cannot_touch_the_next(f: Fixture) {
        let b = f.backend.driver();
        b.enqueue(&[env("fence", 0)]).unwrap();
        let first = reserve_all(b, "fence", 1);
        b.snooze(&first[0].lease, Duration::ZERO).unwrap();
        let second = reserve_all(b, "fence", 1);
        assert_eq!(second[0].envelope.attempts, first[0].envelope.attempts);
        let stale = first[0].lease;
        b.snooze(&stale, Duration::ZERO).unwrap();
        b.retry(&stale, Duration::ZERO).unwrap();
        b.complete(&[stale]).unwrap();
        b.discard(&stale, &first[0].envelope, &TaskError::new("Late", "stale"))
            .unwrap();
        assert_eq!(b.renew(&[stale], LEASE).unwrap(), vec![stale], "the stale lease is lost");
        assert!(b.dead_letters(10).unwrap().is_empty(), "not dead-lettered");
        assert!(reserve_all(b, "fence", 1).is_empty(), "not put back in its queue");
        assert!(
            b.renew(&[second[0].lease], LEASE).unwrap().is_empty(),
            "the second delivery still holds its lease"
        );
        assert_eq!(b.stats().unwrap()[0].reserved, 1);
        assert_ne!(second[0].lease, first[0].lease, "each delivery has its own lease");
        b.complete(&[second[0].lease]).unwrap();
        assert!(b.stats().unwrap().is_empty());
    }

    /// A worker's batch settled in one step: every record stored, every lease completed; a
    /// record from a delivery that is no longer the task's last is refused as by `store` (the
    /// newer delivery's record stays) and its stale lease completes nothing; the same call
    /// repeated after a lost reply changes nothing.
    fn store_and_complete_settles_a_batch(f: Fixture) {
        use lovage_core::TaskState;
        let b = f.backend.driver();
        let sent: Vec<Envelope> = (0..3).map(|_| env("settle", 0)).collect();
        b.enqueue(&sent).unwrap();
        let got = reserve_all(b, "settle", 3);
        assert_eq!(got.len(), 3);
        // The third was nacked and taken again, and its second run stored SUCCESS.
        b.retry(&got[2].lease, Duration::ZERO).unwrap();
        let again = reserve_all(b, "settle", 1);
        let newer = super::ResultRecord {
            attempts: again[0].envelope.attempts,
            ..super::record(again[0].envelope.id, TaskState::Success)
        };
        assert!(newer.attempts > got[2].envelope.attempts);
        b.store(&[newer]).unwrap();
        // The first had a STARTED record that expires; its final one is kept for good.
        b.store(&[super::ResultRecord {
            attempts: got[0].envelope.attempts,
            expires: Some(Timestamp::now() + Duration::from_secs(3600)),
            ..super::record(got[0].envelope.id, TaskState::Started)
        }])
        .unwrap();
        let records: Vec<_> = got
            .iter()
            .map(|d| super::ResultRecord {
                attempts: d.envelope.attempts,
                expires: None,
                ..super::record(d.envelope.id, TaskState::Failure)
            })
            .collect();
        let leases: Vec<Lease> = got.iter().map(|d| d.lease).collect();
        let ids: Vec<_> = records.iter().map(|r| r.id).collect();
        for call in 0..2 {
            b.store_and_complete(&records, &leases).unwrap();
            let stored = b.get_many(&ids).unwrap();
            let states: Vec<_> = stored.iter().map(|r| r.as_ref().unwrap().state).collect();
            assert_eq!(
                states,
                [TaskState::Failure, TaskState::Failure, TaskState::Success],
                "call {call}: the stale run's record is refused, the STARTED one replaced"
            );
        }
        let left = b.stats().unwrap();
        assert_eq!(left.len(), 1, "only the redelivered task is left: {left:?}");
        assert_eq!((left[0].ready, left[0].reserved), (0, 1));
        assert!(b.renew(&[again[0].lease], LEASE).unwrap().is_empty(), "still held");
        b.store_and_complete(&[], &[again[0].lease]).unwrap();
        assert!(b.stats().unwrap().is_empty());
        b.store_and_complete(&[], &[]).unwrap();
    }

    /// A nack repeated after a lost reply counts its attempt once.
    fn a_repeated_nack_counts_one_attempt(f: Fixture) {
        let b = f.backend.driver();
        b.enqueue(&[env("renack", 0)]).unwrap();
        let first = reserve_all(b, "renack", 1);
        b.retry(&first[0].lease, Duration::ZERO).unwrap();
        b.retry(&first[0].lease, Duration::ZERO).unwrap();
        b.snooze(&first[0].lease, Duration::ZERO).unwrap();
        let again = reserve_all(b, "renack", 1);
        assert_eq!(again[0].envelope.attempts, 2);
    }

    /// A worker that finishes after its lease ran out, but before any other worker took the
    /// task, still acks it: nobody else holds it, so the work is not done twice.
    fn a_late_ack_is_accepted_while_nobody_else_took_the_task(f: Fixture) {
        let b = f.backend.driver();
        b.enqueue(&[env("late", 0)]).unwrap();
        let first = b
            .reserve(&q("late"), 1, Duration::from_millis(100), Duration::ZERO)
            .unwrap();
        std::thread::sleep(Duration::from_millis(250));
        // Another worker's reserve on another queue sees the lease ran out.
        assert!(reserve_all(b, "elsewhere", 1).is_empty());
        b.complete(&[first[0].lease]).unwrap();
        assert!(
            reserve_all(b, "late", 1).is_empty(),
            "the late ack removed the task"
        );
        assert!(b.stats().unwrap().iter().all(|s| s.ready + s.reserved + s.scheduled == 0));
    }

    fn concurrent_consumers_get_every_task_once(f: Fixture) {
        let b = f.backend.clone();
        let sent: Vec<Envelope> = (0..3000).map(|i| env("many", (i % 10) as u8)).collect();
        for chunk in sent.chunks(500) {
            b.driver().enqueue(chunk).unwrap();
        }
        let consumers: Vec<_> = (0..4)
            .map(|_| {
                let b = b.clone();
                std::thread::spawn(move || {
                    let mut got = Vec::new();
                    loop {
                        let batch = b
                            .driver()
                            .reserve(&q("many"), 64, LEASE, Duration::from_millis(200))
                            .unwrap();
                        if batch.is_empty() {
                            return got;
                        }
                        let leases: Vec<Lease> = batch.iter().map(|d| d.lease).collect();
                        got.extend(batch.into_iter().map(|d| d.envelope.id));
                        b.driver().complete(&leases).unwrap();
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
        assert!(b.driver().stats().unwrap().is_empty());
    }
}
