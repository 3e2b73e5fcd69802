//! 500×500 matrix multiply split by rows: blocks of rows borrow the matrices through a scope.
//!
//! Run: `cargo run --release --example matmul` (add `--quick` for a tiny run)

use std::time::Instant;

use lovage::workloads::matmul::{checksum, multiply_rows, random_matrix};
use lovage::workloads::{print_speedup, quick_from_args};
use lovage::ThreadPool;

fn main() {
    lovage::init();
    let n = if quick_from_args() { 60 } else { 500 };
    let (a, b) = (random_matrix(n, 1), random_matrix(n, 2));
    let workers = 2;
    let reps = 8;

    let t = Instant::now();
    let mut serial = Vec::new();
    for _ in 0..reps {
        serial = multiply_rows(&a, &b, n, 0, n);
    }
    let serial_time = t.elapsed();

    let pool = ThreadPool::new(workers);
    let t = Instant::now();
    let mut parallel = Vec::new();
    for _ in 0..reps {
        // A scope lets the tasks borrow `a` and `b` without copying or Arc.
        parallel = pool.scope(|s| {
            let blocks: Vec<_> = (0..n)
                .step_by(25)
                .map(|lo| {
                    let (a, b) = (&a, &b);
                    s.submit(move || multiply_rows(a, b, n, lo, (lo + 25).min(n)))
                })
                .collect();
            blocks
                .into_iter()
                .flat_map(|h| h.result().unwrap())
                .collect::<Vec<f64>>()
        });
    }
    let parallel_time = t.elapsed();

    assert_eq!(
        checksum(serial.iter().copied()),
        checksum(parallel.iter().copied())
    );
    println!(
        "{reps} x ({n}x{n}) x ({n}x{n}); C[0][0] = {:.4}",
        parallel[0]
    );
    print_speedup("thread pool", workers, serial_time, parallel_time);
}
