//! A bounded producer–consumer pipeline: a producer thread fills a bounded channel, consumers
//! on the pool transform items, `main` collects. The bound keeps memory flat however fast the
//! producer is.
//!
//! Run: `cargo run --release --example pipeline` (add `--quick` for a tiny run)

use std::time::Instant;

use lovage::workloads::pipeline::Pipeline;
use lovage::workloads::{print_speedup, quick_from_args, Scale, Workload};
use lovage::ThreadPool;

fn main() {
    lovage::init();
    let scale = if quick_from_args() {
        Scale::Quick
    } else {
        Scale::Full
    };
    let pipeline = Pipeline::new(scale);
    let workers = 2;

    let t = Instant::now();
    let serial = pipeline.serial();
    let serial_time = t.elapsed();

    // The pattern itself is in `Pipeline::threads`: a sync_channel as the bounded queue, one
    // consumer task per worker submitted in a scope, results back over a second channel.
    let pool = ThreadPool::new(workers);
    let t = Instant::now();
    let parallel = pipeline.threads(&pool);
    let parallel_time = t.elapsed();

    assert_eq!(serial, parallel);
    println!("{}: checksum {parallel:#x}", pipeline.describe());
    print_speedup("thread pool", workers, serial_time, parallel_time);
}
