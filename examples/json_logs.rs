//! JSON-logs analysis with a bag (Dask's `read_text(...).map(json.loads)` pattern): count
//! requests per status, the slowest endpoints, the mean latency of errors; a malformed line
//! first fails the computation naming its file and line, then is skipped on request.
//!
//! Run: `cargo run --release --example json_logs` (add `--quick` for a small log)

use std::io::Write;

use lovage::bag::{read_jsonl, OnError};
use lovage::collections::{compute, Error};
use lovage::graph::{Graph, Threads};
use lovage::workloads::quick_from_args;
use lovage::ThreadPool;
use serde_json::{json, Value};

fn main() -> Result<(), Error> {
    let lines = if quick_from_args() { 20_000 } else { 2_000_000 };
    let dir = std::env::temp_dir().join(format!("lovage-json-logs-{}", std::process::id()));
    generate(&dir, lines).map_err(|e| Error::Input(e.to_string()))?;
    let pattern = format!("{}/*.jsonl", dir.display());
    let pool = ThreadPool::new(2);
    let g = Graph::new();

    let strict = read_jsonl(&g, &pattern, Some(1 << 20), OnError::Fail)?;
    match compute(&g, Threads(&pool), strict.count()) {
        Err(e) => println!("strict read fails as it should: {e}"),
        Ok(n) => println!("unexpected: {n} records and no error"),
    }

    let logs = read_jsonl(&g, &pattern, Some(1 << 20), OnError::Skip)?;
    let status = logs
        .pluck("status")
        .map(|v| v.as_u64().unwrap_or(0))
        .frequencies();
    let slow = logs
        .filter(|r| r["ms"].as_f64().unwrap_or(0.0) > 900.0)
        .pluck("path")
        .map(|v| v.to_string())
        .frequencies();
    let err_ms = logs
        .filter(|r| r["status"].as_u64().unwrap_or(0) >= 500)
        .map(|r| r["ms"].as_f64().unwrap_or(f64::NAN))
        .mean();
    let (status, slow, err_ms) = compute(&g, Threads(&pool), (status, slow, err_ms))?;
    let mut status: Vec<_> = status.into_iter().collect();
    status.sort();
    println!("requests per status: {status:?}");
    let mut slow: Vec<_> = slow.into_iter().collect();
    slow.sort_by_key(|p| std::cmp::Reverse(p.1));
    println!("slowest paths (> 900 ms): {:?}", &slow[..slow.len().min(3)]);
    println!("mean latency of 5xx: {err_ms:.1} ms");
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// Two log files of `lines` records in all, and one malformed line in the second.
fn generate(dir: &std::path::Path, lines: usize) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let paths = ["/", "/login", "/api/items", "/api/search", "/static/app.js"];
    let mut rng = fastrand::Rng::with_seed(11);
    for f in 0..2 {
        let mut out =
            std::io::BufWriter::new(std::fs::File::create(dir.join(format!("app-{f}.jsonl")))?);
        for i in 0..lines / 2 {
            let status = match rng.u32(0..100) {
                0..=84 => 200,
                85..=94 => 404,
                _ => 500,
            };
            let path = paths[rng.usize(..paths.len())];
            let ms = rng.f64()
                * if path.starts_with("/api") {
                    1200.0
                } else {
                    300.0
                };
            let rec: Value = json!({"i": i, "path": path, "status": status, "ms": ms});
            writeln!(out, "{rec}")?;
            if f == 1 && i == lines / 4 {
                writeln!(out, "{{\"i\": {i}, \"path\": \"/oops\", truncated")?;
            }
        }
        out.flush()?;
    }
    Ok(())
}
