//! Pipe, Semaphore, BoundedSemaphore, Event, Condition and Barrier across processes.

use std::time::{Duration, Instant};

use lovage_macros::task;
use lovage_mp::{
    Barrier, BoundedSemaphore, Condition, Connection, Error, Event, Pipe, Process, Semaphore, Value,
};

#[task(crate = lovage_core)]
fn echo(conn: Connection<Vec<u64>>) -> u64 {
    let mut n = 0;
    // Until the parent's end closes.
    while let Ok(v) = conn.recv() {
        conn.send(&v).unwrap();
        n += 1;
    }
    n
}

#[task(crate = lovage_core)]
fn send_bytes_one_way(w: Connection<()>) {
    w.send_bytes(b"raw bytes").unwrap();
}

#[task(crate = lovage_core)]
fn semaphore_user(s: Semaphore, inside: Value<u32>, max_seen: Value<u32>) {
    for _ in 0..200 {
        s.acquire();
        let now = inside.fetch_add(1) + 1;
        let mut m = max_seen.get_lock().unwrap();
        *m = (*m).max(now);
        drop(m);
        inside.fetch_sub(1);
        s.release().unwrap();
    }
}

#[task(crate = lovage_core)]
fn wait_event_then_count(e: Event, count: Value<u32>) {
    e.wait();
    count.fetch_add(1);
}

/// Seed 003's consumer: waits on the condition for items, takes `n` of them.
#[task(crate = lovage_core)]
fn condition_consumer(c: Condition, items: Value<u32>, n: u32) {
    for _ in 0..n {
        let g = c.acquire().unwrap();
        let (g, ok) = g.wait_for(|| items.get() > 0, Some(Duration::from_secs(30)));
        assert!(ok, "no item came");
        let _g = g.unwrap();
        items.fetch_sub(1);
    }
}

#[task(crate = lovage_core)]
fn barrier_party(b: Barrier, arrived: Value<u32>, rounds: u32, leaders: Value<u32>) {
    for r in 0..rounds {
        arrived.fetch_add(1);
        if b.wait() {
            leaders.fetch_add(1);
        }
        // Nobody passes round r before all have arrived at it.
        assert!(arrived.get() >= (r + 1) * b.parties());
    }
}

pub fn pipe_round_trips_with_a_child_and_closes() {
    let (a, b) = Pipe::new::<Vec<u64>>(true).unwrap();
    let p = Process::spawn(echo::s(b)).unwrap();
    for len in [0usize, 1, 7, 1000, 1 << 17] {
        let v: Vec<u64> = (0..len as u64).collect();
        a.send(&v).unwrap();
        assert_eq!(a.recv_timeout(Duration::from_secs(20)).unwrap(), v);
    }
    assert!(!a.poll(Duration::ZERO));
    drop(a);
    assert!(p.join().unwrap().success(), "the child saw its pipe close");

    let (r, w) = Pipe::new::<()>(false).unwrap();
    assert!(r.send(&()).is_err(), "the read end of a one-way pipe sent");
    let p = Process::spawn(send_bytes_one_way::s(w)).unwrap();
    let mut buf = Vec::new();
    r.recv_bytes(&mut buf).unwrap();
    assert_eq!(buf, b"raw bytes");
    assert!(p.join().unwrap().success());
    assert!(matches!(
        r.recv_timeout(Duration::from_millis(30)),
        Err(Error::Closed)
    ));
    let (x, _y) = Pipe::new::<u8>(true).unwrap();
    assert!(matches!(
        x.recv_timeout(Duration::from_millis(30)),
        Err(Error::Timeout(_))
    ));
}

pub fn semaphores_bound_concurrency_across_processes() {
    let s = Semaphore::new(2).unwrap();
    let inside = Value::new(0u32).unwrap();
    let max_seen = Value::new(0u32).unwrap();
    let ps: Vec<_> = (0..4)
        .map(|_| {
            Process::spawn(semaphore_user::s(
                s.clone(),
                inside.clone(),
                max_seen.clone(),
            ))
            .unwrap()
        })
        .collect();
    for p in ps {
        assert!(p.join().unwrap().success());
    }
    assert!(max_seen.get() <= 2, "{} inside at once", max_seen.get());
    assert_eq!(s.value(), 2);
    assert!(s.try_acquire() && s.try_acquire() && !s.try_acquire());
    let start = Instant::now();
    assert!(!s.acquire_timeout(Duration::from_millis(30)));
    assert!(start.elapsed() >= Duration::from_millis(30));
    let b = BoundedSemaphore::new(1).unwrap();
    assert!(b.release().is_err(), "released above its bound");
    b.acquire();
    b.release().unwrap();
}

pub fn an_event_releases_every_waiter() {
    let e = Event::new().unwrap();
    let count = Value::new(0u32).unwrap();
    let ps: Vec<_> = (0..3)
        .map(|_| Process::spawn(wait_event_then_count::s(e.clone(), count.clone())).unwrap())
        .collect();
    assert!(!e.wait_timeout(Duration::from_millis(50)));
    assert_eq!(count.get(), 0, "a waiter passed an unset event");
    e.set();
    for p in ps {
        assert!(p.join().unwrap().success());
    }
    assert_eq!(count.get(), 3);
    assert!(e.is_set());
    e.clear();
    assert!(!e.is_set());
}

pub fn condition_producer_consumer() {
    let c = Condition::new().unwrap();
    let items = Value::new(0u32).unwrap();
    let consumers: Vec<_> = (0..2)
        .map(|_| Process::spawn(condition_consumer::s(c.clone(), items.clone(), 50)).unwrap())
        .collect();
    for _ in 0..100 {
        let g = c.acquire().unwrap();
        items.fetch_add(1);
        g.notify(1);
    }
    for p in consumers {
        assert!(p.join().unwrap().success());
    }
    assert_eq!(items.get(), 0);
}

pub fn a_barrier_holds_everyone_until_all_arrive() {
    let b = Barrier::new(3).unwrap();
    let arrived = Value::new(0u32).unwrap();
    let leaders = Value::new(0u32).unwrap();
    let ps: Vec<_> = (0..3)
        .map(|_| {
            Process::spawn(barrier_party::s(
                b.clone(),
                arrived.clone(),
                20,
                leaders.clone(),
            ))
            .unwrap()
        })
        .collect();
    for p in ps {
        assert!(p.join().unwrap().success());
    }
    assert_eq!(leaders.get(), 20, "one leader per round");
    assert!(Barrier::new(0).is_err());
}
