//! The seed's mini project ("big data analysis with Dask"), shared by `examples/ecommerce`,
//! `lovage demo --frames` and `lovage bench frames`: e-commerce rows (product_id, category of
//! 5, price uniform 5–500, units_sold 1–49) in partitions, then the mean of `total_sales`,
//! the max and min price, sales by category, the top 5 products, a bar chart, and the mean of
//! many random numbers with `lovage::array`.

use std::path::Path;
use std::time::{Duration, Instant};

use lovage_collections::array::Array;
use lovage_graph::{Graph, Scheduler};
use polars::prelude::*;

use crate::{agg, compute, Error, Frame};

/// The five categories.
pub const CATEGORIES: [&str; 5] = ["Books", "Clothing", "Electronics", "Home", "Toys"];

/// Distinct product ids.
pub const PRODUCTS: i64 = 10_000;

/// The mini project's sizes.
#[derive(Clone, Debug)]
pub struct Sizes {
    /// Rows of sales data (the seed: 50 million).
    pub rows: usize,
    /// Partitions (the seed: 50).
    pub partitions: usize,
    /// Random numbers whose mean is taken (the seed: a billion).
    pub numbers: usize,
    /// Numbers per array chunk.
    pub chunk: usize,
}

impl Sizes {
    /// The seed's sizes: 50M rows in 50 partitions, a billion numbers.
    pub fn full() -> Self {
        Sizes {
            rows: 50_000_000,
            partitions: 50,
            numbers: 1_000_000_000,
            chunk: 10_000_000,
        }
    }

    /// Small sizes for a smoke run: 200k rows, 10 million numbers.
    pub fn quick() -> Self {
        Sizes {
            rows: 200_000,
            partitions: 50,
            numbers: 10_000_000,
            chunk: 1_000_000,
        }
    }
}

/// One step's name, wall time and a line saying what it found.
#[derive(Clone, Debug)]
pub struct Step {
    /// What the step does.
    pub name: &'static str,
    /// Its wall time.
    pub took: Duration,
    /// What it found.
    pub result: String,
}

/// The whole run's results.
#[derive(Clone, Debug)]
pub struct Report {
    /// Each step in order.
    pub steps: Vec<Step>,
    /// Mean of `total_sales`.
    pub mean_total_sales: f64,
    /// Sales by category, in `CATEGORIES` order of the frame (category, total).
    pub by_category: Vec<(String, f64)>,
    /// The bar chart of sales by category.
    pub svg: String,
}

/// Each step's name, time and finding on a line of its own, then the total time.
impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for s in &self.steps {
            let took = s.took.as_secs_f64();
            writeln!(f, "  {:<40} {took:>9.3} s  {}", s.name, s.result)?;
        }
        let total: f64 = self.steps.iter().map(|s| s.took.as_secs_f64()).sum();
        write!(f, "  {:<40} {total:>9.3} s", "total")
    }
}

/// The schema of the generated rows.
pub fn schema() -> Schema {
    Schema::from_iter([
        Field::new("product_id".into(), DataType::Int64),
        Field::new("category".into(), DataType::String),
        Field::new("price".into(), DataType::Float64),
        Field::new("units_sold".into(), DataType::Int64),
    ])
}

/// Partition `i` of `rows` rows cut into `partitions` (the same rows for the same `i`).
pub fn generate_partition(i: usize, rows: usize, partitions: usize) -> PolarsResult<DataFrame> {
    let n = rows / partitions + usize::from(i < rows % partitions);
    let mut rng = fastrand::Rng::with_seed(0x5eed_0000 + i as u64);
    let mut product = Vec::with_capacity(n);
    let mut price = Vec::with_capacity(n);
    let mut units = Vec::with_capacity(n);
    let mut cats = Vec::with_capacity(n);
    for _ in 0..n {
        product.push(rng.i64(1..=PRODUCTS));
        cats.push(CATEGORIES[rng.usize(0..CATEGORIES.len())]);
        price.push(5.0 + rng.f64() * 495.0);
        units.push(rng.i64(1..50));
    }
    DataFrame::new_infer_height(vec![
        Column::new("product_id".into(), product),
        Column::new("category".into(), cats),
        Column::new("price".into(), price),
        Column::new("units_sold".into(), units),
    ])
}

/// The generated rows as a frame made when computed (nothing is held in between).
pub fn sales<'g>(g: &'g Graph, rows: usize, partitions: usize) -> Frame<'g> {
    let parts = partitions.max(1);
    Frame::from_fn(g, schema(), parts, move |i| {
        generate_partition(i, rows, parts)
    })
}

fn timed<T>(f: impl FnOnce() -> Result<T, Error>) -> Result<(T, Duration), Error> {
    let t = Instant::now();
    let v = f()?;
    Ok((v, t.elapsed()))
}

fn f64_at(df: &DataFrame, column: &str, row: usize) -> Result<f64, Error> {
    df.column(column)
        .and_then(|c| c.cast(&DataType::Float64))
        .map_err(|e| Error::Input(e.to_string()))?
        .f64()
        .map_err(|e| Error::Input(e.to_string()))?
        .get(row)
        .ok_or_else(|| Error::Input(format!("no {column} in row {row}")))
}

/// Runs every step on `scheduler`, timing each: the data are generated once and kept in
/// memory (as the seed's pandas frame is), then `total_sales` is made and kept (as a Dask
/// user persists it), then each question is one computation.
pub fn run(scheduler: Scheduler<'_>, sizes: &Sizes) -> Result<Report, Error> {
    let mut steps = Vec::new();
    let g = Graph::new();
    let (parts, took) = timed(|| {
        compute(
            &g,
            scheduler,
            sales(&g, sizes.rows, sizes.partitions).partitions(),
        )
    })?;
    steps.push(Step {
        name: "generate",
        took,
        result: format!("{} rows in {} partitions", sizes.rows, parts.len()),
    });
    // Dask's users persist the frame with its new column (`df["total_sales"] = ...;
    // df.persist()`), so each question reads the column rather than making it again.
    let g = Graph::new();
    let (parts, took) = timed(|| {
        let df = with_total_sales(&Frame::from_partitions(&g, parts)?)?;
        compute(&g, scheduler, df.partitions())
    })?;
    steps.push(Step {
        name: TOTAL_SALES_STEP,
        took,
        result: format!("price × units_sold in {} partitions", parts.len()),
    });
    let g = Graph::new();
    let df = Frame::from_partitions(&g, parts)?;
    questions(scheduler, df, sizes, steps)
}

/// The step that makes and keeps the `total_sales` column.
pub const TOTAL_SALES_STEP: &str = "total_sales column (kept)";

/// `total_sales = price × units_sold`, the seed's new column.
fn total_sales() -> Expr {
    (col("price") * col("units_sold").cast(DataType::Float64)).alias("total_sales")
}

fn with_total_sales<'g>(sales: &Frame<'g>) -> Result<Frame<'g>, Error> {
    sales.with_columns([total_sales()])
}

/// Runs every step on `scheduler` (a broker's workers, say) over Parquet files: the rows are
/// generated on `local` (a thread pool of this process: generating runs a closure) and
/// written to `dir`, a file per partition, once; then each question is one computation
/// that reads the files where its tasks run (Dask's `read_parquet`), so no rows travel
/// through the broker. `dir` must be readable by every worker.
pub fn run_on_files(
    local: Scheduler<'_>,
    scheduler: Scheduler<'_>,
    sizes: &Sizes,
    dir: &Path,
) -> Result<Report, Error> {
    let mut steps = Vec::new();
    let g = Graph::new();
    let (files, took) = timed(|| {
        let written = sales(&g, sizes.rows, sizes.partitions).to_parquet(dir)?;
        compute(&g, local, written)
    })?;
    steps.push(Step {
        name: "generate (Parquet files)",
        took,
        result: format!("{} rows in {} files", sizes.rows, files.len()),
    });
    let g = Graph::new();
    let pattern = dir.join("*.parquet");
    // Made as each question reads the files: nothing is kept between questions here.
    let df = with_total_sales(&crate::read_parquet(&g, &pattern.display().to_string())?)?;
    questions(scheduler, df, sizes, steps)
}

/// The seed's questions over `df` (the generated rows with their `total_sales`), each timed
/// and pushed on `steps`.
fn questions(
    scheduler: Scheduler<'_>,
    df: Frame<'_>,
    sizes: &Sizes,
    mut steps: Vec<Step>,
) -> Result<Report, Error> {
    let g = df.graph();

    let (mean, took) = timed(|| compute(g, scheduler, df.reduce([agg::mean("total_sales")])?))?;
    let mean_total_sales = f64_at(&mean, "total_sales", 0)?;
    steps.push(Step {
        name: "mean total_sales",
        took,
        result: format!("{mean_total_sales:.4}"),
    });

    let (mm, took) = timed(|| {
        compute(
            g,
            scheduler,
            df.reduce([
                agg::max("price").alias("max"),
                agg::min("price").alias("min"),
            ])?,
        )
    })?;
    steps.push(Step {
        name: "max and min price",
        took,
        result: format!(
            "max {:.4}, min {:.4}",
            f64_at(&mm, "max", 0)?,
            f64_at(&mm, "min", 0)?
        ),
    });

    let (cats, took) = timed(|| {
        compute(
            g,
            scheduler,
            df.group_by(["category"]).agg([agg::sum("total_sales")])?,
        )
    })?;
    let cats = cats
        .sort(["category"], SortMultipleOptions::default())
        .map_err(|e| Error::Input(e.to_string()))?;
    let mut by_category = Vec::new();
    for row in 0..cats.height() {
        let name = cats
            .column("category")
            .and_then(|c| c.str().map(|s| s.get(row).unwrap_or("").to_string()))
            .map_err(|e| Error::Input(e.to_string()))?;
        by_category.push((name, f64_at(&cats, "total_sales", row)?));
    }
    steps.push(Step {
        name: "sales by category",
        took,
        result: by_category
            .iter()
            .map(|(c, v)| format!("{c} {v:.3e}"))
            .collect::<Vec<_>>()
            .join(", "),
    });

    let (top, took) = timed(|| {
        let totals = compute(
            g,
            scheduler,
            df.group_by(["product_id"]).agg([agg::sum("total_sales")])?,
        )?;
        totals
            .sort(
                ["total_sales"],
                SortMultipleOptions::default().with_order_descending(true),
            )
            .map(|t| t.head(Some(5)))
            .map_err(|e| Error::Input(e.to_string()))
    })?;
    let mut top_line = Vec::new();
    for row in 0..top.height() {
        top_line.push(format!(
            "#{} {:.3e}",
            f64_at(&top, "product_id", row)? as i64,
            f64_at(&top, "total_sales", row)?
        ));
    }
    steps.push(Step {
        name: "top 5 products by sales",
        took,
        result: top_line.join(", "),
    });

    let t = Instant::now();
    let svg = bar_chart("Sales by category", &by_category);
    steps.push(Step {
        name: "bar chart (SVG)",
        took: t.elapsed(),
        result: format!("{} bytes of SVG", svg.len()),
    });

    let g = Graph::new();
    let (m, took) = timed(|| {
        let x = Array::random(
            &g,
            &[sizes.numbers],
            &[sizes.chunk.min(sizes.numbers).max(1)],
            42,
        )?;
        compute(&g, scheduler, x.mean())
    })?;
    steps.push(Step {
        name: "mean of random numbers (lovage::array)",
        took,
        result: format!("{m:.6} over {} numbers", sizes.numbers),
    });
    Ok(Report {
        steps,
        mean_total_sales,
        by_category,
        svg,
    })
}

/// The same questions in one Polars frame on one process (the yardstick): each step's
/// time, on the same rows as `run` (generated outside the timings; `total_sales` made and
/// kept as a step of its own, as `run` does).
pub fn run_polars(sizes: &Sizes) -> Result<Vec<(&'static str, Duration)>, Error> {
    let fail = |e: PolarsError| Error::Input(e.to_string());
    let mut all = DataFrame::empty_with_schema(&schema());
    for i in 0..sizes.partitions.max(1) {
        all.vstack_mut(&generate_partition(i, sizes.rows, sizes.partitions.max(1)).map_err(fail)?)
            .map_err(fail)?;
    }
    all.rechunk_mut();
    let mut out = Vec::new();
    let t = Instant::now();
    let df = all
        .lazy()
        .with_columns([total_sales()])
        .collect()
        .map_err(fail)?
        .lazy();
    out.push((TOTAL_SALES_STEP, t.elapsed()));
    let mut step = |name, lf: LazyFrame| -> Result<(), Error> {
        let t = Instant::now();
        lf.collect().map_err(fail)?;
        out.push((name, t.elapsed()));
        Ok(())
    };
    step(
        "mean total_sales",
        df.clone().select([col("total_sales").mean()]),
    )?;
    step(
        "max and min price",
        df.clone().select([
            col("price").max().alias("max"),
            col("price").min().alias("min"),
        ]),
    )?;
    step(
        "sales by category",
        df.clone()
            .group_by([col("category")])
            .agg([col("total_sales").sum()]),
    )?;
    step(
        "top 5 products by sales",
        df.group_by([col("product_id")])
            .agg([col("total_sales").sum()])
            .sort(
                ["total_sales"],
                SortMultipleOptions::default().with_order_descending(true),
            )
            .limit(5),
    )?;
    Ok(out)
}

/// A bar chart as a small standalone SVG document.
pub fn bar_chart(title: &str, bars: &[(String, f64)]) -> String {
    let (w, h, left, bottom, top) = (640.0, 400.0, 70.0, 50.0, 40.0);
    let max = bars
        .iter()
        .map(|(_, v)| *v)
        .fold(0.0f64, f64::max)
        .max(f64::MIN_POSITIVE);
    let slot = (w - left - 20.0) / bars.len().max(1) as f64;
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" \
         font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"{w}\" height=\"{h}\" fill=\"white\"/>\n\
         <text x=\"{}\" y=\"24\" text-anchor=\"middle\" font-size=\"16\">{}</text>\n",
        w / 2.0,
        escape(title)
    );
    let base = h - bottom;
    for (i, (name, v)) in bars.iter().enumerate() {
        let bh = (v / max) * (base - top);
        let x = left + i as f64 * slot + slot * 0.15;
        s.push_str(&format!(
            "<rect x=\"{x:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{bh:.1}\" fill=\"#4c72b0\"/>\n\
             <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>\n\
             <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" font-size=\"10\">{v:.3e}</text>\n",
            base - bh,
            slot * 0.7,
            x + slot * 0.35,
            base + 18.0,
            escape(name),
            x + slot * 0.35,
            base - bh - 4.0,
        ));
    }
    s.push_str(&format!(
        "<line x1=\"{left}\" y1=\"{base}\" x2=\"{}\" y2=\"{base}\" stroke=\"black\"/>\n</svg>\n",
        w - 20.0
    ));
    s
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
