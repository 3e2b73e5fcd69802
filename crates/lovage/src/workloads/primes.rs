//! Count primes in a range by trial division (the seeds' "prime number checker").

use super::{split_range, Scale, Workload};
use crate::{ProcessPool, ThreadPool};

/// True if `n` is prime, by trial division up to √n.
pub fn is_prime(n: u64) -> bool {
    if n < 2 {
        return false;
    }
    if n % 2 == 0 {
        return n == 2;
    }
    let mut i = 3;
    while i * i <= n {
        if n % i == 0 {
            return false;
        }
        i += 2;
    }
    true
}

/// The number of primes in `lo..hi`.
#[crate::task(name = "lovage.primes")]
pub fn count_primes(lo: u64, hi: u64) -> u64 {
    (lo..hi).filter(|&n| is_prime(n)).count() as u64
}

/// Primes in `[start, start + count)`, in `chunks` pieces.
pub struct Primes {
    start: u64,
    count: u64,
    chunks: u64,
}

impl Primes {
    /// The benchmark's size at `scale`.
    pub fn new(scale: Scale) -> Self {
        let count = match scale {
            Scale::Full => 2_000_000,
            Scale::Quick => 5_000,
        };
        Primes {
            start: 10_000_000,
            count,
            chunks: 64,
        }
    }

    fn ranges(&self) -> Vec<(u64, u64)> {
        split_range(self.start, self.start + self.count, self.chunks)
    }
}

impl Workload for Primes {
    fn name(&self) -> &'static str {
        "primes"
    }
    fn describe(&self) -> String {
        format!(
            "count primes in [{}, {}) by trial division",
            self.start,
            self.start + self.count
        )
    }
    fn serial(&self) -> u64 {
        count_primes(self.start, self.start + self.count)
    }
    fn threads(&self, pool: &ThreadPool) -> u64 {
        pool.map(|(lo, hi)| count_primes(lo, hi), self.ranges(), 1)
            .map(|r| r.expect("primes chunk"))
            .sum()
    }
    fn processes(&self, pool: &ProcessPool) -> Option<u64> {
        let sum = pool
            .map(|(lo, hi)| count_primes::s(lo, hi), self.ranges(), 1)
            .map(|r| r.expect("primes chunk"))
            .sum();
        Some(sum)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_primes() {
        let small: Vec<u64> = (0..30).filter(|&n| is_prime(n)).collect();
        assert_eq!(small, vec![2, 3, 5, 7, 11, 13, 17, 19, 23, 29]);
        assert_eq!(count_primes(0, 1000), 168);
    }
}
