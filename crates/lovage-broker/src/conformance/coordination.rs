//! What workers share besides tasks: locks (beat's leader), rate limits, worker presence.

use std::time::{Duration, Instant};

use lovage_core::TaskId;

use super::worker;
use super::{Fixture, SHORT};
use crate::Timestamp;

conformance_tests! {
    fn workers_are_listed_while_they_beat(f: Fixture) {
        let b = f.backend.driver();
        let mut w = worker("w1@host.1");
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
        // A worker killed with -9 never unregisters: its record goes once it is older than
        // WORKER_RECORD_TTL, at the next heartbeat or listing.
        let mut ancient = w.clone();
        ancient.id = "killed@host.3".into();
        ancient.heartbeat = Timestamp::from_millis(
            Timestamp::now().as_millis() - 2 * crate::WORKER_RECORD_TTL.as_millis() as i64,
        );
        b.heartbeat(&ancient).unwrap();
        b.heartbeat(&w).unwrap();
        let long_ago = crate::WORKER_RECORD_TTL * 10;
        let _ = b.workers(long_ago).unwrap();
        let ids: Vec<String> = b
            .workers(long_ago)
            .unwrap()
            .into_iter()
            .map(|w| w.id)
            .collect();
        assert_eq!(
            ids,
            ["old@host.2", "w1@host.1"],
            "a record past its time to live is deleted, younger ones kept"
        );
    }

    fn a_lock_has_one_holder_and_lapses(f: Fixture) {
        let b = f.backend.driver();
        let ttl = SHORT;
        assert!(b.lock("leader", "a", ttl).unwrap());
        assert!(!b.lock("leader", "b", ttl).unwrap(), "held by a");
        assert!(b.lock("leader", "a", ttl).unwrap(), "a renews");
        assert!(b.lock("other", "b", ttl).unwrap(), "locks are separate");
        std::thread::sleep(ttl + Duration::from_millis(100));
        assert!(b.lock("leader", "b", ttl).unwrap(), "a lapsed; b takes it");
        assert!(!b.lock("leader", "a", ttl).unwrap());
        b.unlock("leader", "a").unwrap(); // not a's: no effect
        assert!(!b.lock("leader", "a", ttl).unwrap());
        b.unlock("leader", "b").unwrap();
        assert!(b.lock("leader", "a", ttl).unwrap(), "free again");
    }

    fn rate_limits_book_one_slot_per_interval(f: Fixture) {
        let b = f.backend.driver();
        let key = format!("rate-{}", TaskId::new());
        let interval = Duration::from_millis(100);
        let horizon = Duration::from_millis(250);
        let first_call = Instant::now();
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
        // Another worker asking soon after gets the slots after those: from 300 ms after the
        // first call, 100 ms apart, within its horizon. Counted from this call, and a loaded
        // machine may have let time pass between the two, so more of them may fit.
        let (slots, _) = b
            .acquire(&key, interval, 5, Duration::from_millis(400))
            .unwrap();
        let between = first_call.elapsed();
        assert!((2..=5).contains(&slots.len()), "{slots:?} {between:?}");
        assert!(slots[0] <= Duration::from_millis(300), "{slots:?}");
        assert!(slots[0] + between > Duration::from_millis(290), "{slots:?} {between:?}");
        for pair in slots.windows(2) {
            let gap = pair[1] - pair[0];
            assert!(gap > Duration::from_millis(95) && gap <= interval, "{slots:?}");
        }
        assert!(slots.iter().all(|s| *s <= Duration::from_millis(400)), "{slots:?}");
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
}
