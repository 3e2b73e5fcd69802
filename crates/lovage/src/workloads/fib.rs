//! Naive recursive Fibonacci (the seeds' deliberately slow benchmark), several calls in parallel.

use std::hint::black_box;

use super::{Scale, Workload};
use crate::{ProcessPool, ThreadPool};

/// fib(n) the slow way, on purpose.
#[crate::task(name = "lovage.fib")]
pub fn fib(n: u32) -> u64 {
    if n <= 1 {
        n as u64
    } else {
        fib(n - 1) + fib(n - 2)
    }
}

/// `calls` evaluations of fib(`n`).
pub struct Fib {
    n: u32,
    calls: u32,
}

impl Fib {
    /// The benchmark's size at `scale`: fib(35) sixteen times, or fib(20).
    pub fn new(scale: Scale) -> Self {
        match scale {
            Scale::Full => Fib { n: 35, calls: 16 },
            Scale::Quick => Fib { n: 20, calls: 4 },
        }
    }
}

impl Workload for Fib {
    fn name(&self) -> &'static str {
        "fib"
    }
    fn describe(&self) -> String {
        format!("naive fib({}) x {}", self.n, self.calls)
    }
    fn serial(&self) -> u64 {
        // black_box: fib is pure, and the compiler would otherwise compute it once for all calls.
        (0..self.calls).map(|_| fib(black_box(self.n))).sum()
    }
    fn threads(&self, pool: &ThreadPool) -> u64 {
        let n = self.n;
        pool.map(move |_| fib(black_box(n)), 0..self.calls, 1)
            .map(|r| r.expect("fib call"))
            .sum()
    }
    fn processes(&self, pool: &ProcessPool) -> Option<u64> {
        let n = self.n;
        let sum = pool
            .map(move |_| fib::s(n), 0..self.calls, 1)
            .map(|r| r.expect("fib call"))
            .sum();
        Some(sum)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn first_values() {
        let v: Vec<u64> = (0..10).map(super::fib).collect();
        assert_eq!(v, vec![0, 1, 1, 2, 3, 5, 8, 13, 21, 34]);
    }
}
