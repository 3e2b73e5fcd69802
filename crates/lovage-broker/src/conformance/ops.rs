//! What operators read and ask of a broker: the task index and counts, paused queues, the
//! event stream and the control mailbox.

use std::time::Duration;

use lovage_core::{TaskId, TaskState};

use super::{env, record, reserve_all, Fixture, LEASE};
use crate::ops::{ControlRequest, Event, EventKind, TaskQuery};
use crate::{BrokerError, Timestamp};

/// Every id of a listing, following its cursors to the end (bounded).
fn list_all(b: &dyn crate::Driver, mut q: TaskQuery) -> Vec<TaskId> {
    let mut ids = Vec::new();
    for _ in 0..100 {
        let page = b.list_tasks(&q).unwrap();
        assert!(page.items.len() <= q.page_size(), "{page:?}");
        ids.extend(page.items.iter().map(|s| s.id));
        match page.next_cursor {
            Some(c) => q.cursor = Some(c),
            None => return ids,
        }
    }
    panic!("a listing did not end in 100 pages");
}

fn in_queue(queue: &str) -> TaskQuery {
    TaskQuery {
        queue: Some(queue.into()),
        ..Default::default()
    }
}

conformance_tests! {
    fn tasks_are_listed_newest_first_in_keyset_pages(f: Fixture) {
        let b = f.backend.driver();
        let mut sent = Vec::new();
        for _ in 0..5 {
            let e = env("ops-list", 0);
            b.enqueue(std::slice::from_ref(&e)).unwrap();
            sent.push(e.id);
        }
        b.enqueue(&[env("ops-other", 0)]).unwrap();
        let mut q = in_queue("ops-list");
        q.limit = 2;
        let first = b.list_tasks(&q).unwrap();
        assert_eq!(first.items.len(), 2);
        assert!(first.next_cursor.is_some());
        let ids = list_all(b, q);
        let mut newest_first = sent.clone();
        newest_first.reverse();
        assert_eq!(ids, newest_first, "every task once, newest first");
        let all = list_all(b, TaskQuery::default());
        assert_eq!(all.len(), 6, "no filter lists both queues");
        let summary = &b.list_tasks(&in_queue("ops-list")).unwrap().items[0];
        assert_eq!(summary.name, "conformance.task");
        assert_eq!(summary.state, TaskState::Pending);
        assert_eq!(summary.queue.as_deref(), Some("ops-list"));
        assert_eq!(summary.args_preview.as_deref(), Some("[1]"));
    }

    fn a_bad_cursor_is_refused_with_a_reason(f: Fixture) {
        let b = f.backend.driver();
        for bad in ["", "garbage", "t123", "tnot-a-uuid-at-all"] {
            let q = TaskQuery { cursor: Some(bad.into()), ..Default::default() };
            match b.list_tasks(&q) {
                Err(BrokerError::BadRequest { what: "cursor", reason }) => {
                    assert!(reason.contains(bad), "{reason}")
                }
                other => panic!("cursor {bad:?}: {other:?}"),
            }
        }
    }

    fn the_index_follows_a_task_through_its_life(f: Fixture) {
        let b = f.backend.driver();
        let (a, c) = (env("ops-life", 0), env("ops-life", 0));
        b.enqueue(&[a.clone(), c.clone()]).unwrap();
        let state_of = |id| b.task_info(id).unwrap().expect("known").summary.state;
        assert_eq!(state_of(a.id), TaskState::Pending);
        let got = reserve_all(b, "ops-life", 1);
        assert_eq!(got[0].envelope.id, a.id);
        assert_eq!(state_of(a.id), TaskState::Received);
        let info = b.task_info(a.id).unwrap().unwrap();
        assert_eq!(info.envelope.as_ref().map(|e| e.id), Some(a.id));
        let mut done = record(a.id, TaskState::Success);
        done.started = Some(Timestamp::from_millis(done.updated.as_millis() - 250));
        b.store_and_complete(&[done], &[got[0].lease]).unwrap();
        let info = b.task_info(a.id).unwrap().unwrap();
        assert_eq!(info.summary.state, TaskState::Success);
        assert_eq!(info.summary.runtime_ms, Some(250));
        assert_eq!(info.summary.worker.as_deref(), Some("w1"));
        assert_eq!(info.summary.queue.as_deref(), Some("ops-life"), "kept after it left the queue");
        assert_eq!(info.record.map(|r| r.state), Some(TaskState::Success));
        let only = |state| {
            let q = TaskQuery { state: Some(state), ..in_queue("ops-life") };
            list_all(b, q)
        };
        assert_eq!(only(TaskState::Success), vec![a.id]);
        assert_eq!(only(TaskState::Pending), vec![c.id]);
        let by_worker = TaskQuery { worker: Some("w1".into()), ..Default::default() };
        assert_eq!(list_all(b, by_worker), vec![a.id]);
        let by_name = TaskQuery { name: Some("no.such.task".into()), ..Default::default() };
        assert!(list_all(b, by_name).is_empty());
        assert!(b.task_info(TaskId::new()).unwrap().is_none());
    }

    fn tasks_are_listed_by_when_they_were_sent(f: Fixture) {
        let b = f.backend.driver();
        let e = env("ops-time", 0);
        b.enqueue(std::slice::from_ref(&e)).unwrap();
        let t = e.created.as_millis();
        let window = |since: i64, until: i64| TaskQuery {
            since: Some(Timestamp::from_millis(since)),
            until: Some(Timestamp::from_millis(until)),
            ..in_queue("ops-time")
        };
        assert_eq!(list_all(b, window(t - 1000, t + 1000)), vec![e.id]);
        assert!(list_all(b, window(t + 1000, t + 2000)).is_empty());
        assert!(list_all(b, window(t - 2000, t - 1000)).is_empty());
    }

    fn counts_follow_a_task_s_changes_once_each(f: Fixture) {
        let b = f.backend.driver();
        let before = b.task_counts().unwrap();
        let tasks: Vec<_> = (0..4).map(|_| env("ops-count", 0)).collect();
        b.enqueue(&tasks).unwrap();
        let got = reserve_all(b, "ops-count", 2);
        let ok = record(got[0].envelope.id, TaskState::Success);
        b.store_and_complete(std::slice::from_ref(&ok), &[got[0].lease]).unwrap();
        // A repeated store after a lost reply is not a second success.
        b.store(std::slice::from_ref(&ok)).unwrap();
        b.retry(&got[1].lease, Duration::from_secs(60)).unwrap();
        b.revoke(tasks[3].id).unwrap();
        let now = b.task_counts().unwrap();
        assert_eq!(now.sent - before.sent, 4, "{now:?}");
        assert_eq!(now.succeeded - before.succeeded, 1, "{now:?}");
        assert_eq!(now.retried - before.retried, 1, "{now:?}");
        assert_eq!(now.revoked - before.revoked, 1, "{now:?}");
        assert_eq!(now.failed - before.failed, 0, "{now:?}");
        assert_eq!((now.pending, now.scheduled, now.reserved), (1, 1, 0), "{now:?}");
        let failed = record(tasks[2].id, TaskState::Failure);
        b.store(&[failed]).unwrap();
        assert_eq!(b.task_counts().unwrap().failed - before.failed, 1);
    }

    fn dead_letters_are_discarded_by_task_id(f: Fixture) {
        let b = f.backend.driver();
        let err = lovage_core::TaskError::new("ValueError", "bad input");
        let (a, c, kept) = (env("ops-dead", 0), env("ops-dead", 0), env("ops-dead", 0));
        // `a` failed twice (retried from its letter, failed again): two letters.
        for e in [&a, &a, &c, &kept] {
            b.bury(e, &err).unwrap();
        }
        // One held task dead-lettered through its lease, so the live counts move too.
        let held = env("ops-dead", 0);
        b.enqueue(std::slice::from_ref(&held)).unwrap();
        let d = reserve_all(b, "ops-dead", 1);
        b.discard(&d[0].lease, &d[0].envelope, &err).unwrap();
        let counts = b.task_counts().unwrap();
        let dead_in = |b: &dyn crate::Driver| {
            b.queues().unwrap().iter().find(|q| q.name == "ops-dead").map_or(0, |q| q.dead)
        };
        assert_eq!(dead_in(b), 5);
        assert_eq!(b.discard_dead(&[a.id, c.id, held.id]).unwrap(), 4);
        let left: Vec<TaskId> = b
            .dead_letters(100)
            .unwrap()
            .iter()
            .filter(|d| d.envelope.queue == "ops-dead")
            .map(|d| d.envelope.id)
            .collect();
        assert_eq!(left, vec![kept.id], "only the letter not named stays");
        assert_eq!(dead_in(b), 1);
        assert_eq!(b.discard_dead(&[a.id, TaskId::new()]).unwrap(), 0, "nothing left to discard");
        assert_eq!(b.discard_dead(&[]).unwrap(), 0);
        assert_eq!(b.task_counts().unwrap(), counts, "counts are about tasks, not letters");
        assert!(b.stats().unwrap().iter().all(|s| s.queue != "ops-dead"), "no task left");
    }

    fn deleting_drops_waiting_and_finished_tasks_but_not_held_ones(f: Fixture) {
        let b = f.backend.driver();
        let (done, held) = (env("ops-del", 0), env("ops-del", 0));
        b.enqueue(&[done.clone(), held.clone()]).unwrap();
        let got = reserve_all(b, "ops-del", 2);
        assert_eq!(got.len(), 2);
        let finished = record(done.id, TaskState::Success);
        b.store_and_complete(&[finished], &[got[0].lease]).unwrap();
        let ready = env("ops-del", 0);
        let mut later = env("ops-del", 0);
        later.eta = Some(Timestamp::from_millis(Timestamp::now().as_millis() + 60_000));
        b.enqueue(&[ready.clone(), later.clone()]).unwrap();
        let before = b.task_counts().unwrap();
        assert_eq!((before.pending, before.scheduled, before.reserved), (1, 1, 1), "{before:?}");
        let unknown = TaskId::new();
        let mut gone = b.delete_tasks(&[ready.id, later.id, held.id, done.id, unknown]).unwrap();
        gone.sort();
        let mut want = vec![ready.id, later.id, done.id];
        want.sort();
        assert_eq!(gone, want, "the held task and the unknown id are not deleted");
        for id in [ready.id, later.id, done.id] {
            assert!(b.task_info(id).unwrap().is_none(), "{id} is gone from the index");
            assert!(b.get(id).unwrap().is_none(), "{id}'s record is gone");
        }
        assert_eq!(list_all(b, in_queue("ops-del")), vec![held.id], "only the held task is listed");
        assert!(b.peek("ops-del", 10).unwrap().is_empty(), "nothing waits");
        let after = b.task_counts().unwrap();
        assert_eq!((after.pending, after.scheduled, after.reserved), (0, 0, 1), "{after:?}");
        assert_eq!(
            (after.sent, after.succeeded),
            (before.sent, before.succeeded),
            "totals count what happened"
        );
        let info = b.task_info(held.id).unwrap().expect("the held task stays");
        assert_eq!(info.summary.state, TaskState::Received);
        b.store_and_complete(&[record(held.id, TaskState::Success)], &[got[1].lease]).unwrap();
        assert_eq!(b.get(held.id).unwrap().map(|r| r.state), Some(TaskState::Success));
        assert!(b.delete_tasks(&[ready.id, later.id]).unwrap().is_empty(), "deleted once");
        assert!(b.delete_tasks(&[]).unwrap().is_empty());
        assert_eq!(b.delete_tasks(&[held.id]).unwrap(), vec![held.id], "finished now");
        assert!(list_all(b, in_queue("ops-del")).is_empty());
    }

    fn a_paused_queue_is_not_delivered_until_resumed(f: Fixture) {
        let b = f.backend.driver();
        b.pause("ops-paused").unwrap();
        b.pause("ops-paused").unwrap();
        let e = env("ops-paused", 0);
        b.enqueue(std::slice::from_ref(&e)).unwrap();
        b.enqueue(&[env("ops-open", 0)]).unwrap();
        assert_eq!(b.paused().unwrap(), vec!["ops-paused".to_owned()]);
        let both = vec!["ops-paused".to_owned(), "ops-open".to_owned()];
        let got = b.reserve(&both, 10, LEASE, Duration::ZERO).unwrap();
        assert_eq!(got.len(), 1, "only the open queue delivers");
        assert_eq!(got[0].envelope.queue, "ops-open");
        let peeked = b.peek("ops-paused", 10).unwrap();
        assert_eq!(peeked.iter().map(|e| e.id).collect::<Vec<_>>(), vec![e.id]);
        let info = b.queues().unwrap();
        let paused = info.iter().find(|q| q.name == "ops-paused").expect("listed");
        assert!(paused.paused && paused.ready == 1, "{paused:?}");
        let open = info.iter().find(|q| q.name == "ops-open").expect("listed");
        assert!(!open.paused && open.reserved == 1, "{open:?}");
        b.resume("ops-paused").unwrap();
        assert!(b.paused().unwrap().is_empty());
        let got = reserve_all(b, "ops-paused", 10);
        assert_eq!(got.len(), 1, "resumed");
        assert!(b.peek("ops-paused", 10).unwrap().is_empty(), "a reserved task is not waiting");
    }

    fn events_are_numbered_in_order_and_read_in_pages(f: Fixture) {
        let b = f.backend.driver();
        let empty = b.read_events(0, 10).unwrap();
        assert!(empty.events.is_empty() && empty.last_seq == 0, "{empty:?}");
        let mut sent = Event::new(EventKind::TaskSent);
        sent.task_id = Some(TaskId::new());
        sent.name = Some("conformance.task".into());
        sent.queue = Some("ops-events".into());
        let mut done = Event::new(EventKind::TaskSucceeded);
        done.task_id = sent.task_id;
        done.state = Some(TaskState::Success);
        done.runtime_ms = Some(12);
        done.worker = Some("w1".into());
        b.publish(&[sent.clone(), done.clone()]).unwrap();
        b.publish(&[Event::new(EventKind::WorkerHeartbeat)]).unwrap();
        let all = b.read_events(0, 10).unwrap();
        let seqs: Vec<u64> = all.events.iter().map(|e| e.seq).collect();
        assert_eq!(seqs.len(), 3);
        assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "dense: {seqs:?}");
        assert_eq!(all.last_seq, seqs[2]);
        assert_eq!(all.oldest_seq, seqs[0]);
        assert!(!all.missed(0) && !all.missed(seqs[0]));
        let read = &all.events[1];
        assert_eq!((read.kind, read.task_id, read.runtime_ms), (done.kind, done.task_id, Some(12)));
        assert_eq!(read.worker.as_deref(), Some("w1"));
        assert_eq!(all.events[0].queue.as_deref(), Some("ops-events"));
        let rest = b.read_events(seqs[0], 1).unwrap();
        assert_eq!(rest.events.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![seqs[1]]);
        assert!(b.read_events(seqs[2], 10).unwrap().events.is_empty());
    }

    fn an_app_publishes_task_sent_only_when_asked(f: Fixture) {
        let quiet = crate::App::with_backend(f.backend.clone());
        assert!(!quiet.sends_sent_events(), "off by default");
        let before = f.backend.events().read_events(0, 1).unwrap().last_seq;
        let sig = |q: &str| {
            let mut s = lovage_core::Signature::new("conformance.task", &[1], lovage_core::Codec::Json)
                .unwrap();
            s.options.queue = Some(q.into());
            s
        };
        quiet.send_signature(sig("ops-sent")).unwrap();
        assert!(f.backend.events().read_events(before, 10).unwrap().events.is_empty());
        let loud = quiet.sent_events(true);
        let one = loud.send_signature(sig("ops-sent")).unwrap();
        let many = loud.send_batch([sig("ops-sent"), sig("ops-sent-2")]).unwrap();
        let events = f.backend.events().read_events(before, 10).unwrap().events;
        let told: Vec<_> = events.iter().map(|e| (e.kind, e.task_id.unwrap())).collect();
        let want: Vec<_> = [one, many[0], many[1]].into_iter().map(|id| (EventKind::TaskSent, id)).collect();
        assert_eq!(told, want, "one task-sent per task sent, in order");
        assert_eq!(events[2].queue.as_deref(), Some("ops-sent-2"));
        assert_eq!(events[0].name.as_deref(), Some("conformance.task"));
        assert_eq!(events[0].state, Some(TaskState::Pending));
        // Each event tells of a task the broker holds.
        assert_eq!(f.backend.driver().peek("ops-sent", 10).unwrap().len(), 3);
    }

    fn a_finished_batch_and_its_events_land_together(f: Fixture) {
        let b = f.backend.driver();
        let e = env("ops-finish", 0);
        b.enqueue(std::slice::from_ref(&e)).unwrap();
        let got = reserve_all(b, "ops-finish", 1);
        let mut ev = Event::new(EventKind::TaskSucceeded);
        ev.task_id = Some(e.id);
        let last = b.read_events(0, 1).unwrap().last_seq;
        b.store_complete_publish(&[record(e.id, TaskState::Success)], &[got[0].lease], &[ev])
            .unwrap();
        let after = b.read_events(last, 10).unwrap();
        assert_eq!(after.events.len(), 1);
        assert_eq!(after.events[0].task_id, Some(e.id));
        assert_eq!(b.get(e.id).unwrap().map(|r| r.state), Some(TaskState::Success));
        assert!(b.peek("ops-finish", 1).unwrap().is_empty());
        assert_eq!(b.task_counts().unwrap().reserved, 0, "completed");
    }

    fn control_requests_reach_each_worker_once_and_replies_come_back(f: Fixture) {
        let b = f.backend.driver();
        let req = ControlRequest::new("ping", serde_json::Value::Null, "conformance");
        let to = vec!["w1@h.1".to_owned(), "w2@h.2".to_owned()];
        b.send_control(&to, &req).unwrap();
        let took = b.take_control("w1@h.1").unwrap();
        assert_eq!(took, vec![req.clone()]);
        assert!(b.take_control("w1@h.1").unwrap().is_empty(), "taken once");
        assert!(b.take_control("w3@h.3").unwrap().is_empty(), "not sent to w3");
        assert!(b.replies(&req.id).unwrap().is_empty());
        b.reply(&req.id, "w1@h.1", &serde_json::json!({"ok": "pong"})).unwrap();
        b.reply(&req.id, "w2@h.2", &serde_json::json!({"ok": "pong"})).unwrap();
        let replies = b.replies(&req.id).unwrap();
        let from: Vec<&str> = replies.iter().map(|r| r.worker.as_str()).collect();
        assert_eq!(from, ["w1@h.1", "w2@h.2"]);
        assert_eq!(replies[0].reply["ok"], "pong");
        let mut stale = ControlRequest::new("stats", serde_json::Value::Null, "conformance");
        stale.expires = Timestamp::from_millis(Timestamp::now().as_millis() - 1);
        b.send_control(&to[..1], &stale).unwrap();
        assert!(b.take_control("w1@h.1").unwrap().is_empty(), "an expired request is dropped");
    }
}
