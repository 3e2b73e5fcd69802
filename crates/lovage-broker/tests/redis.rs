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

/// Task values that do not decode (written by something else, or by a newer layout) go to the
/// dead letters with a FAILURE record, and the rest of the batch is delivered: before, garbage
/// failed the reserve script midway ("attempt to perform arithmetic on a nil value"), leaving the
/// good tasks of the batch leased until their lease ran out.
#[test]
fn redis_dead_letters_values_that_do_not_decode_and_delivers_the_rest() {
    use lovage_broker::Envelope;
    use lovage_core::{Codec, Signature};
    let base = fixtures::redis_url();
    let prefix = format!("lovage-test-{}", TaskId::new());
    struct Cleanup(String, String);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            let mut c = redis::Client::open(self.0.as_str())
                .unwrap()
                .get_connection()
                .unwrap();
            let keys: Vec<String> = redis::cmd("KEYS")
                .arg(format!("{}:*", self.1))
                .query(&mut c)
                .unwrap_or_default();
            if !keys.is_empty() {
                let _: () = redis::cmd("DEL").arg(keys).query(&mut c).unwrap();
            }
        }
    }
    let _cleanup = Cleanup(base.clone(), prefix.clone());
    let backend = connect(&format!("{base}?prefix={prefix}")).unwrap();
    let b = backend.driver();
    let sent: Vec<Envelope> = (0..4)
        .map(|_| Envelope::from_signature(Signature::new("t", &[1], Codec::Json).unwrap()))
        .collect();
    b.enqueue(&sent).unwrap();
    let mut c = redis::Client::open(base.as_str())
        .unwrap()
        .get_connection()
        .unwrap();
    let tasks = format!("{prefix}:tasks");
    // The second value is no task value at all; the third keeps its header but its envelope is
    // not MessagePack.
    let _: () = redis::cmd("HSET")
        .arg(&tasks)
        .arg(sent[1].id.to_string())
        .arg("garbage")
        .query(&mut c)
        .unwrap();
    let third: Vec<u8> = redis::cmd("HGET")
        .arg(&tasks)
        .arg(sent[2].id.to_string())
        .query(&mut c)
        .unwrap();
    let header_end = {
        let mut spaces = third.iter().enumerate().filter(|(_, b)| **b == b' ');
        let (_, _, (c3, _)) = (spaces.next(), spaces.next(), spaces.next().unwrap());
        let qlen: usize = std::str::from_utf8(&third[..c3])
            .unwrap()
            .rsplit(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        c3 + 1 + qlen
    };
    let mut broken = third[..header_end].to_vec();
    broken.extend_from_slice(&[0xc1, 0xc1, 0xc1]);
    let _: () = redis::cmd("HSET")
        .arg(&tasks)
        .arg(sent[2].id.to_string())
        .arg(broken)
        .query(&mut c)
        .unwrap();
    lovage_broker::conformance::check_bad_messages_set_aside(b, &sent, &[1, 2]);
    // Nothing is left leased, set aside or queued but the two delivered tasks.
    let set_aside: i64 = redis::cmd("HLEN")
        .arg(format!("{prefix}:corrupt"))
        .query(&mut c)
        .unwrap();
    assert_eq!(set_aside, 0);
    let stats = b.stats().unwrap();
    assert_eq!(stats.iter().map(|s| s.ready).sum::<u64>(), 0, "{stats:?}");
    assert_eq!(
        stats.iter().map(|s| s.reserved).sum::<u64>(),
        2,
        "{stats:?}"
    );
}

/// A worker record that does not decode is skipped (and logged), as on SQLite.
#[test]
fn redis_skips_an_undecodable_worker_record() {
    let f = fixtures::redis();
    let b = f.backend.driver();
    let good = lovage_broker::conformance::worker("good@host.1");
    b.heartbeat(&good).unwrap();
    // The prefix is in the backend's URL.
    let url = f.backend.url().to_owned();
    let prefix = url.rsplit("prefix=").next().unwrap().to_owned();
    let mut c = redis::Client::open(fixtures::redis_url().as_str())
        .unwrap()
        .get_connection()
        .unwrap();
    let _: () = redis::cmd("HSET")
        .arg(format!("{prefix}:workers"))
        .arg("bad@host.2")
        .arg("{oops")
        .query(&mut c)
        .unwrap();
    assert_eq!(b.workers(Duration::from_secs(60)).unwrap(), [good]);
}

/// A stored result that does not decode reads as a FAILURE of kind CorruptMessage for its id,
/// not as an error for every id read with it.
#[test]
fn redis_reads_an_undecodable_result_as_a_failure_for_its_id_alone() {
    use lovage_core::kinds;
    let f = fixtures::redis();
    let b = f.backend.results();
    let (good, bad) = (TaskId::new(), TaskId::new());
    b.store(&[
        record(good, TaskState::Success),
        record(bad, TaskState::Success),
    ])
    .unwrap();
    let url = f.backend.url().to_owned();
    let prefix = url.rsplit("prefix=").next().unwrap().to_owned();
    let mut c = redis::Client::open(fixtures::redis_url().as_str())
        .unwrap()
        .get_connection()
        .unwrap();
    // Whichever result hash holds it, its field is overwritten with garbage.
    let hashes: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}:r*"))
        .query(&mut c)
        .unwrap();
    let mut overwritten = 0;
    for h in hashes {
        let has: bool = redis::cmd("HEXISTS")
            .arg(&h)
            .arg(bad.to_string())
            .query(&mut c)
            .unwrap();
        if has {
            let _: () = redis::cmd("HSET")
                .arg(&h)
                .arg(bad.to_string())
                .arg("{garbage")
                .query(&mut c)
                .unwrap();
            overwritten += 1;
        }
    }
    assert_eq!(overwritten, 1);
    let got = b.get_many(&[good, bad]).unwrap();
    assert_eq!(got[0].as_ref().unwrap().state, TaskState::Success);
    let unreadable = got[1].as_ref().unwrap();
    assert_eq!(unreadable.state, TaskState::Failure);
    assert_eq!(
        unreadable.error.as_ref().unwrap().kind,
        kinds::CORRUPT_MESSAGE
    );
}

/// A prefix in layout 3 (before fencing tokens) holds the same task values: it is upgraded in
/// place, and its waiting tasks are delivered.
#[test]
fn redis_upgrades_a_layout_3_prefix_in_place() {
    let base = fixtures::redis_url();
    let prefix = format!("lovage-test-{}", TaskId::new());
    let url = format!("{base}?prefix={prefix}");
    let waiting = lovage_broker::conformance::env("up", 0);
    connect(&url)
        .unwrap()
        .broker()
        .enqueue(std::slice::from_ref(&waiting))
        .unwrap();
    let client = redis::Client::open(base.as_str()).unwrap();
    let mut c = client.get_connection().unwrap();
    let _: () = redis::cmd("SET")
        .arg(format!("{prefix}:layout"))
        .arg("3")
        .query(&mut c)
        .unwrap();
    let b = connect(&url).unwrap();
    let layout: String = redis::cmd("GET")
        .arg(format!("{prefix}:layout"))
        .query(&mut c)
        .unwrap();
    assert_eq!(layout, "4");
    let got = b
        .broker()
        .reserve(&["up".to_owned()], 10, LONG, Duration::ZERO)
        .unwrap();
    assert_eq!(got[0].envelope.id, waiting.id);
    b.broker().complete(&[got[0].lease]).unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}:*"))
        .query(&mut c)
        .unwrap();
    let _: () = redis::cmd("DEL").arg(keys).query(&mut c).unwrap();
}

/// Set in the child process that [`a_host_whose_clock_runs_ahead_takes_nothing_early`] starts
/// under `faketime`: the Redis URL to reserve from.
const SKEWED_CHILD: &str = "LOVAGE_TEST_SKEWED_CHILD";

/// One host's clock 30 s ahead must not decide for the others: leases, ETAs, retry delays and
/// rate-limit slots are read against the server's clock. The skewed host is this test binary started again under
/// libfaketime (scripts/deps installs it), so the whole process, the redis crate included,
/// lives 30 s ahead. Before the scripts took time from the server, its reserve took the running
/// task (its 10 s lease looked expired), the ETA task (due in 20 s) and the retried one at once,
/// and a rate-limit slot of the next 10 s.
#[test]
fn a_host_whose_clock_runs_ahead_takes_nothing_early() {
    let queue = vec!["skew".to_owned()];
    if let Ok(url) = std::env::var(SKEWED_CHILD) {
        let b = connect(&url).unwrap();
        let got = b
            .broker()
            .reserve(&queue, 10, LONG, Duration::ZERO)
            .unwrap();
        println!("skewed reserve got {}", got.len());
        let (slots, _) = b
            .rate_limits()
            .acquire("skew", Duration::from_secs(10), 1, Duration::ZERO)
            .unwrap();
        println!("skewed rate limit got {}", slots.len());
        return;
    }
    let fixture = fixtures::redis();
    let b = fixture.backend.driver();
    let url = fixture.backend.url().to_owned();
    let running = lovage_broker::conformance::env("skew", 0);
    b.enqueue(std::slice::from_ref(&running)).unwrap();
    let held = b
        .reserve(&queue, 1, Duration::from_secs(10), Duration::ZERO)
        .unwrap();
    assert_eq!(held.len(), 1);
    let mut later = lovage_broker::conformance::env("skew", 0);
    later.eta = Some(lovage_broker::Timestamp::now() + Duration::from_secs(20));
    let mut backoff = lovage_broker::conformance::env("skew", 0);
    b.enqueue(&[later, backoff.clone()]).unwrap();
    let retried = b.reserve(&queue, 1, LONG, Duration::ZERO).unwrap();
    backoff.id = retried[0].envelope.id;
    b.retry(&retried[0].lease, Duration::from_secs(20)).unwrap();
    // The one slot of the next 10 s is taken.
    let (slots, _) = b
        .acquire("skew", Duration::from_secs(10), 1, Duration::ZERO)
        .unwrap();
    assert_eq!(slots.len(), 1);

    let out = std::process::Command::new("faketime")
        .args(["-f", "+30s"])
        .arg(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "a_host_whose_clock_runs_ahead_takes_nothing_early",
            "--nocapture",
        ])
        .env(SKEWED_CHILD, &url)
        .output()
        .expect("faketime runs (scripts/deps installs it)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the skewed child failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("skewed reserve got 0"),
        "a host 30 s ahead took tasks before their time: {stdout}"
    );
    assert!(
        stdout.contains("skewed rate limit got 0"),
        "a host 30 s ahead took a rate-limit slot before its time: {stdout}"
    );
    assert!(
        b.renew(&[held[0].lease], LONG).unwrap().is_empty(),
        "the running task's lease still holds"
    );
}

/// A wake-up token left for an id whose record is not final (a stale one, or one whose final
/// record was not stored) is taken once: the waiter reads, sees the task unfinished, and waits
/// again without handing the token back to itself. Before, it passed every token on and woke
/// itself again at once, spinning on Redis until its timeout (and left the token behind).
#[test]
fn a_waiter_does_not_pass_on_a_wake_up_for_an_unfinished_record() {
    let fixture = fixtures::redis();
    let results = fixture.backend.results();
    let id = TaskId::new();
    results.store(&[record(id, TaskState::Retry)]).unwrap();
    let prefix = fixture
        .backend
        .url()
        .split("prefix=")
        .nth(1)
        .unwrap()
        .to_owned();
    let client = redis::Client::open(fixtures::redis_url().as_str()).unwrap();
    let mut c = client.get_connection().unwrap();
    let token = format!("{prefix}:n:{id}");
    let _: () = redis::cmd("RPUSH")
        .arg(&token)
        .arg("1")
        .query(&mut c)
        .unwrap();
    let got = results.wait(id, Duration::from_millis(500)).unwrap();
    assert_eq!(got.unwrap().state, TaskState::Retry);
    let left: i64 = redis::cmd("LLEN").arg(&token).query(&mut c).unwrap();
    assert_eq!(
        left, 0,
        "the waiter passed a wake-up for an unfinished record on"
    );
}

/// A tool's prefix is emptied whole (`delete_prefix_keys`), and only it: the glob characters
/// of the prefix match themselves, so a neighbour that the unescaped pattern would match keeps
/// its keys.
#[test]
fn redis_deletes_the_keys_of_its_prefix_and_no_others() {
    use lovage_broker::redis_backend::RedisBackend;
    let base = fixtures::redis_url();
    let tag = TaskId::new();
    let (prefix, neighbour) = (format!("lt-{tag}-[ab]"), format!("lt-{tag}-a"));
    let r = RedisBackend::open(&format!("{base}?prefix={prefix}")).unwrap();
    let backend = connect(&format!("{base}?prefix={prefix}")).unwrap();
    let ids: Vec<TaskId> = (0..3).map(|_| TaskId::new()).collect();
    let records: Vec<_> = ids
        .iter()
        .map(|id| record(*id, TaskState::Success))
        .collect();
    backend.results().store(&records).unwrap();
    backend.results().put_blob(ids[0], b"blob").unwrap();
    let client = redis::Client::open(base.as_str()).unwrap();
    let mut c = client.get_connection().unwrap();
    let _: () = redis::cmd("SET")
        .arg(format!("{neighbour}:kept"))
        .arg("1")
        .query(&mut c)
        .unwrap();
    let before = r.count_prefix_keys().unwrap();
    assert!(before >= 3, "layout, results, blob: {before}");
    assert_eq!(r.delete_prefix_keys().unwrap(), before);
    assert_eq!(r.count_prefix_keys().unwrap(), 0);
    assert!(backend.results().get(ids[1]).unwrap().is_none());
    let kept: i64 = redis::cmd("EXISTS")
        .arg(format!("{neighbour}:kept"))
        .query(&mut c)
        .unwrap();
    assert_eq!(kept, 1, "the neighbour's key stays");
    let _: () = redis::cmd("DEL")
        .arg(format!("{neighbour}:kept"))
        .query(&mut c)
        .unwrap();
}
