//! Monte Carlo π: independent sample streams summed at the end.
//!
//! Run: `cargo run --release --example pi` (add `--quick` for a tiny run)

use std::time::Instant;

use lovage::workloads::pi::{estimate, pi_hits};
use lovage::workloads::{print_speedup, quick_from_args};
use lovage::ThreadPool;

fn main() {
    lovage::init();
    let parts = 32u64;
    let per_part = if quick_from_args() { 10_000 } else { 8_000_000 };
    let workers = 2;

    let t = Instant::now();
    let serial: u64 = (0..parts).map(|seed| pi_hits(seed, per_part)).sum();
    let serial_time = t.elapsed();

    let pool = ThreadPool::new(workers);
    let t = Instant::now();
    let handles: Vec<_> = (0..parts)
        .map(|seed| pool.submit(move || pi_hits(seed, per_part)))
        .collect();
    let parallel: u64 = handles.into_iter().map(|h| h.result().unwrap()).sum();
    let parallel_time = t.elapsed();

    assert_eq!(serial, parallel, "same seeds, same samples");
    println!(
        "π ≈ {:.6} from {} samples",
        estimate(parallel, parts * per_part),
        parts * per_part
    );
    print_speedup("thread pool", workers, serial_time, parallel_time);
}
