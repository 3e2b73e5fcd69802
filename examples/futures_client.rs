//! Dask's futures client on lovage's queue: `submit`, `map`, `as_completed`, `wait`, `gather`,
//! `cancel`, `.await` and futures as arguments (`submit_after`), all watched by one thread of the client whatever the number of
//! futures. The worker runs in a thread here; in production it is `lovage worker` on any host.
//!
//! Run: `cargo run --release --example futures_client` (`--quick`: fewer tasks)

use std::time::{Duration, Instant};

use lovage::futures::ReturnWhen;
use lovage::{App, PoolKind, SubmitAfter, Worker, WorkerConfig};

#[lovage::task]
fn square(x: i64) -> i64 {
    x * x
}

#[lovage::task]
fn add(a: i64, b: i64) -> i64 {
    a + b
}

#[lovage::task]
fn inverse(x: i64) -> Result<f64, String> {
    if x == 0 {
        Err("cannot invert 0".into())
    } else {
        Ok(1.0 / x as f64)
    }
}

fn main() {
    lovage::init();
    let quick = std::env::args().any(|a| a == "--quick");
    let n: i64 = if quick { 2_000 } else { 100_000 };
    let dir = tempfile::tempdir().expect("temporary directory");
    let url = format!("sqlite://{}", dir.path().join("client.db").display());
    let app = App::connect(&url).expect("open the broker");
    let config = WorkerConfig {
        pool: PoolKind::Threads,
        concurrency: 2,
        ..Default::default()
    };
    let worker = Worker::new(app.backend().clone(), config).expect("start the worker");
    let stop = worker.shutdown_handle();
    let running = std::thread::spawn(move || worker.run().expect("start the worker threads"));

    let client = app.client().expect("start the client");

    // client.submit(square, 7).result()
    let seven = client.submit(square::s(7)).expect("submit");
    println!("square(7) = {}", seven.result().expect("result"));

    // client.map(square, range(n)), then as_completed: results as they come.
    let t = Instant::now();
    let futures = client.map(square::s, 0..n).expect("map");
    println!(
        "{n} futures sent in {:?}; the client watches {} of them with one thread",
        t.elapsed(),
        client.pending()
    );
    let mut total = 0i64;
    for f in client.as_completed(futures) {
        total += f.result().expect("result");
    }
    let expected: i64 = (0..n).map(|x| x * x).sum();
    assert_eq!(total, expected);
    println!(
        "sum of squares below {n} = {total}, every future done in {:?} ({:.0} tasks/s)",
        t.elapsed(),
        n as f64 / t.elapsed().as_secs_f64()
    );

    // wait(FIRST_EXCEPTION): stops at the failure, the rest are split off.
    let fs = client.map(inverse::s, [4, 2, 0, 1]).expect("map");
    let waited = client.wait(
        fs,
        ReturnWhen::FirstException,
        Some(Duration::from_secs(30)),
    );
    for f in waited.done {
        match f.result() {
            Ok(v) => println!("  inverse ok: {v}"),
            Err(e) => println!("  inverse failed: {e}"),
        }
    }
    for f in waited.not_done {
        client.cancel(&f).expect("cancel");
    }

    // A future is a std Future too.
    let awaited = lovage::block_on(client.submit(square::s(12)).expect("submit"));
    println!("awaited square(12) = {}", awaited.expect("result"));

    // client.submit(add, a, b) with futures as arguments: the workers release it once a and
    // b are done (the caller could exit meanwhile).
    let a = client.submit(square::s(3)).expect("submit");
    let b = client.submit_after(add::after(&a, 1)).expect("submit");
    let c = client.submit_after(add::after(&a, &b)).expect("submit");
    println!(
        "add(square(3), square(3) + 1) = {}",
        c.result().expect("result")
    );

    // A cancelled future's task never runs.
    let later = client
        .submit(square::s(1).countdown(Duration::from_secs(3600)))
        .expect("submit");
    client.cancel(&later).expect("cancel");
    println!("cancelled: {}", later.result().unwrap_err());

    stop.graceful();
    running.join().expect("worker thread");
}
