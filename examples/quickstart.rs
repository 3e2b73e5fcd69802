//! The futures API in one page: thread pool, process pool, waiting on many tasks, and what
//! happens when a task crashes.
//!
//! Run: `cargo run --release --example quickstart`

use std::time::Duration;

use lovage::{as_completed, wait, ProcessPool, ReturnWhen, ThreadPool};

/// A registered task: runs in a process pool's child (or, later, on a queue's worker).
#[lovage::task]
fn word_count(text: String) -> usize {
    text.split_whitespace().count()
}

/// A task that takes its process down with it.
#[lovage::task]
fn crash() -> u32 {
    std::process::abort()
}

fn main() {
    // First line of main: in a process pool's child this serves tasks and never returns.
    lovage::init();

    // Thread pool: any closure.
    let pool = ThreadPool::new(2);
    let h = pool.submit(|| (1..=10u64).product::<u64>());
    println!("10! = {}", h.result().unwrap());

    // map keeps input order; a panic fails only its own item.
    let lengths: Vec<_> = pool.map(|s: &str| s.len(), ["a", "bb", "ccc"], 1).collect();
    println!("lengths: {lengths:?}");

    // as_completed: results as they finish.
    let handles: Vec<_> = [30u64, 10, 20]
        .into_iter()
        .map(|ms| {
            pool.submit(move || {
                std::thread::sleep(Duration::from_millis(ms));
                ms
            })
        })
        .collect();
    let order: Vec<u64> = as_completed(handles, None)
        .map(|h| h.unwrap().result().unwrap())
        .collect();
    println!("finished in order: {order:?}");

    // wait: the first to finish, the rest still running.
    let handles = vec![
        pool.submit(|| "fast"),
        pool.submit(|| {
            std::thread::sleep(Duration::from_millis(50));
            "slow"
        }),
    ];
    let w = wait(handles, ReturnWhen::FirstCompleted, None);
    println!("done: {}, not done: {}", w.done.len(), w.not_done.len());

    // Scoped tasks borrow from the stack.
    let words = ["lovage", "is", "a", "herb"];
    let total: usize = pool.scope(|s| {
        let hs: Vec<_> = words.iter().map(|w| s.submit(move || w.len())).collect();
        hs.into_iter().map(|h| h.result().unwrap()).sum()
    });
    println!("letters: {total}");

    // Process pool: registered tasks, in child processes.
    let procs = ProcessPool::new(2);
    let n = procs
        .submit(word_count::s("the quick brown fox".into()))
        .result()
        .unwrap();
    println!("word_count in a child process: {n}");

    // A crashing child fails only its own task; the pool replaces it and goes on.
    let err = procs.submit(crash::s()).result().unwrap_err();
    println!("crash: {err}");
    let n = procs
        .submit(word_count::s("still working".into()))
        .result()
        .unwrap();
    println!("after the crash: {n}");
}
