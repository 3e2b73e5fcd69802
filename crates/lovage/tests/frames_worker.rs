//! Frames on the real `lovage worker` binary built with the `frames` feature (issue 18): two
//! worker processes with the data plane on, on SQLite and on Redis, run a frame read from CSV
//! files with a plan through every kind of `lovage.frame.*` task (a group-by merged in a tree,
//! one through a hash exchange, a hash join, `head`, `collect` and `to_parquet`), and every
//! answer is Polars' on the same rows as one frame. No worker runs in this process, so the
//! answers prove the binary registered the frame tasks and ran them.
//!
//! Only built with `--features frames` (`required-features`); `scripts/test` runs it.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests panic to fail

mod common;

use std::path::Path;

use common::{Killed, RedisPrefix};
use lovage::frame::polars::prelude::*;
use lovage::frame::{agg, compute, read_csv, CsvOptions, Frame, How, Strategy};
use lovage::graph::{Broker, Graph};
use lovage::{connect, App};

/// Rows per CSV file, and the files.
const ROWS: usize = 4000;
const FILES: usize = 3;

/// A file's rows: a key `k` with nulls, a thousand-valued key `u`, integers `x`.
fn rows(file: usize) -> DataFrame {
    let n = ROWS as i64;
    let f = file as i64;
    let k: Vec<Option<i64>> = (0..n)
        .map(|i| (i % 9 != 4).then_some((i + f) % 5))
        .collect();
    let u: Vec<i64> = (0..n).map(|i| (i * 7919 + f) % 1009).collect();
    let x: Vec<i64> = (0..n).map(|i| (i * 31 + f * 17) % 2001 - 1000).collect();
    df!("k" => k, "u" => u, "x" => x).unwrap()
}

/// Writes the CSV files into `dir`; the rows of all of them as one frame.
fn write_files(dir: &Path) -> DataFrame {
    let mut all = rows(0).clear();
    for f in 0..FILES {
        let mut df = rows(f);
        let out = std::fs::File::create(dir.join(format!("{f}.csv"))).unwrap();
        CsvWriter::new(out).finish(&mut df).unwrap();
        all.vstack_mut(&df).unwrap();
    }
    all
}

/// Sorted by every column, for comparing rows in no particular order.
fn sorted(df: &DataFrame) -> DataFrame {
    let by: Vec<PlSmallStr> = df.get_column_names().into_iter().cloned().collect();
    df.sort(by, SortMultipleOptions::default().with_nulls_last(true))
        .unwrap()
}

fn assert_same_rows(got: &DataFrame, want: &DataFrame, what: &str) {
    assert!(
        sorted(got).equals_missing(&sorted(want)),
        "{what}:\n{got}\nwant:\n{want}"
    );
}

/// Starts a `lovage worker` (frames built in, data plane on) on `url`.
fn worker(url: &str, data_dir: &Path) -> Killed {
    common::data_plane_worker(url, data_dir, &[])
}

fn frames_on_the_worker_binary(url: &str) {
    let dir = tempfile::tempdir().unwrap();
    let all = write_files(dir.path());
    let _a = worker(url, dir.path());
    let _b = worker(url, dir.path());
    let client = App::with_backend(connect(url).unwrap()).client().unwrap();

    let g = Graph::new();
    let pattern = dir.path().join("*.csv").display().to_string();
    let csv = read_csv(&g, &pattern, CsvOptions::default()).unwrap();
    let f = csv
        .with_columns([(col("x") * lit(2i64)).alias("x2")])
        .unwrap()
        .filter(col("x").gt(lit(-500i64)))
        .unwrap();
    let planned = all
        .clone()
        .lazy()
        .with_columns([(col("x") * lit(2i64)).alias("x2")])
        .filter(col("x").gt(lit(-500i64)));
    let dim = df!("k" => [Some(0i64), Some(0), Some(3), Some(42), None], "label" => ["a", "b", "c", "z", "n"]).unwrap();
    let right = Frame::from_polars(&g, dim.clone(), 2).unwrap();
    let aggs = [agg::sum("x2"), agg::len()];
    let out_dir = dir.path().join("out");
    let outs = (
        f.group_by(["k"]).agg(aggs.clone()).unwrap(),
        f.group_by(["u"]).split_out(3).agg(aggs.clone()).unwrap(),
        f.join_with(&right, &["k"], &["k"], How::Left, Strategy::Hash)
            .unwrap()
            .collect(),
        f.head(10),
        f.to_parquet(&out_dir).unwrap(),
    );
    let (by_k, by_u, joined, head, files) = compute(&g, Broker(&client), outs).unwrap();

    let polars_aggs = [col("x2").sum(), len().cast(DataType::Int64).alias("len")];
    let want_by = |key: &str| {
        planned
            .clone()
            .group_by([col(key)])
            .agg(polars_aggs.clone())
            .collect()
            .unwrap()
    };
    assert_same_rows(&by_k, &want_by("k"), "group_by(k)");
    assert!(by_u.height() > 1000, "a thousand groups");
    assert_same_rows(&by_u, &want_by("u"), "group_by(u) split_out(3)");
    let want_joined = planned
        .clone()
        .join(
            dim.lazy(),
            [col("k")],
            [col("k")],
            JoinArgs::new(JoinType::Left),
        )
        .collect()
        .unwrap();
    assert_same_rows(&joined, &want_joined, "join");
    let want_rows = planned.collect().unwrap();
    assert!(
        head.equals_missing(&want_rows.head(Some(10))),
        "head:\n{head}"
    );
    assert_eq!(files.len(), f.npartitions(), "a Parquet file per partition");
    let mut back = want_rows.clear();
    for p in &files {
        let df = ParquetReader::new(std::fs::File::open(p).unwrap())
            .finish()
            .unwrap();
        back.vstack_mut(&df).unwrap();
    }
    assert!(
        back.equals_missing(&want_rows),
        "to_parquet's files, in order"
    );
}

#[test]
fn frames_run_on_the_worker_binary_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("broker.db").display());
    frames_on_the_worker_binary(&url);
}

#[test]
fn frames_run_on_the_worker_binary_on_redis() {
    let prefix = RedisPrefix::new();
    frames_on_the_worker_binary(&prefix.url());
}
