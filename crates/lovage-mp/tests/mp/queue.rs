//! Queue and JoinableQueue across processes: FIFO per producer, nothing lost or duplicated,
//! oversized messages refused, a producer killed -9 mid-put leaves no torn message.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use lovage_macros::task;
use lovage_mp::{Error, JoinableQueue, Process, Queue};
use proptest::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Msg {
    producer: u32,
    seq: u32,
    data: Vec<u8>,
}

fn payload(producer: u32, seq: u32, len: usize) -> Vec<u8> {
    // Values below 128: one MessagePack byte each, so the encoded size tracks `len`.
    (0..len)
        .map(|i| ((i as u32 ^ seq ^ producer.wrapping_mul(31)) % 128) as u8)
        .collect()
}

fn intact(m: &Msg) -> bool {
    m.data == payload(m.producer, m.seq, m.data.len())
}

#[task(crate = lovage_core)]
fn produce(q: Queue<Option<Msg>>, refused: Queue<u32>, producer: u32, sizes: Vec<usize>) {
    for (seq, &len) in sizes.iter().enumerate() {
        let seq = seq as u32;
        let m = Msg {
            producer,
            seq,
            data: payload(producer, seq, len),
        };
        match q.put(&Some(m)) {
            Ok(()) => {}
            Err(Error::MessageTooLarge { .. }) => refused.put(&seq).unwrap(),
            Err(e) => panic!("put failed: {e}"),
        }
    }
}

#[task(crate = lovage_core)]
fn consume(q: Queue<Option<Msg>>, out: Queue<(u32, u32, u32, bool)>, consumer: u32) {
    while let Some(m) = q.get().unwrap() {
        out.put(&(consumer, m.producer, m.seq, intact(&m))).unwrap();
    }
}

/// Puts big raw messages forever until killed: message `seq` is its number (8 bytes) then a
/// run of one byte, so a torn message shows.
#[task(crate = lovage_core)]
fn flood(q: Queue<()>) {
    let mut buf = vec![0u8; 300_000];
    for seq in 0u64.. {
        let len = 50_000 + (seq as usize * 7919) % 200_000;
        buf[..8].copy_from_slice(&seq.to_le_bytes());
        buf[8..len].fill((seq % 251) as u8);
        q.put_bytes(&buf[..len]).unwrap();
    }
}

#[task(crate = lovage_core)]
fn work_and_ack(q: JoinableQueue<u32>, total: Queue<u64>) {
    let mut sum = 0u64;
    // Runs until the queue is closed and drained.
    while let Ok(x) = q.get() {
        sum += u64::from(x);
        q.task_done().unwrap();
    }
    total.put(&sum).unwrap();
}

fn run_4x4(sizes: &[Vec<usize>], capacity: usize) -> Result<(), TestCaseError> {
    let q: Queue<Option<Msg>> = Queue::with_capacity(capacity, 0).unwrap();
    let out = Queue::new().unwrap();
    let refusals: Vec<Queue<u32>> = (0..4).map(|_| Queue::new().unwrap()).collect();
    let consumers: Vec<_> = (0..4)
        .map(|c| Process::spawn(consume::s(q.clone(), out.clone(), c)).unwrap())
        .collect();
    let producers: Vec<_> = (0..4u32)
        .map(|p| {
            Process::spawn(produce::s(
                q.clone(),
                refusals[p as usize].clone(),
                p,
                sizes[p as usize].clone(),
            ))
            .unwrap()
        })
        .collect();
    for p in &producers {
        prop_assert!(p.join().unwrap().success());
    }
    for _ in 0..4 {
        q.put(&None).unwrap();
    }
    for c in &consumers {
        prop_assert!(c.join().unwrap().success());
    }
    let max = q.max_message();
    let mut seen = HashSet::new();
    let mut last: HashMap<(u32, u32), u32> = HashMap::new();
    while let Some((c, p, seq, ok)) = out.try_get().unwrap() {
        prop_assert!(ok, "message {p}/{seq} arrived torn");
        prop_assert!(seen.insert((p, seq)), "message {p}/{seq} arrived twice");
        if let Some(prev) = last.insert((c, p), seq) {
            prop_assert!(prev < seq, "producer {p}: {seq} after {prev}");
        }
    }
    for p in 0..4u32 {
        let mut refused = HashSet::new();
        while let Some(seq) = refusals[p as usize].try_get().unwrap() {
            refused.insert(seq);
        }
        for (seq, &len) in sizes[p as usize].iter().enumerate() {
            let seq = seq as u32;
            if refused.contains(&seq) {
                prop_assert!(len + 16 > max, "a {len}-byte message refused (max {max})");
                prop_assert!(!seen.contains(&(p, seq)));
            } else {
                prop_assert!(len <= max, "a {len}-byte message passed (max {max})");
                prop_assert!(seen.contains(&(p, seq)), "message {p}/{seq} lost");
            }
        }
    }
    Ok(())
}

pub fn four_producers_four_consumers_nothing_lost_or_duplicated() {
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 6,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let size = prop_oneof![
        6 => 0usize..64,
        3 => 64usize..20_000,
        1 => 60_000usize..200_000,
    ];
    let sizes = proptest::collection::vec(proptest::collection::vec(size, 0..40), 4);
    runner
        .run(&(sizes, 0usize..2), |(sizes, cap)| {
            // A small ring (messages wrap, fill it, and some do not fit) or a roomy one.
            run_4x4(&sizes, [64 << 10, 1 << 20][cap])
        })
        .unwrap();
}

pub fn a_producer_killed_mid_put_leaves_no_torn_message() {
    let q: Queue<()> = Queue::with_capacity(1 << 20, 0).unwrap();
    for round in 0..12u64 {
        let p = Process::spawn(flood::s(q.clone())).unwrap();
        // Drain while it puts, so it is killed mid-copy as often as not.
        let reader = q.clone();
        let t = std::thread::spawn(move || {
            let mut buf = Vec::new();
            let mut next = 0u64;
            loop {
                reader.get_bytes(&mut buf).unwrap();
                if buf.is_empty() {
                    return next; // the end marker
                }
                let seq = u64::from_le_bytes(buf[..8].try_into().unwrap());
                assert_eq!(seq, next, "a gap or a repeat");
                // Sampled (a debug build checks every byte too slowly to keep up with the
                // producer): an unfinished copy leaves a long run of an older message's byte.
                let want = (seq % 251) as u8;
                assert!(
                    buf[8..].iter().step_by(509).all(|&b| b == want) && buf.last() == Some(&want),
                    "message {seq} is torn"
                );
                next += 1;
            }
        });
        std::thread::sleep(Duration::from_millis(20 + round * 7));
        p.kill().unwrap();
        assert_eq!(
            p.join().unwrap(),
            lovage_mp::ExitStatus::Signal(libc::SIGKILL)
        );
        q.put_bytes(&[]).unwrap();
        let got = t.join().unwrap();
        assert!(got > 0, "round {round}: nothing got through");
        assert!(q.is_empty());
    }
    // Still usable.
    q.put(&()).unwrap();
    q.get().unwrap();
}

pub fn bounded_timeouts_close_and_joinable() {
    let q: Queue<String> = Queue::bounded(2).unwrap();
    q.put(&"a".into()).unwrap();
    q.put(&"b".into()).unwrap();
    assert!(matches!(
        q.put_timeout(&"c".into(), Duration::from_millis(30)),
        Err(Error::Timeout(_))
    ));
    assert_eq!(q.len(), 2);
    assert_eq!(q.get().unwrap(), "a");
    assert_eq!(q.try_get().unwrap().as_deref(), Some("b"));
    assert_eq!(q.try_get().unwrap(), None);
    assert!(matches!(
        q.get_timeout(Duration::from_millis(30)),
        Err(Error::Timeout(_))
    ));
    q.put(&"last".into()).unwrap();
    q.close();
    assert!(matches!(q.put(&"x".into()), Err(Error::Closed)));
    assert_eq!(q.get().unwrap(), "last");
    assert!(matches!(q.get(), Err(Error::Closed)));

    let small: Queue<Vec<u8>> = Queue::with_capacity(1024, 0).unwrap();
    let e = small.put(&vec![1u8; 2000]).unwrap_err().to_string();
    assert!(e.contains("larger than this queue's limit"), "{e}");

    let total: Queue<u64> = Queue::new().unwrap();
    let jq_u32: JoinableQueue<u32> = JoinableQueue::new().unwrap();
    let workers: Vec<_> = (0..2)
        .map(|_| Process::spawn(work_and_ack::s(jq_u32.clone(), total.clone())).unwrap())
        .collect();
    for x in 1..=100u32 {
        jq_u32.put(&x).unwrap();
    }
    jq_u32.join_timeout(Duration::from_secs(30)).unwrap();
    assert!(jq_u32.is_empty());
    jq_u32.close();
    let mut sum = 0;
    for w in workers {
        assert!(w.join().unwrap().success());
        sum += total.get().unwrap();
    }
    assert_eq!(sum, 5050);
    assert!(jq_u32.task_done().is_err(), "a task_done too many");
}
