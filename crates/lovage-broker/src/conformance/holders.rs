//! Results shared by two clients: a sender's release keeps a record another client holds
//! (`forget_unshared`), and the last holder forgets it once the sender has released it
//! (`unshare`). See `futures/release.rs`.

use lovage_core::{TaskId, TaskState};

use super::{record, Fixture};
use crate::{holders_dict, Backend, JoinEntry, SENDER_RELEASED};

/// A finished record with a join member and a blob under its id.
fn stored(b: &Backend) -> TaskId {
    let id = TaskId::new();
    let r = b.results();
    r.store(&[record(id, TaskState::Success)]).unwrap();
    assert_eq!(r.join(&[member(id, 0)]).unwrap(), vec![None]);
    r.put_blob(id, b"graph").unwrap();
    id
}

fn member(id: TaskId, index: u32) -> JoinEntry<'static> {
    JoinEntry {
        id,
        index,
        size: 2,
        value: b"1",
    }
}

/// Registers `holder` as a client sharing `id` (what a keyed submit does).
fn hold(b: &Backend, id: TaskId, holder: &[u8]) {
    b.shared()
        .dict_set(&holders_dict(id), &[(holder.to_vec(), Vec::new())])
        .unwrap();
}

/// The keys of `id`'s holders dict, sorted.
fn holders(b: &Backend, id: TaskId) -> Vec<Vec<u8>> {
    let mut keys: Vec<Vec<u8>> = b
        .shared()
        .dict_entries(&holders_dict(id))
        .unwrap()
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    keys.sort();
    keys
}

/// The record and its blob are there.
fn assert_kept(b: &Backend, id: TaskId, what: &str) {
    let r = b.results();
    assert_eq!(
        r.get(id).unwrap().map(|r| r.state),
        Some(TaskState::Success),
        "{what}: record"
    );
    assert_eq!(
        r.get_blob(id).unwrap(),
        Some(b"graph".to_vec()),
        "{what}: blob"
    );
}

/// The record, its blob and its join are all gone.
fn assert_forgotten(b: &Backend, id: TaskId, what: &str) {
    let r = b.results();
    assert!(r.get(id).unwrap().is_none(), "{what}: record");
    assert_eq!(r.get_blob(id).unwrap(), None, "{what}: blob");
    // The join starts over: its first member went with the record.
    assert_eq!(
        r.join(&[member(id, 1)]).unwrap(),
        vec![None],
        "{what}: join"
    );
}

conformance_tests! {
    /// The sender's release keeps a record another client holds, and marks it; a record
    /// nobody else holds goes at once. The last holder to let go then forgets it, with its
    /// join and blob, and the holders dict is cleared.
    fn a_shared_record_outlives_its_senders_release(f: Fixture) {
        let b = &f.backend;
        let (shared, alone) = (stored(b), stored(b));
        hold(b, shared, b"client-b");
        hold(b, shared, b"client-c");
        assert_eq!(b.results().forget_unshared(&[shared, alone]).unwrap(), vec![shared]);
        assert_forgotten(b, alone, "unshared");
        assert_kept(b, shared, "shared, after the sender's release");
        assert_eq!(
            holders(b, shared),
            vec![b"client-b".to_vec(), b"client-c".to_vec(), SENDER_RELEASED.to_vec()]
        );
        // Released twice (a sender's retry): still kept, still marked once.
        assert_eq!(b.results().forget_unshared(&[shared]).unwrap(), vec![shared]);
        assert!(!b.results().unshare(shared, b"client-b").unwrap(), "client-c still holds it");
        assert_kept(b, shared, "one holder left");
        assert!(b.results().unshare(shared, b"client-c").unwrap(), "the last holder forgets");
        assert_forgotten(b, shared, "after the last holder");
        assert!(holders(b, shared).is_empty(), "the holders dict is cleared");
        assert!(b.results().forget_unshared(&[]).unwrap().is_empty());
    }

    /// A release of many ids from three different seconds (the time buckets of Redis's result
    /// hashes), more than one chunk of them, with one shared in the middle: that one is kept
    /// and marked, every other record goes, with its join and blob.
    fn a_release_of_many_ids_over_several_seconds_keeps_only_the_shared_one(f: Fixture) {
        let b = &f.backend;
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        let ids: Vec<TaskId> = (0..1203u16)
            .map(|i| {
                let mut tail = [0u8; 10];
                tail.copy_from_slice(&TaskId::new().as_uuid().as_bytes()[6..]);
                tail[..2].copy_from_slice(&i.to_be_bytes());
                let ms = now_ms - 2_000 + u64::from(i % 3) * 1_000;
                TaskId::from_uuid(uuid::Builder::from_unix_timestamp_millis(ms, &tail).into_uuid())
            })
            .collect();
        let records: Vec<_> = ids.iter().map(|id| record(*id, TaskState::Success)).collect();
        b.results().store(&records).unwrap();
        let (first, shared, last) = (ids[0], ids[601], ids[1202]);
        for id in [first, shared, last] {
            assert_eq!(b.results().join(&[member(id, 0)]).unwrap(), vec![None]);
            b.results().put_blob(id, b"graph").unwrap();
        }
        hold(b, shared, b"client-b");
        assert_eq!(b.results().forget_unshared(&ids).unwrap(), vec![shared]);
        assert_kept(b, shared, "the shared one");
        assert_eq!(
            holders(b, shared),
            vec![b"client-b".to_vec(), SENDER_RELEASED.to_vec()]
        );
        assert_forgotten(b, first, "the first");
        assert_forgotten(b, last, "the last");
        let left = b.results().get_many(&ids).unwrap();
        let left: Vec<TaskId> = ids
            .iter()
            .zip(left)
            .filter_map(|(id, r)| r.map(|_| *id))
            .collect();
        assert_eq!(left, vec![shared], "only the shared record is left");
    }

    /// Holders that let go before the sender's release forget nothing; the sender's release
    /// after all of them left forgets the record as if it had never been shared.
    fn sharers_leaving_first_leave_the_record_to_its_sender(f: Fixture) {
        let b = &f.backend;
        let id = stored(b);
        hold(b, id, b"client-b");
        hold(b, id, b"client-c");
        assert!(!b.results().unshare(id, b"client-b").unwrap());
        assert!(!b.results().unshare(id, b"client-c").unwrap());
        // Letting go twice, or of a task never shared, forgets nothing either.
        assert!(!b.results().unshare(id, b"client-c").unwrap());
        assert_kept(b, id, "before the sender's release");
        assert!(holders(b, id).is_empty(), "the holders dict is cleared");
        assert!(b.results().forget_unshared(&[id]).unwrap().is_empty());
        assert_forgotten(b, id, "after the sender's release");
        assert!(holders(b, id).is_empty());
    }
}
