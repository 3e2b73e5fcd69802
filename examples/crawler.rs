//! The seeds' crawler: pages found at run time, each fetched once, until nothing is left — on a
//! thread pool (tasks spawning tasks in a scope, which returns when every one has finished:
//! the seeds' `queue.join()`) and on a broker through the futures client (`as_completed` taking
//! new futures as pages reveal links, Dask's `as_completed(...).add`).
//!
//! The site is synthetic (no network): page `p` links to 8 pages picked by a hash of `p`, among
//! `SITE` pages, with duplicates and cycles; a fetch costs a little CPU.
//!
//! Run: `cargo run --release --example crawler` (`--quick`: a smaller site)

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use lovage::{App, PoolKind, ThreadPool, Worker, WorkerConfig};

/// The links on page `page` of a site of `size` pages.
fn links_of(page: u64, size: u64) -> Vec<u64> {
    let mut h = page.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
    (0..8)
        .map(|_| {
            h ^= h >> 31;
            h = h.wrapping_mul(0xBF58_476D_1CE4_E5B9);
            h ^= h >> 29;
            // Half the links go near the page (cycles, duplicates), half anywhere.
            if h & 1 == 0 {
                (page + (h >> 8) % 16) % size
            } else {
                (h >> 8) % size
            }
        })
        .collect()
}

/// Fetches a page: its links.
#[lovage::task]
fn crawl(page: u64, size: u64) -> Vec<u64> {
    links_of(page, size)
}

/// Every page reachable from page 0, found serially: what each run must match.
fn reachable(size: u64) -> usize {
    let mut seen = HashSet::from([0u64]);
    let mut todo = vec![0u64];
    while let Some(p) = todo.pop() {
        for l in links_of(p, size) {
            if seen.insert(l) {
                todo.push(l);
            }
        }
    }
    seen.len()
}

fn on_threads(size: u64) -> (usize, Duration) {
    let pool = ThreadPool::new(2);
    let seen = Mutex::new(HashSet::from([0u64]));
    let fetched = std::sync::atomic::AtomicUsize::new(0);
    let t = Instant::now();
    fn visit<'s>(
        s: &'s lovage::Scope<'s, '_>,
        page: u64,
        size: u64,
        seen: &'s Mutex<HashSet<u64>>,
        fetched: &'s std::sync::atomic::AtomicUsize,
    ) {
        fetched.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let links = links_of(page, size);
        let new: Vec<u64> = {
            let mut seen = seen.lock().unwrap_or_else(|p| p.into_inner());
            links.into_iter().filter(|l| seen.insert(*l)).collect()
        };
        for l in new {
            s.spawn(move || visit(s, l, size, seen, fetched));
        }
    }
    pool.scope(|s| s.spawn(|| visit(s, 0, size, &seen, &fetched)));
    (fetched.into_inner(), t.elapsed())
}

fn on_broker(app: &App, size: u64) -> (usize, Duration) {
    let client = app.client().expect("start the client");
    let mut seen = HashSet::from([0u64]);
    let t = Instant::now();
    let mut pending = client.as_completed([client.submit(crawl::s(0, size)).expect("submit")]);
    let mut fetched = 0;
    while let Some(done) = pending.next() {
        fetched += 1;
        let links = done.result().expect("a page");
        let new: Vec<u64> = links.into_iter().filter(|l| seen.insert(*l)).collect();
        for f in client.map(|l| crawl::s(l, size), new).expect("submit") {
            pending.add(f);
        }
    }
    (fetched, t.elapsed())
}

fn main() {
    lovage::init();
    let quick = std::env::args().any(|a| a == "--quick");
    let size: u64 = if quick { 5_000 } else { 100_000 };
    let expected = reachable(size);
    println!("site: {size} pages, {expected} reachable from page 0");

    let (pages, took) = on_threads(size);
    assert_eq!(pages, expected, "threads: every page once");
    println!(
        "thread pool (2 threads, tasks spawning tasks in a scope): {pages} pages in {took:?}, {:.2} µs/page",
        took.as_secs_f64() * 1e6 / pages as f64
    );

    let dir = tempfile::tempdir().expect("temporary directory");
    let url = format!("sqlite://{}", dir.path().join("crawl.db").display());
    let app = App::connect(&url).expect("open the broker");
    let config = WorkerConfig {
        pool: PoolKind::Threads,
        concurrency: 2,
        ..Default::default()
    };
    let worker = Worker::new(app.backend().clone(), config).expect("start the worker");
    let stop = worker.shutdown_handle();
    let running = std::thread::spawn(move || worker.run().expect("start the worker threads"));
    let (pages, took) = on_broker(&app, size);
    assert_eq!(pages, expected, "broker: every page once");
    println!(
        "SQLite broker (a 2-thread worker, the futures client adding pages as they come): {pages} pages in {took:?}, {:.1} µs/page",
        took.as_secs_f64() * 1e6 / pages as f64
    );
    stop.graceful();
    running.join().expect("worker thread");
}
