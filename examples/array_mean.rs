//! The seed's `dask.array` example: the mean of a billion random float64s in chunks of ten
//! million, which never exist in memory at once (each task generates its chunk piece by piece
//! and folds it), then a 2-D array reduced along an axis and written to a `.npy` file.
//!
//! Run: `cargo run --release --example array_mean` (add `--quick` for 10 million values)

use std::time::Instant;

use lovage::array::Array;
use lovage::collections::{compute, Error};
use lovage::graph::{Graph, Inline, Threads};
use lovage::workloads::quick_from_args;
use lovage::ThreadPool;

fn main() -> Result<(), Error> {
    let quick = quick_from_args();
    let n = if quick { 10_000_000 } else { 1_000_000_000 };
    let pool = ThreadPool::new(2);

    // da.random.random((n,), chunks=10_000_000).mean().compute()
    let g = Graph::new();
    let x = Array::random(&g, &[n], &[10_000_000.min(n / 4)], 0)?;
    let t = Instant::now();
    let (mean, std) = compute(&g, Threads(&pool), (x.mean(), x.std()))?;
    println!(
        "mean of {n} random values in {} chunks: {mean:.6} (std {std:.6}, 1/√12 = {:.6}) in {:.2?}",
        x.nblocks(),
        1.0 / 12f64.sqrt(),
        t.elapsed()
    );
    assert!((mean - 0.5).abs() < 1e-3, "a uniform mean is near 0.5");

    // The same numbers whatever the chunking: a different grid gives the same mean.
    let y = Array::random(&g, &[n], &[n / 3 + 1], 0)?;
    let other = compute(&g, Inline, y.mean())?;
    println!("same array in 3 chunks, inline: {other:.6}");
    assert!((other - mean).abs() < 1e-12);

    // 2-D: column means of a 2,000 × 500 array, its largest element, and a .npy file.
    let m = Array::random(&g, &[2_000, 500], &[512, 128], 1)?.map(|v| v * 10.0);
    let cols = m.mean_axis(0)?.compute(Threads(&pool))?;
    let at = compute(&g, Threads(&pool), m.argmax())?;
    println!(
        "2,000 × 500: {} column means around {:.3}; largest element at flat index {at}",
        cols.len(),
        cols.mean().unwrap_or(f64::NAN)
    );
    let dir = std::env::temp_dir().join(format!("lovage-array-mean-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| Error::Input(e.to_string()))?;
    let path = compute(&g, Threads(&pool), m.to_npy(dir.join("m.npy")))?;
    println!(
        "wrote {} ({} bytes)",
        path.display(),
        std::fs::metadata(&path).map_or(0, |md| md.len())
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
