//! The seeds' CPU workloads, each runnable serially, on a [`ThreadPool`] and on a
//! [`ProcessPool`], with a checksum so every variant can be checked against the serial one.
//!
//! They back `lovage bench pool` and the examples in `examples/`; their kernels are also
//! registered tasks (`lovage.primes`, `lovage.pi`, ...), so a process pool or a queue can run them.

pub mod crawl;
pub mod fib;
pub mod matmul;
pub mod pi;
pub mod pipeline;
pub mod primes;

use crate::{ProcessPool, ThreadPool};

/// How big a run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scale {
    /// Sized for a benchmark: about half a second of serial work each.
    Full,
    /// A few milliseconds each: for tests and smoke runs.
    Quick,
}

/// A CPU-bound job that can be split over workers.
pub trait Workload: Send + Sync {
    /// Short name, used as a key (`primes`, `pi`, ...).
    fn name(&self) -> &'static str;
    /// What it computes, for tables.
    fn describe(&self) -> String;
    /// Runs on the calling thread; returns a checksum of the result.
    fn serial(&self) -> u64;
    /// Runs split over the thread pool; same checksum as [`serial`](Self::serial).
    fn threads(&self, pool: &ThreadPool) -> u64;
    /// Runs split over the process pool, when that makes sense for the workload.
    fn processes(&self, pool: &ProcessPool) -> Option<u64>;
}

/// Every workload at the given scale, in the order tables show them.
pub fn all(scale: Scale) -> Vec<Box<dyn Workload>> {
    vec![
        Box::new(primes::Primes::new(scale)),
        Box::new(pi::Pi::new(scale)),
        Box::new(matmul::Matmul::new(scale)),
        Box::new(fib::Fib::new(scale)),
        Box::new(pipeline::Pipeline::new(scale)),
    ]
}

/// Prints serial time, parallel time and speed-up, the way the examples report.
pub fn print_speedup(
    what: &str,
    workers: usize,
    serial: std::time::Duration,
    parallel: std::time::Duration,
) {
    println!(
        "{what}: serial {:.1} ms, {workers} workers {:.1} ms, speed-up {:.2}x",
        serial.as_secs_f64() * 1e3,
        parallel.as_secs_f64() * 1e3,
        serial.as_secs_f64() / parallel.as_secs_f64()
    );
}

/// True when the program was started with `--quick` (examples use small sizes then).
pub fn quick_from_args() -> bool {
    std::env::args().any(|a| a == "--quick")
}

/// Splits `lo..hi` into `parts` contiguous ranges that cover it exactly.
pub fn split_range(lo: u64, hi: u64, parts: u64) -> Vec<(u64, u64)> {
    let parts = parts.max(1);
    let len = hi.saturating_sub(lo);
    (0..parts)
        .map(|i| (lo + len * i / parts, lo + len * (i + 1) / parts))
        .filter(|(a, b)| a < b)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_range_covers_exactly() {
        for (lo, hi, parts) in [(0, 10, 3), (5, 6, 4), (0, 0, 2), (100, 1000, 7)] {
            let r = split_range(lo, hi, parts);
            let total: u64 = r.iter().map(|(a, b)| b - a).sum();
            assert_eq!(total, hi - lo);
            assert!(r.windows(2).all(|w| w[0].1 == w[1].0));
        }
    }

    #[test]
    fn thread_variants_match_serial() {
        let pool = ThreadPool::new(2);
        for w in all(Scale::Quick) {
            assert_eq!(w.threads(&pool), w.serial(), "{}", w.name());
        }
    }
}
