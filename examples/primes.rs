//! Count primes by trial division, serially and on a thread pool and a process pool.
//!
//! Run: `cargo run --release --example primes` (add `--quick` for a tiny run)

use std::time::Instant;

use lovage::workloads::primes::count_primes;
use lovage::workloads::{print_speedup, quick_from_args, split_range};
use lovage::{ProcessPool, ThreadPool};

fn main() {
    lovage::init();
    let (lo, hi) = if quick_from_args() {
        (10_000_000, 10_005_000)
    } else {
        (10_000_000, 12_000_000)
    };
    let workers = 2;

    let t = Instant::now();
    let serial = count_primes(lo, hi);
    let serial_time = t.elapsed();

    // Many more chunks than workers: the upper ranges cost more, so small pieces balance.
    let ranges = split_range(lo, hi, 64);
    let pool = ThreadPool::new(workers);
    let t = Instant::now();
    let threads: u64 = pool
        .map(|(a, b)| count_primes(a, b), ranges.clone(), 1)
        .map(Result::unwrap)
        .sum();
    let thread_time = t.elapsed();

    let procs = ProcessPool::new(workers);
    let t = Instant::now();
    let processes: u64 = procs
        .map(|(a, b)| count_primes::s(a, b), ranges, 1)
        .map(Result::unwrap)
        .sum();
    let process_time = t.elapsed();

    assert_eq!((threads, processes), (serial, serial));
    println!("{serial} primes in [{lo}, {hi})");
    print_speedup("thread pool ", workers, serial_time, thread_time);
    print_speedup("process pool", workers, serial_time, process_time);
}
