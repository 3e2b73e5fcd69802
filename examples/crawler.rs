//! The seeds' crawler: pages found at run time, each fetched once, until nothing is left — the
//! seeds' `queue.join()`:
//!
//! - on a thread pool, tasks spawning tasks in `pool.scope`, which returns when every one has
//!   finished;
//! - on a process pool, the registered task `lovage.crawl` spawning its links from inside its
//!   child process into `pool.scope` (`lovage_pool::process::scope::spawn_keyed`);
//! - on a broker, tasks spawning tasks from inside (`lovage::ctx().spawn_keyed`, keyed by page,
//!   so a page found twice runs once) in `app.scope`, which returns when every task spawned
//!   inside, transitively, has finished — counted in the broker, so any number of workers on
//!   any hosts can take part.
//!
//! The site is synthetic (no network): page `p` links to 8 pages picked by a hash of `p`, with
//! duplicates and cycles (see `lovage::workloads::crawl`, whose `crawl` task is the one the
//! broker runs).
//!
//! Run: `cargo run --release --example crawler` (`--quick`: a smaller site)

use std::time::Instant;

use lovage::workloads::crawl::{crawl, on_processes, on_threads, page_key, reachable};
use lovage::{App, PoolKind, ProcessPool, ThreadPool, Worker, WorkerConfig};

fn main() {
    lovage::init();
    let quick = std::env::args().any(|a| a == "--quick");
    let size: u64 = if quick { 5_000 } else { 100_000 };
    let expected = reachable(size);
    println!("site: {size} pages, {expected} reachable from page 0");

    let pool = ThreadPool::new(2);
    let t = Instant::now();
    let pages = on_threads(&pool, size);
    let took = t.elapsed();
    assert_eq!(pages, expected, "threads: every page once");
    println!(
        "thread pool (2 threads, tasks spawning tasks in a scope): {pages} pages in {took:?}, {:.2} µs/page",
        took.as_secs_f64() * 1e6 / pages as f64
    );

    let procs = ProcessPool::new(2);
    let t = Instant::now();
    let report = on_processes(&procs, size);
    let took = t.elapsed();
    assert_eq!(
        report.spawned as usize, expected,
        "processes: every page once"
    );
    assert!(report.failed.is_empty(), "failed: {:?}", report.failed);
    println!(
        "process pool (2 children, lovage.crawl spawning into pool.scope): {} pages in {took:?}, {:.2} µs/page",
        report.succeeded,
        took.as_secs_f64() * 1e6 / report.spawned as f64
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
    let t = Instant::now();
    let report = app
        .scope(|s| s.spawn_keyed(&page_key(0), crawl::s(0, size)))
        .expect("the crawl's scope");
    let took = t.elapsed();
    report.value.expect("send the first page");
    assert_eq!(report.spawned as usize, expected, "broker: every page once");
    assert!(report.failed.is_empty(), "failed: {:?}", report.failed);
    println!(
        "SQLite broker (a 2-thread worker, pages spawned from inside tasks into app.scope): {} pages in {took:?}, {:.1} µs/page",
        report.succeeded,
        took.as_secs_f64() * 1e6 / report.spawned as f64
    );
    stop.graceful();
    running.join().expect("worker thread");
}
