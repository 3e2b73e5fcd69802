//! The seed's mini project, "big data analysis with Dask", on lovage's frames: 50 million
//! e-commerce rows in 50 partitions, the mean of `total_sales`, the max and min price, sales
//! by category, the top 5 products, a bar chart of sales by category (SVG), then the mean of
//! a billion random numbers with `lovage::array`. Each step's time is printed.
//!
//! Run: `cargo run --release -p lovage --features frames --example ecommerce` (add `--quick`
//! for 200,000 rows and ten million numbers). This runs on a thread pool; `lovage demo
//! --frames` runs the same steps on threads and then on two worker processes through a
//! broker.

use lovage::frame::ecommerce::{run, Sizes};
use lovage::graph::Threads;
use lovage::workloads::quick_from_args;
use lovage::ThreadPool;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let sizes = if quick_from_args() {
        Sizes::quick()
    } else {
        Sizes::full()
    };
    let pool = ThreadPool::new(2);
    let report = run(Threads(&pool), &sizes)?;
    println!("{report}");
    let path = std::env::temp_dir().join("lovage-ecommerce-sales-by-category.svg");
    std::fs::write(&path, &report.svg)?;
    println!("bar chart: {}", path.display());
    // Every category has about a fifth of the sales: a check that the run is not empty.
    assert_eq!(report.by_category.len(), 5);
    assert!(report.mean_total_sales > 0.0);
    Ok(())
}
