//! Behaviour of the thread pool and the futures API. No test depends on how fast anything runs:
//! ordering is forced with channels and barriers, and timeouts are only upper bounds.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr,
    clippy::undocumented_unsafe_blocks
)] // tests panic to fail and print what they saw

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Barrier};
use std::time::{Duration, Instant};

use lovage_core::{block_on, kinds};
use lovage_pool::{as_completed, wait, ReturnWhen, ThreadPool};
use proptest::prelude::*;

/// A task that reports it started, then blocks until released.
fn blocker(pool: &ThreadPool) -> (lovage_pool::TaskHandle<&'static str>, mpsc::Sender<()>) {
    let (started_tx, started_rx) = mpsc::channel();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let h = pool.submit(move || {
        started_tx.send(()).unwrap();
        release_rx.recv().unwrap();
        "released"
    });
    started_rx.recv().unwrap();
    (h, release_tx)
}

#[test]
fn submit_returns_values_and_panics_fail_only_their_task() {
    let pool = ThreadPool::new(2);
    let bad = pool.submit(|| -> u32 { panic!("task exploded") });
    let good = pool.submit(|| 7u32);
    let err = bad.result().unwrap_err();
    assert_eq!(err.kind, kinds::PANIC);
    assert_eq!(err.message, "task exploded");
    assert_eq!(good.result().unwrap(), 7);
    // The pool still works after many panics.
    let handles: Vec<_> = (0..100)
        .map(|i| pool.submit(move || if i % 2 == 0 { panic!("x") } else { i }))
        .collect();
    let ok = handles.into_iter().filter_map(|h| h.result().ok()).count();
    assert_eq!(ok, 50);
    assert_eq!(pool.submit(|| 1).result().unwrap(), 1);
}

#[test]
fn cancel_succeeds_only_before_start() {
    let pool = ThreadPool::new(1);
    let (running, release) = blocker(&pool);
    let ran = Arc::new(AtomicUsize::new(0));
    let queued = pool.submit({
        let ran = ran.clone();
        move || ran.fetch_add(1, Ordering::SeqCst)
    });
    assert!(running.running());
    assert!(!running.cancel(), "a running task cannot be cancelled");
    assert!(running.running() && !running.cancelled());
    assert!(queued.cancel(), "a queued task can be cancelled");
    assert!(queued.cancelled() && queued.done());
    // Cancelling again reports that the task is cancelled (as Python's Future.cancel), and
    // the task stays cancelled, not failed.
    assert!(
        queued.cancel(),
        "a second cancel reports the task cancelled"
    );
    assert!(queued.cancelled() && !queued.failed());
    release.send(()).unwrap();
    assert_eq!(running.result().unwrap(), "released");
    assert_eq!(queued.result().unwrap_err().kind, kinds::CANCELLED);
    // The worker is free again; a task after the cancelled one runs, and the cancelled one never
    // did (the pool has one thread, so it would have run before this one).
    assert_eq!(pool.submit(|| 2).result().unwrap(), 2);
    assert_eq!(ran.load(Ordering::SeqCst), 0, "a cancelled task ran");
    let finished = pool.submit(|| 1);
    finished.wait();
    assert!(!finished.cancel());
}

#[test]
fn result_timeout_leaves_the_handle_usable() {
    let pool = ThreadPool::new(1);
    let (h, release) = blocker(&pool);
    let err = h.result_timeout(Duration::from_millis(20)).unwrap_err();
    assert_eq!(err.kind, kinds::TIMEOUT);
    assert!(!h.wait_timeout(Duration::from_millis(1)));
    release.send(()).unwrap();
    assert_eq!(
        h.result_timeout(Duration::from_secs(60)).unwrap(),
        "released"
    );
    assert_eq!(
        h.result_timeout(Duration::from_secs(1)).unwrap_err().kind,
        kinds::RESULT_TAKEN
    );
}

#[test]
fn done_callbacks_run_once_with_the_outcome() {
    let pool = ThreadPool::new(2);
    let seen = Arc::new(AtomicUsize::new(0));
    let (h, release) = blocker(&pool);
    let s = seen.clone();
    h.add_done_callback(move |r| {
        assert_eq!(*r.as_ref().unwrap(), "released");
        s.fetch_add(1, Ordering::SeqCst);
    });
    h.add_done_callback(|_| panic!("a panicking callback is contained"));
    release.send(()).unwrap();
    h.wait();
    // Registered after completion: runs at once on this thread.
    let s = seen.clone();
    h.add_done_callback(move |_| {
        s.fetch_add(10, Ordering::SeqCst);
    });
    assert_eq!(seen.load(Ordering::SeqCst), 11);
    assert_eq!(pool.submit(|| 5).result().unwrap(), 5);
}

#[test]
fn handles_are_futures() {
    let pool = ThreadPool::new(2);
    let a = pool.submit(|| 20);
    let b = pool.submit(|| 22);
    let sum = block_on(async { a.await.unwrap() + b.await.unwrap() });
    assert_eq!(sum, 42);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    #[test]
    fn map_keeps_input_order(items in proptest::collection::vec(any::<i32>(), 0..300), chunk in 1usize..40, workers in 1usize..4) {
        let pool = ThreadPool::new(workers);
        let out: Vec<i64> = pool.map(|x: i32| x as i64 * 3, items.clone(), chunk).map(Result::unwrap).collect();
        let expect: Vec<i64> = items.iter().map(|&x| x as i64 * 3).collect();
        prop_assert_eq!(out, expect);
    }

    #[test]
    fn map_unordered_yields_every_index_once(n in 0usize..300, chunk in 1usize..40) {
        let pool = ThreadPool::new(2);
        let mut got: Vec<(usize, usize)> = pool.map_unordered(|x: usize| x * 2, 0..n, chunk).map(|(i, r)| (i, r.unwrap())).collect();
        got.sort();
        prop_assert_eq!(got, (0..n).map(|i| (i, i * 2)).collect::<Vec<_>>());
    }
}

#[test]
fn map_reads_its_input_lazily() {
    let pool = ThreadPool::new(2);
    let pulled = Arc::new(AtomicUsize::new(0));
    let p = pulled.clone();
    let endless = (0u64..).inspect(move |_| {
        p.fetch_add(1, Ordering::Relaxed);
    });
    let first: Vec<u64> = pool
        .map(|x| x + 1, endless, 10)
        .take(25)
        .map(Result::unwrap)
        .collect();
    assert_eq!(first, (1..=25).collect::<Vec<_>>());
    // Only a bounded window (4 chunks per worker, plus one refill) is ever read ahead.
    assert!(
        pulled.load(Ordering::Relaxed) <= 25 + 2 * 4 * 10 + 10,
        "read {} items",
        pulled.load(Ordering::Relaxed)
    );
}

#[test]
fn a_panic_inside_map_fails_only_that_item() {
    let pool = ThreadPool::new(2);
    let out: Vec<_> = pool
        .map(|x: u32| if x == 5 { panic!("five") } else { x }, 0..10, 3)
        .collect();
    for (i, r) in out.iter().enumerate() {
        match r {
            Ok(v) => assert_eq!(*v as usize, i),
            Err(e) => assert!(i == 5 && e.kind == kinds::PANIC, "{i}: {e}"),
        }
    }
    assert!(out[5].is_err());
}

#[test]
fn as_completed_yields_in_completion_order_and_times_out() {
    let pool = ThreadPool::new(2);
    let (slow, release) = blocker(&pool);
    let fast = pool.submit(|| "fast");
    let mut it = as_completed(vec![slow, fast], Some(Duration::from_millis(50)));
    assert_eq!(it.next().unwrap().unwrap().result().unwrap(), "fast");
    assert_eq!(it.next().unwrap().unwrap_err().kind, kinds::TIMEOUT);
    assert!(it.next().is_none());
    let pending = it.into_pending();
    assert_eq!(pending.len(), 1);
    release.send(()).unwrap();
    let all: Vec<_> = as_completed(pending, None)
        .map(|h| h.unwrap().result().unwrap())
        .collect();
    assert_eq!(all, vec!["released"]);
}

#[test]
fn wait_first_completed_first_exception_all_completed() {
    let pool = ThreadPool::new(2);
    let (slow, release) = blocker(&pool);
    let quick = pool.submit(|| "quick");
    let w = wait(vec![slow, quick], ReturnWhen::FirstCompleted, None);
    assert_eq!(w.done.len(), 1);
    assert_eq!(w.not_done.len(), 1);

    let failing = pool.submit(|| -> &'static str { panic!("bad") });
    let mut handles = w.not_done;
    handles.push(failing);
    let w = wait(handles, ReturnWhen::FirstException, None);
    assert_eq!(
        w.done.len(),
        1,
        "returns at the first failure while the blocker still runs"
    );
    assert!(w.done[0].failed());

    let w = wait(
        w.not_done,
        ReturnWhen::AllCompleted,
        Some(Duration::from_millis(30)),
    );
    assert_eq!(
        (w.done.len(), w.not_done.len()),
        (0, 1),
        "timeout is not an error"
    );
    release.send(()).unwrap();
    let w = wait(w.not_done, ReturnWhen::AllCompleted, None);
    assert_eq!(w.done.len(), 1);
    let empty = wait(
        Vec::<lovage_pool::TaskHandle<u8>>::new(),
        ReturnWhen::FirstCompleted,
        None,
    );
    assert!(empty.done.is_empty() && empty.not_done.is_empty());
}

#[test]
fn first_exception_counts_cancellation_as_completion_not_failure() {
    let pool = ThreadPool::new(1);
    let (running, release) = blocker(&pool);
    let queued = pool.submit(|| "never");
    assert!(queued.cancel());
    // Only the cancelled task is done. Had `wait` taken the cancellation for a failure it would
    // return at once with the same two sets, so what shows the difference is that it waited for
    // its whole timeout: a wait whose condition does not hold cannot return before its deadline.
    let timeout = Duration::from_millis(100);
    let started = Instant::now();
    let w = wait(
        vec![running, queued],
        ReturnWhen::FirstException,
        Some(timeout),
    );
    assert!(
        started.elapsed() >= timeout,
        "FirstException returned after {:?}, before its timeout: it took the cancellation for a failure",
        started.elapsed()
    );
    assert_eq!((w.done.len(), w.not_done.len()), (1, 1));
    assert!(w.done[0].cancelled() && !w.done[0].failed());
    assert!(w.not_done[0].running());
    // Once the running task finishes, the same wait returns with both done and no timeout.
    release.send(()).unwrap();
    let mut handles = w.done;
    handles.extend(w.not_done);
    let w = wait(handles, ReturnWhen::FirstException, None);
    assert_eq!((w.done.len(), w.not_done.len()), (2, 0));
}

#[test]
fn scoped_tasks_borrow_from_the_stack() {
    let pool = ThreadPool::new(2);
    let data: Vec<u64> = (1..=1000).collect();
    let mut partials = [0u64; 4];
    pool.scope(|s| {
        for (chunk, slot) in data.chunks(250).zip(partials.iter_mut()) {
            s.spawn(move || *slot = chunk.iter().sum());
        }
    });
    assert_eq!(partials.iter().sum::<u64>(), 500_500);
    let total = pool.scope(|s| s.submit(|| data.len()).result().unwrap());
    assert_eq!(total, 1000);
}

#[test]
fn a_panicking_scope_still_waits_for_its_tasks() {
    let pool = ThreadPool::new(2);
    let counter = AtomicUsize::new(0);
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        pool.scope(|s| {
            for _ in 0..50 {
                s.spawn(|| {
                    counter.fetch_add(1, Ordering::SeqCst);
                });
            }
            panic!("scope body fails");
        })
    }));
    assert!(r.is_err());
    assert_eq!(counter.load(Ordering::SeqCst), 50);
}

#[test]
fn tasks_can_submit_and_wait_on_tasks_without_deadlock() {
    fn fib(pool: &Arc<ThreadPool>, n: u64) -> u64 {
        if n < 2 {
            return n;
        }
        let p = pool.clone();
        let a = pool.submit(move || fib(&p, n - 1));
        let b = fib(pool, n - 2);
        a.result().unwrap() + b
    }
    // One worker: every nested wait must help run queued work.
    let pool = Arc::new(ThreadPool::new(1));
    let p = pool.clone();
    assert_eq!(pool.submit(move || fib(&p, 15)).result().unwrap(), 610);
}

#[test]
fn shutdown_cancels_pending_and_refuses_new_work() {
    let pool = ThreadPool::new(1);
    let (running, release) = blocker(&pool);
    let queued: Vec<_> = (0..10).map(|i| pool.submit(move || i)).collect();
    std::thread::scope(|s| {
        s.spawn(|| {
            // Release the running task once shutdown has cancelled the queue.
            while !queued.iter().all(|h| h.done()) {
                std::thread::yield_now();
            }
            release.send(()).unwrap();
        });
        pool.shutdown(true, true);
    });
    assert_eq!(running.result().unwrap(), "released");
    for h in queued {
        assert_eq!(h.result().unwrap_err().kind, kinds::CANCELLED);
    }
    assert_eq!(
        pool.submit(|| 1).result().unwrap_err().kind,
        kinds::SHUTDOWN
    );
}

#[test]
fn shutdown_without_cancel_finishes_queued_work() {
    let pool = ThreadPool::new(2);
    let barrier = Arc::new(Barrier::new(3));
    let b = barrier.clone();
    let first = pool.submit(move || b.wait().is_leader());
    let b = barrier.clone();
    let second = pool.submit(move || b.wait().is_leader());
    let rest: Vec<_> = (0..100).map(|i| pool.submit(move || i * 2)).collect();
    barrier.wait();
    pool.shutdown(true, false);
    let _ = (first.result().unwrap(), second.result().unwrap());
    assert_eq!(
        rest.into_iter().map(|h| h.result().unwrap()).sum::<i32>(),
        9900
    );
}

#[test]
fn dropping_the_pool_runs_what_was_queued() {
    let count = Arc::new(AtomicUsize::new(0));
    {
        let pool = ThreadPool::new(2);
        for _ in 0..1000 {
            let c = count.clone();
            drop(pool.submit(move || c.fetch_add(1, Ordering::Relaxed)));
        }
    }
    assert_eq!(count.load(Ordering::Relaxed), 1000);
}

#[test]
fn many_submitters_many_results() {
    let pool = ThreadPool::new(2);
    std::thread::scope(|s| {
        for t in 0..4u64 {
            let pool = &pool;
            s.spawn(move || {
                let hs: Vec<_> = (0..5000u64).map(|i| pool.submit(move || i + t)).collect();
                let sum: u64 = hs.into_iter().map(|h| h.result().unwrap()).sum();
                assert_eq!(sum, (0..5000).sum::<u64>() + 5000 * t);
            });
        }
    });
}

/// Waits (bounded) until `cond` holds; fails the test with `what` otherwise.
fn wait_for(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn resize_changes_how_many_tasks_run_at_once_and_never_stops_a_running_one() {
    let pool = ThreadPool::new(1);
    let running = Arc::new(AtomicUsize::new(0));
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let release_rx = Arc::new(std::sync::Mutex::new(release_rx));
    let submit = |n: usize| -> Vec<_> {
        (0..n)
            .map(|_| {
                let (running, release) = (running.clone(), release_rx.clone());
                pool.submit(move || {
                    running.fetch_add(1, Ordering::SeqCst);
                    let _ = release.lock().unwrap().recv();
                    running.fetch_sub(1, Ordering::SeqCst);
                })
            })
            .collect()
    };
    let handles = submit(4);
    wait_for("one task running", || running.load(Ordering::SeqCst) == 1);
    // Grow past every thread started: three new threads start and take the queued tasks.
    pool.resize(4).unwrap();
    assert_eq!(pool.workers(), 4);
    wait_for("four tasks running", || running.load(Ordering::SeqCst) == 4);
    // Shrink while all four run: none is stopped; they finish as they are released.
    pool.resize(2).unwrap();
    assert_eq!(pool.workers(), 2);
    assert_eq!(running.load(Ordering::SeqCst), 4);
    for _ in 0..4 {
        release_tx.send(()).unwrap();
    }
    for h in handles {
        h.result().unwrap();
    }
    // From now on at most two run at once: the other two threads parked.
    let handles = submit(4);
    wait_for("two tasks running", || running.load(Ordering::SeqCst) == 2);
    let queued = handles.iter().filter(|h| !h.running() && !h.done()).count();
    assert_eq!(queued, 2, "two tasks wait for a thread");
    // Growing again wakes the parked threads.
    pool.resize(3).unwrap();
    wait_for("three tasks running", || {
        running.load(Ordering::SeqCst) == 3
    });
    for _ in 0..4 {
        release_tx.send(()).unwrap();
    }
    for h in handles {
        h.result().unwrap();
    }
    pool.shutdown(true, false);
    assert!(pool.resize(2).is_err(), "a shut-down pool cannot grow");
}
