//! Frames' shuffles in bounded memory on the real `lovage worker` binary (issue 18, item 3):
//! two worker processes with `--data-plane --memory-limit 16M` on a SQLite broker run a
//! group-by with half a million groups through a hash exchange (`split_out(16)`) and a sort
//! (sampled range partitioning, its partitions written to Parquet by the workers) over Parquet
//! files of more than three times the limit (60 MB of decoded columns). The answers are Polars' on the same rows as one frame, exactly; each
//! worker's store spilled (bytes written to files > 0, from `lovage inspect stats`); no worker
//! kept more values in memory than its share of the limit, and the tasks a worker had in hand
//! never held more kept inputs than their share of the limit (but for one task alone whose
//! inputs are larger: it runs by itself).
//!
//! Memory is what is checked, through the workers' own counts, not time or resident size.
//! Only built with `--features frames` (`required-features`).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests panic to fail

mod common;

use std::path::Path;
use std::process::Command;

use common::Killed;
use lovage::frame::polars::prelude::*;
use lovage::frame::{agg, compute, read_parquet};
use lovage::graph::{Broker, Graph};
use lovage::{connect, App};

const BIN: &str = env!("CARGO_BIN_EXE_lovage");

/// Files, rows per file, rows per row group (a partition each), and distinct keys.
const FILES: usize = 5;
const ROWS: usize = 500_000;
const ROW_GROUP: usize = 125_000;
const GROUPS: i64 = 500_000;

/// The workers' memory limit, in bytes (and as the flag says it).
const LIMIT: u64 = 16 << 20;
const LIMIT_FLAG: &str = "16M";

/// File `f`'s rows: a key `k` of `GROUPS` values, and integers `v` and `w` (three 8-byte
/// columns: 12 MiB a file decoded).
fn rows(f: usize) -> DataFrame {
    let mut rng = fastrand::Rng::with_seed(f as u64 + 7);
    let k: Vec<i64> = (0..ROWS).map(|_| rng.i64(0..GROUPS)).collect();
    let v: Vec<i64> = (0..ROWS).map(|_| rng.i64(-1000..1000)).collect();
    let w: Vec<i64> = (0..ROWS).map(|_| rng.i64(..)).collect();
    df!("k" => k, "v" => v, "w" => w).unwrap()
}

/// Writes the Parquet files into `dir`; all their rows as one frame.
fn write_files(dir: &Path) -> DataFrame {
    let mut all = rows(0).clear();
    for f in 0..FILES {
        let mut df = rows(f);
        let out = std::fs::File::create(dir.join(format!("{f}.parquet"))).unwrap();
        ParquetWriter::new(out)
            .with_row_group_size(Some(ROW_GROUP))
            .finish(&mut df)
            .unwrap();
        all.vstack_mut(&df).unwrap();
    }
    all
}

/// A `lovage worker` with the data plane on, its memory limit `LIMIT`.
fn worker(url: &str, data_dir: &Path) -> Killed {
    common::data_plane_worker(url, data_dir, &["--memory-limit", LIMIT_FLAG])
}

/// Each worker's data store figures, from `lovage inspect stats --json`.
fn store_stats(url: &str) -> Vec<(String, serde_json::Value)> {
    let out = Command::new(BIN)
        .args(["inspect", "stats", "--json", "--broker", url])
        .env("LOVAGE_LOG", "error")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", common::output_text(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    let v: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
    v["replies"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(w, r)| (w.clone(), r["ok"]["data"].clone()))
        .collect()
}

#[test]
fn shuffles_past_the_memory_limit_spill_and_stay_within_their_shares() {
    let dir = tempfile::tempdir().unwrap();
    let all = write_files(dir.path());
    let decoded = all.estimated_size() as u64;
    assert!(decoded >= 3 * LIMIT, "the data is {decoded} bytes decoded");
    let url = format!("sqlite://{}", dir.path().join("broker.db").display());
    let spill_dir = dir.path().join("spill");
    let workers = [worker(&url, &spill_dir), worker(&url, &spill_dir)];
    let client = App::with_backend(connect(&url).unwrap()).client().unwrap();

    let g = Graph::new();
    let pattern = dir.path().join("*.parquet").display().to_string();
    let f = read_parquet(&g, &pattern).unwrap();
    assert_eq!(f.npartitions(), FILES * ROWS / ROW_GROUP);
    let by_k = f
        .group_by(["k"])
        .split_out(16)
        .agg([agg::sum("v"), agg::max("w"), agg::len()])
        .unwrap();
    // The sorted partitions written by the workers (one file each), not collected by a task:
    // a `concat` of every row would be one task reading all of them.
    let out_dir = dir.path().join("sorted");
    let sorted = f
        .sort(&["w"], &[false])
        .unwrap()
        .to_parquet(&out_dir)
        .unwrap();
    let (by_k, files) = compute(&g, Broker(&client), (by_k, sorted)).unwrap();

    let want = all
        .clone()
        .lazy()
        .group_by([col("k")])
        .agg([
            col("v").sum(),
            col("w").max(),
            len().cast(DataType::Int64).alias("len"),
        ])
        .sort(["k"], Default::default())
        .collect()
        .unwrap();
    let got = by_k.sort(["k"], Default::default()).unwrap();
    assert!(got.height() > 400_000, "{} groups", got.height());
    assert!(
        got.equals_missing(&want),
        "group_by(k):\n{got}\nwant:\n{want}"
    );
    // `w` is random over all of i64: no ties, so the order is the one answer.
    let mut sorted = all.clear();
    for p in &files {
        let part = ParquetReader::new(std::fs::File::open(p).unwrap())
            .finish()
            .unwrap();
        sorted.vstack_mut(&part).unwrap();
    }
    let want = all.sort(["w"], Default::default()).unwrap();
    assert!(
        sorted.equals_missing(&want),
        "sort(w):\n{sorted}\nwant:\n{want}"
    );

    let stats = store_stats(&url);
    assert_eq!(stats.len(), workers.len(), "{stats:?}");
    for (w, s) in &stats {
        let n = |k: &str| s[k].as_u64().unwrap_or_else(|| panic!("{k} in {s}"));
        eprintln!("{w}: {s}");
        assert!(n("spilled_bytes") > 0, "{w} spilled nothing: {s}");
        assert!(
            n("memory_peak") <= n("kept_limit") && n("kept_limit") < LIMIT,
            "{w} kept more in memory than its share: {s}"
        );
        assert!(
            n("inputs_peak") <= n("inputs_limit").max(n("inputs_largest")),
            "{w}'s tasks in hand held more kept inputs than their share: {s}"
        );
    }
}
