//! Outcomes: records stored, read, waited for (a waiter wakes on the write), expired; counters,
//! blobs, and the client reading results through `App`.

use std::time::{Duration, Instant};

use lovage_core::{kinds, Codec, Signature, TaskId, TaskState};

use super::{record, reserve_all, Fixture, LONG, WAKE};
use crate::{App, JoinEntry, ResultRecord, Revoked, Timestamp};

conformance_tests! {
    /// A run cut off past its lease stores its outcome after the rerun stored its own: a record
    /// from an older attempt never replaces a newer one, and an unfinished record never replaces
    /// a finished one; newer records still replace older ones, and a batch is judged record by
    /// record.
    fn a_stale_record_never_replaces_a_newer_one(f: Fixture) {
        let r = f.backend.results();
        let at = |id, state, attempts| ResultRecord {
            attempts,
            ..record(id, state)
        };
        let (id, other) = (TaskId::new(), TaskId::new());
        r.store(&[at(id, TaskState::Started, 1)]).unwrap();
        r.store(&[at(id, TaskState::Success, 2)]).unwrap();
        r.store(&[at(id, TaskState::Failure, 1), at(other, TaskState::Retry, 1)])
            .unwrap();
        let kept = r.get(id).unwrap().unwrap();
        assert_eq!((kept.state, kept.attempts), (TaskState::Success, 2), "older attempt");
        assert_eq!(r.get(other).unwrap().unwrap().state, TaskState::Retry);
        r.store(&[at(id, TaskState::Retry, 2)]).unwrap();
        r.store(&[at(id, TaskState::Started, 3)]).unwrap();
        assert_eq!(
            r.get(id).unwrap().unwrap().state,
            TaskState::Success,
            "unfinished over finished"
        );
        // Later attempts move a record on, finished or not.
        r.store(&[at(other, TaskState::Started, 2)]).unwrap();
        assert_eq!(r.get(other).unwrap().unwrap().state, TaskState::Started);
        r.store(&[at(other, TaskState::Failure, 2)]).unwrap();
        r.store(&[at(other, TaskState::Success, 3)]).unwrap();
        assert_eq!(r.get(other).unwrap().unwrap().state, TaskState::Success);
    }

    fn results_store_get_and_wait(f: Fixture) {
        let r = f.backend.clone();
        let id = TaskId::new();
        assert!(r.results().get(id).unwrap().is_none());
        r.results().store(&[record(id, TaskState::Started)]).unwrap();
        assert_eq!(r.results().get(id).unwrap().unwrap().state, TaskState::Started);
        // A waiter returns what it has when the timeout passes...
        let got = r.results().wait(id, Duration::from_millis(50)).unwrap().unwrap();
        assert_eq!(got.state, TaskState::Started);
        // ...and wakes when another thread stores the final state: soon after the write, long
        // before its own timeout.
        let writer = {
            let r = r.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(100));
                let wrote = Instant::now();
                r.results().store(&[record(id, TaskState::Success)]).unwrap();
                wrote
            })
        };
        let done = r.results().wait(id, LONG).unwrap().unwrap();
        let returned = Instant::now();
        let wrote = writer.join().unwrap();
        assert_eq!(
            (done.state, done.value.as_deref()),
            (TaskState::Success, Some(&b"42"[..]))
        );
        assert!(
            returned.duration_since(wrote) < WAKE,
            "the waiter was not woken by the write: it returned {:?} after it",
            returned.duration_since(wrote)
        );
        let failed = TaskId::new();
        r.results().store(&[record(failed, TaskState::Failure)]).unwrap();
        assert_eq!(r.results().get(failed).unwrap().unwrap().error.unwrap().kind, "Boom");
        let many = r.results().get_many(&[failed, TaskId::new(), id]).unwrap();
        let states: Vec<Option<TaskState>> =
            many.iter().map(|m| m.as_ref().map(|r| r.state)).collect();
        assert_eq!(
            states,
            vec![Some(TaskState::Failure), None, Some(TaskState::Success)]
        );
    }

    /// One waiter on many ids (a futures client's watcher) returns the records of all of them
    /// once any is final, woken by the write rather than by its timeout.
    fn wait_any_wakes_on_any_of_its_ids(f: Fixture) {
        let r = f.backend.clone();
        let ids = [TaskId::new(), TaskId::new(), TaskId::new()];
        r.results().store(&[record(ids[0], TaskState::Started)]).unwrap();
        let states = |recs: &[Option<ResultRecord>]| -> Vec<Option<TaskState>> {
            recs.iter().map(|m| m.as_ref().map(|r| r.state)).collect()
        };
        let got = r.results().wait_any(&ids, Duration::from_millis(50)).unwrap();
        assert_eq!(states(&got), vec![Some(TaskState::Started), None, None]);
        let writer = {
            let r = r.clone();
            let last = ids[2];
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(100));
                let wrote = Instant::now();
                r.results().store(&[record(last, TaskState::Success)]).unwrap();
                wrote
            })
        };
        let got = r.results().wait_any(&ids, LONG).unwrap();
        let returned = Instant::now();
        let wrote = writer.join().unwrap();
        assert_eq!(
            states(&got),
            vec![Some(TaskState::Started), None, Some(TaskState::Success)]
        );
        assert!(
            returned.duration_since(wrote) < WAKE,
            "wait_any was not woken by the write: it returned {:?} after it",
            returned.duration_since(wrote)
        );
        // A final record already there returns at once; no ids, nothing to wait for.
        let got = r.results().wait_any(&ids[1..], LONG).unwrap();
        assert_eq!(states(&got), vec![None, Some(TaskState::Success)]);
        assert!(r.results().wait_any(&[], Duration::from_millis(10)).unwrap().is_empty());
    }

    fn results_expire(f: Fixture) {
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
        // A backend that expires keys itself (Redis) has nothing to purge; any other deletes
        // the expired record, and only it, once.
        let purged = if f.expires_by_itself { 0 } else { 1 };
        assert_eq!(
            r.purge_expired().unwrap(),
            purged,
            "the expired record, once"
        );
        assert_eq!(r.purge_expired().unwrap(), 0, "nothing left to purge");
        assert!(r.get(drop_).unwrap().is_none() && r.get(keep).unwrap().is_some());
    }

    /// A result with a time to live is gone once it passes, purged or not, while one stored
    /// beside it with a longer one is still there; a later record of a task without one is
    /// kept; of two records of one task in one batch, the later wins.
    fn a_result_lasts_its_time_to_live(f: Fixture) {
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
        assert!(
            r.get(short).unwrap().is_none(),
            "gone after its time to live, before any purge"
        );
        let check = |when: &str| {
            let got = r.get(long).unwrap().unwrap_or_else(|| {
                panic!("a record stored beside it with an hour to live is kept ({when})")
            });
            assert_eq!((got.id, got.state), (long, TaskState::Success), "{when}");
            let got = r
                .get(kept)
                .unwrap()
                .unwrap_or_else(|| panic!("a record without expiry is kept ({when})"));
            assert_eq!(
                (got.state, got.expires),
                (TaskState::Success, None),
                "the later record of the batch ({when})"
            );
        };
        check("before a purge");
        // Only `short` has expired: `kept`'s last record has no expiry, `long` an hour.
        let purged = if f.expires_by_itself { 0 } else { 1 };
        assert_eq!(r.purge_expired().unwrap(), purged, "what a purge deletes");
        assert!(r.get(short).unwrap().is_none(), "gone after a purge");
        check("after a purge");
        assert_eq!(
            r.get_many(&[short, long, kept])
                .unwrap()
                .iter()
                .map(|g| g.as_ref().map(|g| g.id))
                .collect::<Vec<_>>(),
            vec![None, Some(long), Some(kept)],
            "get_many agrees"
        );
    }

    fn counters_are_atomic(f: Fixture) {
        let r = f.backend.clone();
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let r = r.clone();
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
        assert_eq!(r.results().incr("chord:x", 0).unwrap(), 400);
        assert_eq!(r.results().incr("chord:x", -400).unwrap(), 0);
    }

    fn blobs_are_kept_by_key(f: Fixture) {
        let r = f.backend.results();
        let key = TaskId::new();
        assert_eq!(r.get_blob(key).unwrap(), None);
        r.put_blob(key, b"one").unwrap();
        r.put_blob(key, b"two").unwrap();
        assert_eq!(r.get_blob(key).unwrap(), Some(b"two".to_vec()));
        assert_eq!(r.get_blob(TaskId::new()).unwrap(), None);
    }

    /// `forget` deletes records now, kept forever or with a time to live, with the join and
    /// blob under the same id; others stay, and an unknown id is skipped.
    fn forgotten_results_are_gone(f: Fixture) {
        let r = f.backend.results();
        let (kept, ttl, other) = (TaskId::new(), TaskId::new(), TaskId::new());
        let with_ttl = ResultRecord {
            expires: Some(Timestamp::now() + Duration::from_secs(3600)),
            ..record(ttl, TaskState::Failure)
        };
        r.store(&[record(kept, TaskState::Success), with_ttl, record(other, TaskState::Success)])
            .unwrap();
        let member = |id, index| JoinEntry { id, index, size: 2, value: b"1" };
        assert_eq!(r.join(&[member(kept, 0), member(other, 0)]).unwrap(), vec![None, None]);
        r.put_blob(kept, b"graph").unwrap();
        r.put_blob(other, b"graph").unwrap();
        assert_eq!(r.forget(&[kept, ttl, TaskId::new()]).unwrap(), 2);
        assert!(r.get(kept).unwrap().is_none());
        assert!(r.get(ttl).unwrap().is_none());
        assert_eq!(r.get_many(&[kept, ttl]).unwrap(), vec![None, None]);
        assert_eq!(r.get_blob(kept).unwrap(), None);
        // The join starts over: its first member went with it.
        assert_eq!(r.join(&[member(kept, 1)]).unwrap(), vec![None]);
        assert_eq!(r.get(other).unwrap().unwrap().state, TaskState::Success);
        assert_eq!(r.get_blob(other).unwrap(), Some(b"graph".to_vec()));
        assert!(r.join(&[member(other, 1)]).unwrap()[0].is_some());
        assert_eq!(r.forget(&[]).unwrap(), 0);
        assert_eq!(r.forget(&[kept]).unwrap(), 0, "forgotten twice");
        // Through the client's handle.
        let app = App::with_backend(f.backend.clone());
        assert!(app.result::<i64>(other).forget().unwrap());
        assert!(r.get(other).unwrap().is_none());
        assert!(!app.result::<i64>(other).forget().unwrap());
    }

    fn the_client_sends_and_reads_results(f: Fixture) {
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
}
