//! Seed 000's message passing: a producer and a consumer process joined by two queues, `None`
//! as the end-of-data sentinel (Python's `multiprocessing.Queue`).
//!
//! Run: `cargo run --release --example mp_producer_consumer [-- --quick]`

use lovage::mp::{Process, Queue};

#[lovage::task]
fn producer(queue: Queue<Option<u64>>, n: u64) {
    for i in 0..n {
        queue.put(&Some(i)).unwrap();
    }
    queue.put(&None).unwrap(); // signal end of data
}

#[lovage::task]
fn consumer(queue: Queue<Option<u64>>, results: Queue<Option<u64>>) {
    while let Some(item) = queue.get().unwrap() {
        results.put(&Some(item * item)).unwrap();
    }
    results.put(&None).unwrap();
}

fn main() {
    lovage::init();
    let quick = std::env::args().any(|a| a == "--quick");
    let n = if quick { 10 } else { 100_000 };

    let task_queue = Queue::new().unwrap();
    let result_queue = Queue::new().unwrap();
    let prod = Process::spawn(producer::s(task_queue.clone(), n)).unwrap();
    let cons = Process::spawn(consumer::s(task_queue, result_queue.clone())).unwrap();

    let mut collected = Vec::new();
    while let Some(r) = result_queue.get().unwrap() {
        collected.push(r);
    }
    prod.join().unwrap();
    cons.join().unwrap();
    assert_eq!(collected.len() as u64, n);
    assert!(collected
        .iter()
        .enumerate()
        .all(|(i, r)| *r == (i as u64).pow(2)));
    println!(
        "{} squares through two queues; first: {:?}",
        collected.len(),
        &collected[..collected.len().min(10)]
    );
}
