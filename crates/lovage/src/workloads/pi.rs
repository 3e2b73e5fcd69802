//! Estimate π by Monte Carlo sampling (the seeds' `monte_carlo_pi_part`).

use super::{Scale, Workload};
use crate::{ProcessPool, ThreadPool};

/// How many of `samples` random points in the unit square, drawn from `seed`, fall inside the
/// quarter circle. Deterministic for a given seed.
#[crate::task(name = "lovage.pi")]
pub fn pi_hits(seed: u64, samples: u64) -> u64 {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut hits = 0;
    for _ in 0..samples {
        let (x, y) = (rng.f64(), rng.f64());
        if x * x + y * y <= 1.0 {
            hits += 1;
        }
    }
    hits
}

/// π from a hit count.
pub fn estimate(hits: u64, samples: u64) -> f64 {
    4.0 * hits as f64 / samples as f64
}

/// `parts` independent streams of `per_part` samples each.
pub struct Pi {
    parts: u64,
    per_part: u64,
}

impl Pi {
    /// The benchmark's size at `scale`.
    pub fn new(scale: Scale) -> Self {
        let per_part = match scale {
            Scale::Full => 8_000_000,
            Scale::Quick => 10_000,
        };
        Pi {
            parts: 32,
            per_part,
        }
    }
}

impl Workload for Pi {
    fn name(&self) -> &'static str {
        "pi"
    }
    fn describe(&self) -> String {
        format!("Monte Carlo π, {} samples", self.parts * self.per_part)
    }
    fn serial(&self) -> u64 {
        (0..self.parts)
            .map(|seed| pi_hits(seed, self.per_part))
            .sum()
    }
    fn threads(&self, pool: &ThreadPool) -> u64 {
        let per = self.per_part;
        pool.map(move |seed| pi_hits(seed, per), 0..self.parts, 1)
            .map(|r| r.expect("pi part"))
            .sum()
    }
    fn processes(&self, pool: &ProcessPool) -> Option<u64> {
        let per = self.per_part;
        let sum = pool
            .map(move |seed| pi_hits::s(seed, per), 0..self.parts, 1)
            .map(|r| r.expect("pi part"))
            .sum();
        Some(sum)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn estimate_is_close_to_pi() {
        let hits = super::pi_hits(1, 200_000);
        assert!((super::estimate(hits, 200_000) - std::f64::consts::PI).abs() < 0.05);
    }
}
