//! Dense matrix multiply split by rows (the seeds' `multiply_row` with `pool.map`).

use std::sync::{Arc, Mutex, OnceLock};

use super::{Scale, Workload};
use crate::{ProcessPool, ThreadPool};

/// An `n`×`n` row-major matrix of values in [0, 1), the same for the same seed.
pub fn random_matrix(n: usize, seed: u64) -> Vec<f64> {
    let mut rng = fastrand::Rng::with_seed(seed);
    (0..n * n).map(|_| rng.f64()).collect()
}

/// Rows `lo..hi` of `a`×`b` (both `n`×`n`, row-major), row-major.
///
/// The `k` loop is blocked so a panel of `b` stays in cache while every row of the block uses
/// it; each output element still sums over `k` in ascending order, so the result does not
/// depend on how rows are split.
pub fn multiply_rows(a: &[f64], b: &[f64], n: usize, lo: usize, hi: usize) -> Vec<f64> {
    const K_BLOCK: usize = 64;
    let mut out = vec![0.0; (hi - lo) * n];
    for kb in (0..n).step_by(K_BLOCK) {
        let k_end = (kb + K_BLOCK).min(n);
        for (r, row) in (lo..hi).zip(out.chunks_mut(n)) {
            for k in kb..k_end {
                let aik = a[r * n + k];
                let brow = &b[k * n..(k + 1) * n];
                for (o, &bkj) in row.iter_mut().zip(brow) {
                    *o += aik * bkj;
                }
            }
        }
    }
    out
}

type Pair = Arc<(Vec<f64>, Vec<f64>)>;

/// The two factor matrices for `seed`, generated once per process (a few are kept).
fn factors(seed: u64, n: usize) -> Pair {
    static CACHE: Mutex<Vec<(u64, usize, Pair)>> = Mutex::new(Vec::new());
    let mut cache = CACHE.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((_, _, pair)) = cache.iter().find(|(s, m, _)| *s == seed && *m == n) {
        return pair.clone();
    }
    let pair = Arc::new((random_matrix(n, seed), random_matrix(n, seed ^ 0x9e37_79b9)));
    if cache.len() >= 16 {
        cache.remove(0);
    }
    cache.push((seed, n, pair.clone()));
    pair
}

/// Rows `lo..hi` of the product of the two matrices generated from `seed`; the child process
/// builds the factors itself (once), so only the result rows cross the pipe.
#[crate::task(name = "lovage.matmul_rows", codec = "msgpack")]
pub fn matmul_rows(seed: u64, n: u64, lo: u64, hi: u64) -> Vec<f64> {
    let f = factors(seed, n as usize);
    multiply_rows(&f.0, &f.1, n as usize, lo as usize, hi as usize)
}

/// A checksum of matrix values that does not depend on how the rows were split.
pub fn checksum(values: impl IntoIterator<Item = f64>) -> u64 {
    values.into_iter().fold(0xcbf2_9ce4_8422_2325, |h: u64, v| {
        (h ^ v.to_bits()).wrapping_mul(0x100_0000_01b3)
    })
}

/// `products` multiplications of `n`×`n` matrices, split into blocks of `rows` rows.
pub struct Matmul {
    n: usize,
    products: u64,
    rows: usize,
    /// Generated on first use, outside the timed part of later runs (as in the seeds, where the
    /// matrices exist before the clock starts).
    inputs: OnceLock<Vec<Pair>>,
}

impl Matmul {
    /// The benchmark's size at `scale`: 500×500 as in the seeds.
    pub fn new(scale: Scale) -> Self {
        match scale {
            Scale::Full => Matmul::sized(500, 12, 25),
            Scale::Quick => Matmul::sized(40, 2, 8),
        }
    }

    fn sized(n: usize, products: u64, rows: usize) -> Self {
        Matmul {
            n,
            products,
            rows,
            inputs: OnceLock::new(),
        }
    }

    fn inputs(&self) -> &[Pair] {
        self.inputs.get_or_init(|| {
            (0..self.products)
                .map(|seed| factors(seed, self.n))
                .collect()
        })
    }

    fn blocks(&self) -> Vec<(usize, usize)> {
        (0..self.n)
            .step_by(self.rows)
            .map(|lo| (lo, (lo + self.rows).min(self.n)))
            .collect()
    }
}

impl Workload for Matmul {
    fn name(&self) -> &'static str {
        "matmul"
    }
    fn describe(&self) -> String {
        format!(
            "{} x ({n}x{n} times {n}x{n}), by blocks of {} rows",
            self.products,
            self.rows,
            n = self.n
        )
    }
    fn serial(&self) -> u64 {
        self.inputs()
            .iter()
            .map(|f| checksum(multiply_rows(&f.0, &f.1, self.n, 0, self.n)))
            .fold(0, u64::wrapping_add)
    }
    fn threads(&self, pool: &ThreadPool) -> u64 {
        let n = self.n;
        // Every block of every product goes into one map, so no worker idles between products.
        let jobs = self.inputs().iter().flat_map(|f| {
            self.blocks()
                .into_iter()
                .map(move |(lo, hi)| (f.clone(), lo, hi))
        });
        let blocks = pool
            .map(
                move |(f, lo, hi)| multiply_rows(&f.0, &f.1, n, lo, hi),
                jobs.collect::<Vec<_>>(),
                1,
            )
            .map(|r| r.expect("matmul block"));
        self.checksum_products(blocks)
    }
    fn processes(&self, pool: &ProcessPool) -> Option<u64> {
        let n = self.n as u64;
        let jobs: Vec<(u64, u64, u64)> = (0..self.products)
            .flat_map(|seed| {
                self.blocks()
                    .into_iter()
                    .map(move |(lo, hi)| (seed, lo as u64, hi as u64))
            })
            .collect();
        let blocks = pool
            .map(
                move |(seed, lo, hi)| matmul_rows::s(seed, n, lo, hi),
                jobs,
                1,
            )
            .map(|r| r.expect("matmul block"));
        Some(self.checksum_products(blocks))
    }
}

impl Matmul {
    /// Sums the per-product checksums of result blocks that arrive in order, product by product.
    fn checksum_products(&self, blocks: impl Iterator<Item = Vec<f64>>) -> u64 {
        let per_product = self.blocks().len();
        let mut blocks = blocks.peekable();
        let mut total = 0u64;
        while blocks.peek().is_some() {
            let product = blocks.by_ref().take(per_product).flatten();
            total = total.wrapping_add(checksum(product));
        }
        total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_and_split_invariance() {
        let n = 7;
        let a = random_matrix(n, 3);
        let mut id = vec![0.0; n * n];
        for i in 0..n {
            id[i * n + i] = 1.0;
        }
        assert_eq!(multiply_rows(&a, &id, n, 0, n), a);
        let whole = multiply_rows(&a, &a, n, 0, n);
        let mut parts = multiply_rows(&a, &a, n, 0, 3);
        parts.extend(multiply_rows(&a, &a, n, 3, n));
        assert_eq!(checksum(whole), checksum(parts));
    }
}
