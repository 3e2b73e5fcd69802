//! What workflows rely on: steps sent once (`enqueue_once`, `ack_and_send_once`), the
//! continuation carried by a task, joins that complete once.

use std::time::{Duration, Instant};

use lovage_core::TaskId;

use super::{env, q, reserve_all, reserve_when_due, Fixture, LEASE};
use crate::{JoinEntry, Lease, ResultStore};

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

conformance_tests! {
    fn enqueue_once_drops_repeats(f: Fixture) {
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

    /// A finished step and the steps it starts: the next steps are sent (each once) and the
    /// leases acked; a repeat of the call (the step ran again) sends nothing new; a stale
    /// lease acks nothing; an empty `next` only acks.
    fn ack_and_send_once_sends_next_steps_once_and_acks(f: Fixture) {
        let b = f.backend.driver();
        let (one, two) = (env("step", 0), env("step", 0));
        b.enqueue(&[one.clone(), two.clone()]).unwrap();
        let held = reserve_all(b, "step", 10);
        assert_eq!(held.len(), 2);
        let (n1, n2) = (env("next", 0), env("next", 3));
        b.complete_and_send(&[held[0].lease], &[n1.clone(), n2.clone()])
            .unwrap();
        let stats = b.stats().unwrap();
        let count = |queue: &str| {
            stats
                .iter()
                .find(|s| s.queue == queue)
                .map(|s| (s.ready, s.scheduled, s.reserved))
        };
        assert_eq!(count("step"), Some((0, 0, 1)), "the first step is acked");
        assert_eq!(count("next"), Some((2, 0, 0)), "its next steps are sent");
        // The same step again (a delivery whose ack was lost) with the same next steps, and
        // the second step starting one of them too: nothing is sent twice.
        b.complete_and_send(&[held[0].lease], &[n1.clone(), n2.clone()])
            .unwrap();
        b.complete_and_send(&[held[1].lease], std::slice::from_ref(&n1))
            .unwrap();
        assert!(
            reserve_all(b, "step", 10).is_empty(),
            "the second step is acked"
        );
        let next = reserve_all(b, "next", 10);
        assert_eq!(
            next.iter().map(|d| d.envelope.id).collect::<Vec<_>>(),
            vec![n2.id, n1.id],
            "each next step once, in priority order"
        );
        assert_eq!(
            (next[1].envelope.task.as_str(), &next[1].envelope.args),
            (n1.task.as_str(), &n1.args)
        );
        // An empty `next` only acks.
        b.complete_and_send(&next.iter().map(|d| d.lease).collect::<Vec<_>>(), &[])
            .unwrap();
        assert!(b.stats().unwrap().is_empty(), "everything acked");
        // Sent once, even after it ran and was acked.
        b.complete_and_send(&[], std::slice::from_ref(&n1)).unwrap();
        assert!(
            reserve_all(b, "next", 10).is_empty(),
            "a next step that ran is not sent again"
        );
    }

    /// A step whose lease ran out and was delivered again: the first worker's late
    /// `ack_and_send_once` does not remove the live delivery (its next steps still go out,
    /// once, as `enqueue_once` sends them).
    fn ack_and_send_once_ignores_a_stale_lease(f: Fixture) {
        let b = f.backend.driver();
        b.enqueue(&[env("stale-step", 0)]).unwrap();
        let first = b
            .reserve(
                &q("stale-step"),
                1,
                Duration::from_millis(200),
                Duration::ZERO,
            )
            .unwrap();
        let again = reserve_when_due(b, "stale-step", Instant::now() + Duration::from_millis(200));
        assert_eq!(again[0].envelope.attempts, 2);
        let next = env("stale-next", 0);
        b.complete_and_send(&[first[0].lease], std::slice::from_ref(&next))
            .unwrap();
        let stats = b.stats().unwrap();
        let step = stats.iter().find(|s| s.queue == "stale-step");
        assert_eq!(
            step.map(|s| s.reserved),
            Some(1),
            "the live delivery is still held"
        );
        assert_eq!(
            b.renew(&[again[0].lease], LEASE).unwrap(),
            Vec::<Lease>::new(),
            "and its lease is still good"
        );
        // The live delivery finishes the same step: its next step is not sent twice.
        b.complete_and_send(&[again[0].lease], std::slice::from_ref(&next))
            .unwrap();
        let sent = reserve_all(b, "stale-next", 10);
        assert_eq!(
            sent.iter().map(|d| d.envelope.id).collect::<Vec<_>>(),
            vec![next.id]
        );
        assert!(reserve_all(b, "stale-step", 10).is_empty());
        b.complete(&[sent[0].lease]).unwrap();
        assert!(b.stats().unwrap().is_empty());
    }

    fn a_workflow_continuation_travels_with_the_task(f: Fixture) {
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

    fn joins_complete_once_every_member_is_in(f: Fixture) {
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

    /// A scope's rise with its send (`enqueue_in_scope`): a member is counted pending and
    /// open before it is in the queue, once whoever spawns it again; with `repair` a member
    /// still pending is reported sent and stays open once (the queue drops the repeat), one
    /// that finished is not. (The default's repair of a rise left half done is tested in
    /// `scope.rs`: SQLite and Redis rise and send at once.)
    fn enqueue_in_scope_counts_each_member_once_before_it_is_sent(f: Fixture) {
        use crate::scope::{dict_all, member_key, ScopeFall};
        let b = f.backend.driver();
        let scope = TaskId::new();
        let all = dict_all(scope);
        let (a, bb, c) = (env("scoped", 0), env("scoped", 0), env("scoped", 0));
        assert_eq!(b.enqueue_in_scope(scope, &[], false).unwrap(), Vec::<bool>::new());
        assert_eq!(
            b.enqueue_in_scope(scope, &[a.clone(), bb.clone()], false).unwrap(),
            vec![true, true]
        );
        let state = |m: &crate::Envelope| b.dict_get(&all, &member_key(m.id)).unwrap();
        assert_eq!(state(&a).as_deref(), Some(&b"p"[..]));
        assert_eq!(b.scope_open(scope).unwrap(), 2);
        // `a` again (found from another page) and a new one: only the new one is counted.
        assert_eq!(
            b.enqueue_in_scope(scope, &[a.clone(), c.clone()], false).unwrap(),
            vec![false, true]
        );
        assert_eq!(b.dict_len(&all).unwrap(), 3);
        assert_eq!(b.scope_open(scope).unwrap(), 3);
        let got = reserve_all(b, "scoped", 10);
        let mut ids: Vec<TaskId> = got.iter().map(|d| d.envelope.id).collect();
        ids.sort();
        let mut want = vec![a.id, bb.id, c.id];
        want.sort();
        assert_eq!(ids, want, "each member sent once");
        // A spawner delivered again: `a` is still pending, so it is "sent" (the queue drops
        // the repeat) and counted open once; once it fell, a repair leaves it alone.
        assert_eq!(b.enqueue_in_scope(scope, std::slice::from_ref(&a), true).unwrap(), vec![true]);
        assert_eq!(b.scope_open(scope).unwrap(), 3, "open once");
        assert!(reserve_all(b, "scoped", 10).is_empty(), "sent once");
        let fell = ScopeFall { scope, member: a.id, ok: true };
        b.store_fall_complete(&[], &[fell], &[], &[]).unwrap();
        assert_eq!(b.enqueue_in_scope(scope, std::slice::from_ref(&a), true).unwrap(), vec![false]);
        assert_eq!(state(&a).as_deref(), Some(&b"d"[..]));
        assert_eq!(b.scope_open(scope).unwrap(), 2);
        // A fall apart from any record (`scope_fall`): once.
        let fell = ScopeFall { scope, member: bb.id, ok: false };
        b.scope_fall(&[fell, fell]).unwrap();
        assert_eq!(state(&bb).as_deref(), Some(&b"f"[..]));
        assert_eq!(b.scope_open(scope).unwrap(), 1);
        // Another scope counts on its own.
        let other = TaskId::new();
        let d = env("scoped", 0);
        assert_eq!(b.enqueue_in_scope(other, std::slice::from_ref(&d), false).unwrap(), vec![true]);
        assert_eq!(b.dict_len(&dict_all(other)).unwrap(), 1);
        assert_eq!((b.scope_open(other).unwrap(), b.scope_open(scope).unwrap()), (1, 1));
        assert_eq!(b.dict_len(&all).unwrap(), 3);
        // Forgotten after its join: nothing counted is left.
        b.scope_forget(scope).unwrap();
        assert_eq!((b.dict_len(&all).unwrap(), b.scope_open(scope).unwrap()), (0, 0));
        assert_eq!(b.scope_open(other).unwrap(), 1, "another scope is untouched");
    }

    /// A finished batch that leaves scopes (`store_fall_complete`): the records are stored,
    /// each member falls (done or failed) and leaves the open set, the leases are completed;
    /// a repeat of the call (a redelivery) changes no member's state, and a member never
    /// counted does not appear.
    fn store_fall_complete_settles_scope_members_once(f: Fixture) {
        use crate::scope::{dict_all, member_key, ScopeFall};
        use lovage_core::TaskState;
        let b = f.backend.driver();
        let scope = TaskId::new();
        let all = dict_all(scope);
        let (a, bb, c) = (env("falls", 0), env("falls", 0), env("falls", 0));
        b.enqueue_in_scope(scope, &[a.clone(), bb.clone(), c.clone()], false)
            .unwrap();
        let got = reserve_all(b, "falls", 10);
        assert_eq!(got.len(), 3);
        let by_id = |id: TaskId| got.iter().find(|d| d.envelope.id == id).unwrap();
        let (da, db) = (by_id(a.id), by_id(bb.id));
        let records = vec![
            super::ResultRecord {
                attempts: da.envelope.attempts,
                ..super::record(a.id, TaskState::Success)
            },
            super::ResultRecord {
                attempts: db.envelope.attempts,
                ..super::record(bb.id, TaskState::Failure)
            },
        ];
        let falls = [
            ScopeFall { scope, member: a.id, ok: true },
            ScopeFall { scope, member: bb.id, ok: false },
        ];
        let leases = [da.lease, db.lease];
        b.store_fall_complete(&records, &falls, &leases, &[]).unwrap();
        let state = |id: TaskId| b.dict_get(&all, &member_key(id)).unwrap();
        assert_eq!(state(a.id).as_deref(), Some(&b"d"[..]));
        assert_eq!(state(bb.id).as_deref(), Some(&b"f"[..]));
        assert_eq!(state(c.id).as_deref(), Some(&b"p"[..]), "c is still running");
        assert_eq!(b.scope_open(scope).unwrap(), 1, "only c is open");
        let stored = b.get_many(&[a.id, bb.id]).unwrap();
        let states: Vec<_> = stored.iter().map(|r| r.as_ref().unwrap().state).collect();
        assert_eq!(states, [TaskState::Success, TaskState::Failure]);
        let left = b.stats().unwrap();
        let reserved: u64 = left.iter().map(|s| s.reserved).sum();
        assert_eq!(reserved, 1, "a and b are completed: {left:?}");
        // Again, as a redelivery would, claiming b succeeded this time: nothing moves.
        let again = [
            ScopeFall { scope, member: bb.id, ok: true },
            ScopeFall { scope, member: TaskId::new(), ok: true },
        ];
        b.store_fall_complete(&[], &again, &leases, &[]).unwrap();
        assert_eq!(state(bb.id).as_deref(), Some(&b"f"[..]), "a member falls once");
        assert_eq!(b.dict_len(&all).unwrap(), 3, "a member never counted stays out");
        assert_eq!(b.scope_open(scope).unwrap(), 1);
        // No falls: the plain store-and-complete.
        let dc = by_id(c.id);
        b.store_fall_complete(
            &[super::ResultRecord {
                attempts: dc.envelope.attempts,
                ..super::record(c.id, TaskState::Success)
            }],
            &[],
            &[dc.lease],
            &[],
        )
        .unwrap();
        assert!(b.stats().unwrap().iter().all(|s| s.reserved == 0));
        assert_eq!(state(c.id).as_deref(), Some(&b"p"[..]), "no fall was asked for");
    }

    /// A parent's held-back children go with its outcome (`spawn_store_fall_complete`): they
    /// are counted and sent, the parent falls, and the scope stays open for them; a child
    /// already counted (found by another parent) is not sent again, and a redelivered parent
    /// (`repair`) sends nothing twice.
    fn spawn_store_fall_complete_sends_children_before_the_parent_falls(f: Fixture) {
        use crate::scope::{dict_all, member_key, ScopeFall};
        use crate::ScopeSpawn;
        use lovage_core::TaskState;
        let b = f.backend.driver();
        let scope = TaskId::new();
        let all = dict_all(scope);
        let (p, x, y) = (env("spawns", 0), env("spawns", 0), env("spawns", 0));
        b.enqueue_in_scope(scope, &[p.clone(), y.clone()], false).unwrap();
        let got = reserve_all(b, "spawns", 10);
        assert_eq!(got.len(), 2);
        let dp = got.iter().find(|d| d.envelope.id == p.id).unwrap();
        let dy = got.iter().find(|d| d.envelope.id == y.id).unwrap();
        let settle = |repair: bool| {
            b.spawn_store_fall_complete(
                &[ScopeSpawn { scope, children: vec![x.clone(), y.clone()], repair }],
                &[super::ResultRecord {
                    attempts: dp.envelope.attempts,
                    ..super::record(p.id, TaskState::Success)
                }],
                &[ScopeFall { scope, member: p.id, ok: true }],
                &[dp.lease],
                &[],
            )
            .unwrap()
        };
        settle(false);
        let state = |id: TaskId| b.dict_get(&all, &member_key(id)).unwrap();
        assert_eq!(state(p.id).as_deref(), Some(&b"d"[..]), "the parent fell");
        assert_eq!(state(x.id).as_deref(), Some(&b"p"[..]), "its new child rose");
        assert_eq!(b.scope_open(scope).unwrap(), 2, "x and y are open: the scope is not done");
        assert_eq!(
            b.get(p.id).unwrap().map(|r| r.state),
            Some(TaskState::Success)
        );
        let sent = reserve_all(b, "spawns", 10);
        let ids: Vec<TaskId> = sent.iter().map(|d| d.envelope.id).collect();
        assert_eq!(ids, vec![x.id], "only the new child is sent; y was counted before");
        // The parent delivered again settles again: nothing is sent or counted twice.
        settle(true);
        assert!(reserve_all(b, "spawns", 10).is_empty(), "sent once");
        assert_eq!(b.dict_len(&all).unwrap(), 3);
        assert_eq!(b.scope_open(scope).unwrap(), 2);
        b.complete(&[dy.lease, sent[0].lease]).unwrap();
    }
}
