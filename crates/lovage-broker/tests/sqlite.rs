//! What only the SQLite backend promises: one file, several processes, refusing files that are
//! not lovage's, keeping what was enqueued.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr,
    clippy::undocumented_unsafe_blocks
)] // tests panic to fail and print what they saw

use std::path::Path;
use std::time::Duration;

use lovage_broker::ops::{Event, EventKind};
use lovage_broker::sqlite::SqliteBackend;
use lovage_broker::{connect, Broker, BrokerError, Envelope, Events, JoinEntry, ResultStore};
use lovage_core::{Codec, Signature, TaskId};

fn env() -> Envelope {
    Envelope::from_signature(Signature::new("t", &[1], Codec::Json).unwrap())
}

fn default_queue() -> Vec<String> {
    vec!["default".to_owned()]
}

#[test]
fn enqueued_tasks_survive_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("b.db");
    let sent: Vec<Envelope> = (0..100).map(|_| env()).collect();
    {
        let b = SqliteBackend::open(&path).unwrap();
        b.enqueue(&sent).unwrap();
    }
    let b = SqliteBackend::open(&path).unwrap();
    let got = b
        .reserve(
            &default_queue(),
            1000,
            Duration::from_secs(60),
            Duration::ZERO,
        )
        .unwrap();
    assert_eq!(got.len(), 100);
    assert_eq!(got[0].envelope, {
        let mut e = sent[0].clone();
        e.attempts = 1;
        e
    });
}

#[test]
fn a_file_that_is_not_sqlite_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notes.txt");
    let text = "these are my notes, not a database\n".repeat(200);
    std::fs::write(&path, &text).unwrap();
    let err = SqliteBackend::open(&path).err().expect("refused");
    assert!(matches!(err, BrokerError::NotLovage { .. }), "{err}");
    assert!(
        err.to_string().contains("notes.txt"),
        "names the file: {err}"
    );
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        text,
        "the file is untouched"
    );
}

#[test]
fn another_programs_database_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.db");
    let other = rusqlite::Connection::open(&path).unwrap();
    other
        .execute_batch("CREATE TABLE customers (id INTEGER); INSERT INTO customers VALUES (1);")
        .unwrap();
    drop(other);
    let err = SqliteBackend::open(&path).err().expect("refused");
    assert!(err.to_string().contains("refusing to touch it"), "{err}");
    let check = rusqlite::Connection::open(&path).unwrap();
    let n: i64 = check
        .query_row("SELECT count(*) FROM customers", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 1);
}

#[test]
fn a_newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("new.db");
    drop(SqliteBackend::open(&path).unwrap());
    let c = rusqlite::Connection::open(&path).unwrap();
    c.pragma_update(None, "user_version", 99).unwrap();
    drop(c);
    let err = SqliteBackend::open(&path).err().expect("refused");
    assert!(err.to_string().contains("newer"), "{err}");
}

#[test]
fn a_missing_directory_is_a_clear_error() {
    let err = connect("sqlite:///nonexistent-dir-for-lovage/x/broker.db").expect_err("fails");
    assert!(
        err.to_string().contains("nonexistent-dir-for-lovage"),
        "{err}"
    );
}

#[test]
fn two_connections_share_the_queue_and_wake_each_other() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shared.db");
    let producer = SqliteBackend::open(&path).unwrap();
    let consumer = SqliteBackend::open(&path).unwrap();
    let sent = env();
    let id = sent.id;
    let waiter = std::thread::spawn(move || {
        consumer
            .reserve(
                &default_queue(),
                1,
                Duration::from_secs(60),
                Duration::from_secs(30),
            )
            .unwrap()
    });
    std::thread::sleep(Duration::from_millis(100));
    producer.enqueue(&[sent]).unwrap();
    let got = waiter.join().unwrap();
    assert_eq!(
        got.len(),
        1,
        "the waiting reserve saw the other connection's commit"
    );
    assert_eq!(got[0].envelope.id, id);
}

#[test]
fn bad_urls_say_what_is_wrong() {
    for (url, needle) in [
        ("lovage.db", "scheme://"),
        ("postgres://x", "unknown backend"),
        ("sqlite://", "no file path"),
    ] {
        let err = connect(url).expect_err("refused");
        assert!(err.to_string().contains(needle), "{url}: {err}");
    }
}

#[test]
fn a_full_disk_is_a_clear_error_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("full.db");
    let b = SqliteBackend::open(&path).unwrap();
    let kept: Vec<Envelope> = (0..10).map(|_| env()).collect();
    b.enqueue(&kept).unwrap();
    let pages: u64 = rusqlite::Connection::open(&path)
        .unwrap()
        .query_row("PRAGMA page_count", [], |r| r.get(0))
        .unwrap();
    b.limit_pages(pages + 2).unwrap();
    let big: Vec<Envelope> = (0..5000).map(|_| env()).collect();
    let err = b.enqueue(&big).expect_err("the database is full");
    let text = err.to_string();
    assert!(
        text.contains("full") && text.contains("enqueue") && text.contains("full.db"),
        "{text}"
    );
    // The failed batch left nothing half-written; what was there is intact.
    let got = b
        .reserve(
            &default_queue(),
            10_000,
            Duration::from_secs(60),
            Duration::ZERO,
        )
        .unwrap();
    let ids: Vec<_> = got.iter().map(|d| d.envelope.id).collect();
    assert_eq!(ids, kept.iter().map(|e| e.id).collect::<Vec<_>>());
}

/// Makes a current file look like one of schema `version`: what later versions added is dropped.
fn downgrade(path: &std::path::Path, version: i32) {
    let c = rusqlite::Connection::open(path).unwrap();
    if version < 8 {
        // Version 8 added the worker a task is queued for.
        c.execute_batch("DROP INDEX tasks_affine; ALTER TABLE tasks DROP COLUMN affinity;")
            .unwrap();
    }
    if version < 7 {
        // Version 7 numbers events from the newest `events` row; 6 kept the last number in
        // `meta`.
        c.execute_batch(
            "INSERT INTO meta (key, value) VALUES ('events', \
             (SELECT coalesce(max(last), 0) FROM events));",
        )
        .unwrap();
    }
    if version < 6 {
        // Version 6 added the per-queue counts.
        c.execute_batch("DELETE FROM counters WHERE key LIKE 'lovage:count:live:%';")
            .unwrap();
    }
    if version < 5 {
        // Version 5 added shared dicts and lists.
        c.execute_batch("DROP TABLE shared_dicts; DROP TABLE shared_lists;")
            .unwrap();
    }
    if version < 4 {
        // Version 4 added the operators' columns and tables.
        c.execute_batch(
            "DROP INDEX results_state; DROP INDEX dead_letters_id; \
             ALTER TABLE tasks DROP COLUMN received; ALTER TABLE results DROP COLUMN queue; \
             ALTER TABLE results DROP COLUMN preview; ALTER TABLE results DROP COLUMN received; \
             DROP TABLE paused; DROP TABLE events; DROP TABLE control; DROP TABLE control_replies; \
             DELETE FROM counters;",
        )
        .unwrap();
    }
    if version < 3 {
        // Version 3 added fencing tokens and the purge indexes.
        c.execute_batch("ALTER TABLE tasks DROP COLUMN fence; DROP TABLE meta;")
            .unwrap();
        for name in V3_INDEX_NAMES {
            c.execute_batch(&format!("DROP INDEX {name}")).unwrap();
        }
    }
    if version < 2 {
        // Version 2 added workflows.
        c.execute_batch(
            "ALTER TABLE tasks DROP COLUMN flow; DROP TABLE sent_once; DROP TABLE joins; \
             DROP TABLE join_counts; DROP TABLE blobs; DROP TABLE locks; DROP TABLE rate_limits;",
        )
        .unwrap();
    }
    c.pragma_update(None, "user_version", version).unwrap();
}

#[test]
fn databases_of_older_schemas_are_upgraded_in_place() {
    for old in [1, 2, 3, 4, 5, 6, 7] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.db");
        let waiting = env();
        let events = |n: usize| -> Vec<Event> {
            (0..n)
                .map(|_| Event::new(EventKind::WorkerHeartbeat))
                .collect()
        };
        {
            let b = SqliteBackend::open(&path).unwrap();
            b.enqueue(std::slice::from_ref(&waiting)).unwrap();
            b.publish(&events(3)).unwrap();
        }
        downgrade(&path, old);
        let b = SqliteBackend::open(&path).unwrap();
        assert_eq!(schema_version(&path), 8, "from version {old}");
        b.publish(&events(2)).unwrap();
        let seqs: Vec<u64> = b
            .read_events(0, 100)
            .unwrap()
            .events
            .iter()
            .map(|e| e.seq)
            .collect();
        let numbered_on = if old >= 4 {
            vec![1, 2, 3, 4, 5]
        } else {
            vec![1, 2]
        };
        assert_eq!(
            seqs, numbered_on,
            "from version {old}: numbers go on from the rows"
        );
        let meta_events: i64 = rusqlite::Connection::open(&path)
            .unwrap()
            .query_row("SELECT count(*) FROM meta WHERE key = 'events'", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(
            meta_events, 0,
            "from version {old}: the old counter row is gone"
        );
        use lovage_broker::Admin;
        let depth = |b: &SqliteBackend| {
            b.stats()
                .unwrap()
                .iter()
                .map(|s| (s.queue.clone(), s.ready, s.reserved))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            depth(&b),
            vec![("default".to_owned(), 1, 0)],
            "from version {old}: the queue's count starts from the tasks there"
        );
        use lovage_broker::SharedState;
        b.dict_set("upgraded", &[(b"k".to_vec(), b"v".to_vec())])
            .unwrap();
        assert_eq!(b.list_push("upgraded", &[b"x".to_vec()], false).unwrap(), 1);
        assert_eq!(purge_indexes(&path), V3_INDEX_NAMES, "from version {old}");
        b.enqueue_once(&[env()]).unwrap();
        let got = b
            .reserve(
                &default_queue(),
                10,
                Duration::from_secs(60),
                Duration::ZERO,
            )
            .unwrap();
        assert_eq!(
            got.len(),
            2,
            "from version {old}: the old task is still there and a new one joined it"
        );
        assert!(got.iter().any(|d| d.envelope.id == waiting.id));
        use lovage_broker::Inspect;
        let counts = b.task_counts().unwrap();
        assert_eq!(
            (counts.pending, counts.reserved),
            (0, 2),
            "from version {old}: the live count starts from the tasks there"
        );
        assert_eq!(
            depth(&b),
            vec![("default".to_owned(), 0, 2)],
            "from version {old}"
        );
        let leases: Vec<_> = got.iter().map(|d| d.lease).collect();
        b.complete(&leases).unwrap();
        assert_eq!(depth(&b), Vec::new(), "from version {old}");
        assert!(b
            .reserve(
                &default_queue(),
                10,
                Duration::from_secs(60),
                Duration::ZERO
            )
            .unwrap()
            .is_empty());
    }
}

/// The indexes schema version 3 added, by name.
const V3_INDEX_NAMES: [&str; 5] = [
    "blobs_until",
    "join_counts_until",
    "joins_until",
    "revoked_at",
    "sent_once_until",
];

fn schema_version(path: &Path) -> i32 {
    rusqlite::Connection::open(path)
        .unwrap()
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap()
}

/// Which of the schema-3 indexes the file has, sorted.
fn purge_indexes(path: &Path) -> Vec<String> {
    let c = rusqlite::Connection::open(path).unwrap();
    let mut q = c
        .prepare("SELECT name FROM sqlite_master WHERE type = 'index' AND name IN (?1, ?2, ?3, ?4, ?5) ORDER BY name")
        .unwrap();
    q.query_map(V3_INDEX_NAMES, |r| r.get(0))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap()
}

/// Fills each table `purge_expired` empties with `n` rows that expired long ago, plus one
/// row per table that has not.
fn fill_expired(path: &Path, n: usize) {
    let c = rusqlite::Connection::open(path).unwrap();
    c.busy_timeout(Duration::from_secs(10)).unwrap();
    let far = i64::MAX / 2;
    c.execute_batch(&format!(
        "WITH RECURSIVE k(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM k WHERE i < {n})
         INSERT INTO sent_once (id, until) SELECT 'o' || i, 1 FROM k;
         WITH RECURSIVE k(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM k WHERE i < {n})
         INSERT INTO joins (id, idx, value, until) SELECT 'j' || (i / 3), i, x'00', 1 FROM k;
         INSERT OR IGNORE INTO join_counts (id, n, until) SELECT id, 1, 1 FROM joins;
         WITH RECURSIVE k(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM k WHERE i < {n})
         INSERT INTO blobs (id, value, until) SELECT 'b' || i, x'00', 1 FROM k;
         WITH RECURSIVE k(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM k WHERE i < {n})
         INSERT INTO revoked (id, at) SELECT 'r' || i, 1 FROM k;
         WITH RECURSIVE k(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM k WHERE i < {n})
         INSERT INTO results (id, task, state, codec, attempts, updated, expires)
             SELECT 'x' || i, 't', 'SUCCESS', 'json', 1, 1, 1 FROM k;
         INSERT OR REPLACE INTO sent_once (id, until) VALUES ('live', {far});
         INSERT OR REPLACE INTO joins (id, idx, value, until) VALUES ('live', 0, x'00', {far});
         INSERT OR REPLACE INTO join_counts (id, n, until) VALUES ('live', 1, {far});
         INSERT OR REPLACE INTO blobs (id, value, until) VALUES ('live', x'00', {far});
         INSERT OR REPLACE INTO revoked (id, at) VALUES ('live', {far});
         INSERT OR REPLACE INTO results (id, task, state, codec, attempts, updated, expires)
             VALUES ('live', 't', 'SUCCESS', 'json', 1, 1, {far});"
    ))
    .unwrap();
}

/// Rows per table that `purge_expired` empties.
fn purgeable_rows(path: &Path) -> Vec<(&'static str, i64)> {
    let c = rusqlite::Connection::open(path).unwrap();
    [
        "sent_once",
        "joins",
        "join_counts",
        "blobs",
        "revoked",
        "results",
    ]
    .into_iter()
    .map(|t| {
        let n = c
            .query_row(&format!("SELECT count(*) FROM {t}"), [], |r| r.get(0))
            .unwrap();
        (t, n)
    })
    .collect()
}

fn only_live_rows() -> Vec<(&'static str, i64)> {
    [
        "sent_once",
        "joins",
        "join_counts",
        "blobs",
        "revoked",
        "results",
    ]
    .into_iter()
    .map(|t| (t, 1))
    .collect()
}

#[test]
fn many_expired_rows_are_purged_across_batches() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("b.db");
    let b = SqliteBackend::open(&path).unwrap();
    // Several times a batch (1000 rows) in every table.
    fill_expired(&path, 3500);
    assert_eq!(b.purge_expired().unwrap(), 3500, "the expired results");
    assert_eq!(purgeable_rows(&path), only_live_rows());
}

#[test]
fn two_processes_on_one_file_do_not_both_purge() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("b.db");
    let first = SqliteBackend::open(&path).unwrap();
    let second = SqliteBackend::open(&path).unwrap();
    fill_expired(&path, 10);
    assert_eq!(first.purge_expired().unwrap(), 10);
    fill_expired(&path, 10);
    assert_eq!(
        second.purge_expired().unwrap(),
        0,
        "the first holds the purge for this interval"
    );
    assert_eq!(purgeable_rows(&path)[0], ("sent_once", 11), "untouched");
    assert_eq!(
        first.purge_expired().unwrap(),
        10,
        "its holder purges again"
    );
    assert_eq!(purgeable_rows(&path), only_live_rows());
}

/// A chord whose members come in over more than ONCE_TTL: each member stored keeps the join,
/// so a purge between members does not lose the early ones.
#[test]
fn a_join_older_than_once_ttl_is_not_purged_midway() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("b.db");
    let b = SqliteBackend::open(&path).unwrap();
    let id = TaskId::new();
    let join = |index: u32| {
        let value = [index as u8];
        let entry = JoinEntry {
            id,
            index,
            size: 3,
            value: &value,
        };
        b.join(&[entry]).unwrap().pop().unwrap()
    };
    assert_eq!(join(0), None);
    // The first member came longer ago than ONCE_TTL.
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute_batch("UPDATE joins SET until = 1; UPDATE join_counts SET until = 1;")
        .unwrap();
    assert_eq!(join(1), None);
    b.purge_expired().unwrap();
    assert_eq!(
        join(2),
        Some(vec![vec![0], vec![1], vec![2]]),
        "every member is still there"
    );
}

/// A message that does not decode (a row written by hand, a newer format from a rolling
/// upgrade) goes to the dead letters with its decode error and a FAILURE record, and the rest
/// are delivered: one bad row never stops a queue.
#[test]
fn a_corrupt_message_is_dead_lettered_and_the_rest_delivered() {
    use lovage_broker::Admin;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("b.db");
    let b = SqliteBackend::open(&path).unwrap();
    let sent: Vec<Envelope> = (0..4).map(|_| env()).collect();
    b.enqueue(&sent).unwrap();
    // Behind the broker's back: the second task's options are no JSON, the third's workflow
    // frames are no MessagePack.
    let raw = rusqlite::Connection::open(&path).unwrap();
    raw.execute(
        "UPDATE tasks SET options = '{not json' WHERE id = ?1",
        [sent[1].id.to_string()],
    )
    .unwrap();
    raw.execute(
        "UPDATE tasks SET flow = x'c1c1c1' WHERE id = ?1",
        [sent[2].id.to_string()],
    )
    .unwrap();
    drop(raw);
    lovage_broker::conformance::check_bad_messages_set_aside(&b, &sent, &[1, 2]);
    // What could be read is kept: the task's name.
    assert!(b
        .dead_letters(10)
        .unwrap()
        .iter()
        .all(|d| d.envelope.task == "t"));
    let stats = b.stats().unwrap();
    assert_eq!(stats.iter().map(|s| s.ready).sum::<u64>(), 0, "{stats:?}");
}

/// A worker record that does not decode is skipped (and logged), not a failure of the whole
/// list: `lovage workers` still shows the others, as on Redis.
#[test]
fn an_undecodable_worker_record_does_not_hide_the_others() {
    use lovage_broker::{Presence, WorkerInfo};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("b.db");
    let b = SqliteBackend::open(&path).unwrap();
    let good = lovage_broker::conformance::worker("good@host.1");
    b.heartbeat(&good).unwrap();
    b.heartbeat(&WorkerInfo {
        id: "bad@host.2".into(),
        ..good.clone()
    })
    .unwrap();
    let raw = rusqlite::Connection::open(&path).unwrap();
    raw.execute(
        "UPDATE workers SET info = '{oops' WHERE id = 'bad@host.2'",
        [],
    )
    .unwrap();
    drop(raw);
    let seen = b.workers(Duration::from_secs(60)).unwrap();
    assert_eq!(seen, [good]);
}

/// A stored result that does not decode reads as a FAILURE of kind CorruptMessage for its id,
/// not as an error for every id read with it.
#[test]
fn an_undecodable_result_is_a_clear_failure_for_its_id_alone() {
    use lovage_broker::conformance::record;
    use lovage_broker::ResultStore;
    use lovage_core::{kinds, TaskId, TaskState};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("b.db");
    let b = SqliteBackend::open(&path).unwrap();
    let (good, bad) = (TaskId::new(), TaskId::new());
    b.store(&[
        record(good, TaskState::Success),
        record(bad, TaskState::Success),
    ])
    .unwrap();
    let raw = rusqlite::Connection::open(&path).unwrap();
    raw.execute(
        "UPDATE results SET state = 'EXPLODED' WHERE id = ?1",
        [bad.to_string()],
    )
    .unwrap();
    drop(raw);
    let got = b.get_many(&[good, bad]).unwrap();
    assert_eq!(got[0].as_ref().unwrap().state, TaskState::Success);
    let unreadable = got[1].as_ref().unwrap();
    assert_eq!(unreadable.state, TaskState::Failure);
    let err = unreadable.error.as_ref().unwrap();
    assert_eq!(err.kind, kinds::CORRUPT_MESSAGE);
    assert!(err.message.contains(&bad.to_string()), "{err:?}");
}

/// The event ring keeps at least the newest `EVENTS_KEPT` events and drops older ones in
/// chunks (when a batch's numbers cross a multiple of 4,096), so most batches delete nothing;
/// the numbering goes on across the trims.
#[test]
fn the_event_ring_is_trimmed_in_chunks() {
    use lovage_broker::ops::EVENTS_KEPT;
    let dir = tempfile::tempdir().unwrap();
    let b = SqliteBackend::open(dir.path().join("ring.db")).unwrap();
    let batch = |n: usize| -> Vec<Event> {
        (0..n)
            .map(|_| Event::new(EventKind::WorkerHeartbeat))
            .collect()
    };
    let thousand = batch(1000);
    let batches = EVENTS_KEPT / 1000 + 10;
    for _ in 0..batches {
        b.publish(&thousand).unwrap();
    }
    let r = b.read_events(0, 1).unwrap();
    assert_eq!(r.last_seq, batches * 1000);
    let kept = r.last_seq - r.oldest_seq + 1;
    assert!(
        (EVENTS_KEPT..=EVENTS_KEPT + 4096 + 1000).contains(&kept),
        "kept {kept} (oldest {}, last {})",
        r.oldest_seq,
        r.last_seq
    );
    assert!(r.missed(1), "the first events are gone");
    // 110,001..=110,010 crosses no multiple of 4,096: nothing is dropped.
    assert!(r.last_seq % 4096 + 10 < 4096, "the test's own arithmetic");
    b.publish(&batch(10)).unwrap();
    let after = b.read_events(0, 1).unwrap();
    assert_eq!(after.last_seq, r.last_seq + 10);
    assert_eq!(
        after.oldest_seq, r.oldest_seq,
        "a batch within a chunk trims nothing"
    );
    assert_eq!(after.events[0].seq, r.oldest_seq);
}
