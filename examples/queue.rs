//! The task queue in one program: an SQLite broker file, a worker on a thread pool, a client
//! sending tasks and reading their results. In production the worker is its own process
//! (`lovage worker`, or your binary calling `Worker::run`), on as many hosts as you like.
//!
//! Run: `cargo run --release --example queue`

use std::time::Duration;

use lovage::{App, PoolKind, Worker, WorkerConfig};

#[lovage::task]
fn add(a: i64, b: i64) -> i64 {
    a + b
}

#[lovage::task(max_retries = 2, retry_backoff = "10ms")]
fn divide(a: i64, b: i64) -> Result<i64, String> {
    if b == 0 {
        Err(format!("cannot divide {a} by zero"))
    } else {
        Ok(a / b)
    }
}

fn main() {
    lovage::init();
    let dir = tempfile::tempdir().expect("temporary directory");
    let url = format!("sqlite://{}", dir.path().join("example.db").display());
    let app = App::connect(&url).expect("open the broker");

    // A worker in a thread of this program (it knows `add` and `divide`: same binary).
    let config = WorkerConfig {
        pool: PoolKind::Threads,
        concurrency: 2,
        ..Default::default()
    };
    let worker = Worker::new(app.backend().clone(), config).expect("start the worker");
    let stop = worker.shutdown_handle();
    let running = std::thread::spawn(move || worker.run().expect("start the worker threads"));

    // Celery-style: add.delay(2, 3), then .get(timeout).
    let sum = add::delay(&app, 2, 3).expect("send");
    println!(
        "add(2, 3) = {}",
        sum.get(Duration::from_secs(10)).expect("result")
    );

    // Options per call: priority, countdown (the task waits in the broker, not in memory).
    let later = app
        .send(
            add::s(40, 2)
                .priority(9)
                .countdown(Duration::from_millis(200)),
        )
        .expect("send");
    println!(
        "state right after sending: {}",
        later.state().expect("state")
    );
    println!(
        "add(40, 2) after its countdown = {}",
        later.get(Duration::from_secs(10)).expect("result")
    );

    // A failing task: retried by its policy, then FAILURE with the error kept.
    let bad = divide::delay(&app, 1, 0).expect("send");
    let err = bad.get(Duration::from_secs(10)).unwrap_err();
    let record = bad.record().expect("read").expect("recorded");
    println!("divide(1, 0): {err} after {} attempts", record.attempts);

    // Many at once, one broker write.
    let sigs = (0..1000).map(|i| add::s(i, i).into_signature());
    let ids = app.send_batch(sigs).expect("send batch");
    let total: i64 = ids
        .iter()
        .map(|id| {
            app.result::<i64>(*id)
                .get(Duration::from_secs(30))
                .expect("result")
        })
        .sum();
    println!("sum of 1000 results = {total}");

    stop.graceful();
    let report = running.join().expect("worker thread");
    println!(
        "worker: {} succeeded, {} failed, {} retried",
        report.succeeded, report.failed, report.retried
    );
}
