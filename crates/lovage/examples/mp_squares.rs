//! Seed 000's shared memory: four processes fill disjoint quarters of a shared `Array` with
//! squares (Python's `multiprocessing.Array('i', n)`), no lock needed: each claims its range.
//!
//! Run: `cargo run --release --example mp_squares [-- --quick]`

use std::time::Instant;

use lovage::mp::{Array, Process};

#[lovage::task]
fn worker(result: Array<u64>, index: usize, n: usize) {
    let len = result.len();
    let start = index * (len / n);
    let end = if index < n - 1 {
        (index + 1) * (len / n)
    } else {
        len
    };
    let mut chunk = result.claim(start..end).unwrap();
    for (i, x) in chunk.iter_mut().enumerate() {
        let d = (start + i) as u64;
        *x = d * d;
    }
}

fn main() {
    lovage::init();
    let quick = std::env::args().any(|a| a == "--quick");
    let len = if quick { 10_000 } else { 1_000_000 };

    let t = Instant::now();
    let shared_result = Array::<u64>::new(len).unwrap();
    let processes: Vec<_> = (0..4)
        .map(|i| Process::spawn(worker::s(shared_result.clone(), i, 4)).unwrap())
        .collect();
    for p in processes {
        assert!(p.join().unwrap().success());
    }
    let elapsed = t.elapsed();
    let all = shared_result.to_vec();
    assert!(all
        .iter()
        .enumerate()
        .all(|(i, x)| *x == (i as u64) * (i as u64)));
    println!(
        "{len} squares by 4 processes in {elapsed:?}; last = {}",
        all[len - 1]
    );
}
