//! The seeds' deliberately slow recursive Fibonacci, several calls at once on a process pool
//! (the seeds use `ProcessPoolExecutor.map(fib, numbers)`).
//!
//! Run: `cargo run --release --example fib` (add `--quick` for a tiny run)

use std::hint::black_box;
use std::time::Instant;

use lovage::workloads::fib::fib;
use lovage::workloads::{print_speedup, quick_from_args};
use lovage::ProcessPool;

fn main() {
    lovage::init();
    let numbers: Vec<u32> = if quick_from_args() {
        vec![20; 4]
    } else {
        vec![35; 16]
    };
    let workers = 2;

    let t = Instant::now();
    let serial: Vec<u64> = numbers.iter().map(|&n| fib(black_box(n))).collect();
    let serial_time = t.elapsed();

    let pool = ProcessPool::new(workers);
    let t = Instant::now();
    let parallel: Vec<u64> = pool
        .map(fib::s, numbers.clone(), 1)
        .map(Result::unwrap)
        .collect();
    let parallel_time = t.elapsed();

    assert_eq!(serial, parallel);
    println!(
        "fib({}) = {} ({} calls)",
        numbers[0],
        parallel[0],
        numbers.len()
    );
    print_speedup("process pool", workers, serial_time, parallel_time);
}
