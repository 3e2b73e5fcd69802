//! Frames on every scheduler (issue 18): frames read from CSV byte ranges, Parquet row groups,
//! JSON Lines files and in-memory partitions, with `with_columns`, `filter` and `select`
//! steps, reduced and grouped (`reduce`, `group_by(..).agg(..)`: sum, mean, min, max, count,
//! len, std, var) on `Inline`, `Threads`, a process pool, a memory broker with a worker in this
//! process, and SQLite and Redis brokers with two worker processes each (data plane on, so
//! partials of 64 KiB and more stay in their worker). Every answer is checked against Polars on
//! the same rows as one frame: integers, strings and counts exactly, floats within a relative
//! 1e-9. On SQLite and Redis a worker holding kept partials is killed with -9 and the answer is
//! still exact (lineage). The data has nulls in the keys, a CSV file of only a header (an empty
//! partition) and a filter that empties some partitions; a CSV row that does not fit its column
//! comes back as an error naming `file:line`, and a closure step is refused before anything
//! runs.
//!
//! The process pool's children and the broker's worker processes are this test binary started
//! again (so they know the `lovage.frame.*` tasks), hence `harness = false`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests panic to fail

use std::io::Write;
use std::sync::OnceLock;
use std::time::Duration;

use libtest_mimic::{Arguments, Trial};
use lovage_broker::dataref::{bytes_fetched, bytes_read_locally};
use lovage_broker::{connect, App, DEFAULT_QUEUE};
use lovage_core::{TaskId, TaskOptions};
use lovage_frame::polars::prelude::*;
use lovage_frame::{
    agg, compute, read_csv, read_jsonl, read_parquet, Agg, CsvOptions, Error, Frame, How, Strategy,
};
use lovage_graph::{Broker, Delayed, Graph, Inline, Processes, Scheduler, Submitted, Threads};
use lovage_pool::ProcessPool;
use lovage_testkit::{on_brokers, serve_worker_role, wait_until_handed_on, Process, WorkerRole};
use lovage_worker::{PoolKind, Worker, WorkerConfig};

mod common;
use common::{assert_quantiles, assert_same, data, pool, KeepingWorker};

/// The environment variable that tells this binary which role to play.
const ROLE: &str = "LOVAGE_FRAME_TEST_ROLE";

/// Rows per data file, and the files.
const ROWS: usize = 3000;
const FILES: u64 = 3;

/// The line of `bad/bad.csv` that does not fit its column.
const BAD_LINE: usize = 37;

/// The data files, and the frames they hold (the expected rows, file by file).
struct Files {
    dir: tempfile::TempDir,
    frames: Vec<DataFrame>,
}

/// `data()` with a many-valued key `u` (about a thousand groups) besides `k` (nulls) and `s`.
fn frame_for(file: u64) -> DataFrame {
    let df = data(ROWS, 6, 100 + file);
    let u: Vec<i64> = (0..ROWS as i64)
        .map(|i| (i * 7919 + file as i64) % 1009)
        .collect();
    df.hstack(&[Column::new("u".into(), u)]).unwrap()
}

fn json_value<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or("null".to_owned(), |v| v.to_string())
}

fn files() -> &'static Files {
    static FILES_: OnceLock<Files> = OnceLock::new();
    FILES_.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        for sub in ["csv", "pq", "jsonl", "bad"] {
            std::fs::create_dir(dir.path().join(sub)).unwrap();
        }
        let mut frames = Vec::new();
        for f in 0..FILES {
            let mut df = frame_for(f);
            let csv = std::fs::File::create(dir.path().join(format!("csv/{f}.csv"))).unwrap();
            CsvWriter::new(csv).finish(&mut df).unwrap();
            let pq = std::fs::File::create(dir.path().join(format!("pq/{f}.parquet"))).unwrap();
            ParquetWriter::new(pq)
                .with_row_group_size(Some(700))
                .finish(&mut df)
                .unwrap();
            let mut out =
                std::fs::File::create(dir.path().join(format!("jsonl/{f}.jsonl"))).unwrap();
            let cols = |n: &str| df.column(n).unwrap().as_materialized_series().clone();
            let (k, s, x, y, u) = (cols("k"), cols("s"), cols("x"), cols("y"), cols("u"));
            for i in 0..df.height() {
                writeln!(
                    out,
                    r#"{{"k": {}, "s": "{}", "x": {}, "y": {:?}, "u": {}}}"#,
                    json_value(k.i64().unwrap().get(i)),
                    s.str().unwrap().get(i).unwrap(),
                    json_value(x.i64().unwrap().get(i)),
                    y.f64().unwrap().get(i).unwrap(),
                    json_value(u.i64().unwrap().get(i)),
                )
                .unwrap();
            }
            frames.push(df);
        }
        // A file of only a header: an empty partition.
        let header = std::fs::read_to_string(dir.path().join("csv/0.csv")).unwrap();
        let header = header.lines().next().unwrap();
        std::fs::write(dir.path().join("csv/3.csv"), format!("{header}\n")).unwrap();
        // A row whose `x` is not an integer, far from the start of the file.
        let mut bad = String::from("k,x\n");
        for line in 2..=60 {
            if line == BAD_LINE {
                bad.push_str("4,oops\n");
            } else {
                bad.push_str(&format!("{},{}\n", line % 3, line * 10));
            }
        }
        std::fs::write(dir.path().join("bad/bad.csv"), bad).unwrap();
        Files { dir, frames }
    })
}

fn pattern(sub: &str, ext: &str) -> String {
    files()
        .dir
        .path()
        .join(sub)
        .join(format!("*.{ext}"))
        .display()
        .to_string()
}

/// The rows of every file, as one frame.
fn all_rows() -> DataFrame {
    let mut it = files().frames.iter();
    let mut all = it.next().unwrap().clone();
    for df in it {
        all.vstack_mut(df).unwrap();
    }
    all
}

/// The plan: new columns, a filter that drops most rows of some partitions, a select.
fn plan_exprs() -> (Vec<Expr>, Expr, Vec<Expr>) {
    (
        vec![
            (col("x") * lit(3i64)).alias("x3"),
            (col("y") * lit(0.5) + col("x").cast(DataType::Float64)).alias("xy"),
        ],
        col("y").gt(lit(10.0)).or(col("k").is_null()),
        vec![
            col("k"),
            col("s"),
            col("u"),
            col("x"),
            col("x3"),
            col("y"),
            col("xy"),
        ],
    )
}

fn planned<'g>(f: &Frame<'g>) -> Frame<'g> {
    let (with, filter, select) = plan_exprs();
    f.with_columns(with)
        .unwrap()
        .filter(filter)
        .unwrap()
        .select(select)
        .unwrap()
}

fn aggs() -> Vec<Agg> {
    vec![
        agg::sum("x"),
        agg::sum("x3"),
        agg::mean("y").alias("y_mean"),
        agg::min("x").alias("x_min"),
        agg::max("y").alias("y_max"),
        agg::count("x").alias("x_count"),
        agg::len(),
        agg::std("xy").alias("xy_std"),
        agg::var("y").alias("y_var"),
        agg::min("s").alias("s_min"),
    ]
}

/// The quantiles `check` asks for, by output name.
const QS: [(&str, f64); 4] = [("q1", 0.01), ("q25", 0.25), ("median", 0.5), ("q90", 0.9)];

/// `QS` of `y`, as `agg::quantile` (and `agg::median`).
fn quantile_aggs() -> Vec<Agg> {
    QS.iter()
        .map(|(name, q)| match *q {
            0.5 => agg::median("y").alias(*name),
            q => agg::quantile("y", q).alias(*name),
        })
        .collect()
}

/// The same aggregations in Polars on one frame.
fn polars_aggs() -> Vec<Expr> {
    vec![
        col("x").sum(),
        col("x3").sum(),
        col("y").mean().alias("y_mean"),
        col("x").min().alias("x_min"),
        col("y").max().alias("y_max"),
        col("x").count().cast(DataType::Int64).alias("x_count"),
        len().cast(DataType::Int64).alias("len"),
        col("xy").std(1).alias("xy_std"),
        col("y").var(1).alias("y_var"),
        col("s").min().alias("s_min"),
    ]
}

/// Polars' answers on `rows` as one frame, planned: by `k`, by `k` and `s`, by `u`, and no
/// keys.
fn want(rows: &DataFrame) -> [DataFrame; 4] {
    want_of(&planned_rows(rows))
}

/// The CSV files' rows as Polars reads them whole with `schema` (floats through text).
fn csv_rows(schema: &SchemaRef) -> DataFrame {
    let mut all: Option<DataFrame> = None;
    for f in 0..FILES {
        let path = files().dir.path().join(format!("csv/{f}.csv"));
        let df = CsvReadOptions::default()
            .with_has_header(true)
            .with_schema(Some(schema.clone()))
            .try_into_reader_with_file_path(Some(path))
            .unwrap()
            .finish()
            .unwrap();
        match &mut all {
            None => all = Some(df),
            Some(all) => {
                all.vstack_mut(&df).unwrap();
            }
        }
    }
    all.unwrap()
}

/// Every frame source, planned, grouped three ways and reduced on `sched`, checked against
/// Polars on the same rows as one frame.
fn check(name: &str, sched: Scheduler<'_>) {
    let g = Graph::new();
    let csv = read_csv(
        &g,
        &pattern("csv", "csv"),
        CsvOptions {
            blocksize: 16 << 10,
            ..CsvOptions::default()
        },
    )
    .unwrap();
    assert!(
        csv.npartitions() > 3 * FILES as usize,
        "{name}: several partitions per CSV file"
    );
    let csv_rows = csv_rows(csv.schema());
    let frames = [
        ("csv", csv, csv_rows),
        (
            "parquet",
            read_parquet(&g, &pattern("pq", "parquet")).unwrap(),
            all_rows(),
        ),
        (
            "jsonl",
            read_jsonl(&g, &pattern("jsonl", "jsonl")).unwrap(),
            all_rows(),
        ),
        (
            "memory",
            Frame::from_polars(&g, all_rows(), 5).unwrap(),
            all_rows(),
        ),
    ];
    for (source, frame, rows) in frames {
        let f = planned(&frame);
        let [by_k, by_ks, by_u, total] = want(&rows);
        // Rows in memory keep the run-time choice of an exchange unless split_out(1).
        let by = |keys: &[&str]| {
            let by = f.group_by(keys.iter().copied());
            if source == "memory" {
                by.split_out(1)
            } else {
                by
            }
        };
        let outs = (
            by(&["k"]).split_every(3).agg(aggs()).unwrap(),
            by(&["k", "s"]).agg(aggs()).unwrap(),
            by(&["u"]).split_every(2).agg(aggs()).unwrap(),
            f.reduce(aggs()).unwrap(),
            (f.len(), frame.len()),
            (
                by(&["k"]).split_every(3).agg(quantile_aggs()).unwrap(),
                f.group_by(["u"]).split_out(2).agg(quantile_aggs()).unwrap(),
                f.reduce(quantile_aggs()).unwrap(),
            ),
        );
        let (k, ks, u, t, (n, n_all), (qk, qu, qt)) = compute(&g, sched, outs).unwrap();
        let what = format!("{name}: {source}");
        let n_planned = total.column("len").unwrap().i64().unwrap().get(0).unwrap();
        assert_eq!(n as i64, n_planned, "{what}: len after the plan");
        assert_eq!(n_all, rows.height(), "{what}: len");
        assert!(
            by_k.column("k").unwrap().null_count() > 0,
            "{what}: a null key"
        );
        assert_same(&k, &by_k, &["k"]);
        assert_same(&ks, &by_ks, &["k", "s"]);
        assert!(by_u.height() > 1000, "{what}: many groups");
        assert_same(&u, &by_u, &["u"]);
        assert_same(&t, &total, &[]);
        // Quantiles: in a tree by `k` (nulls), through an exchange by `u` (a thousand groups
        // of a few rows), and over the whole frame.
        let planned = planned_rows(&rows);
        assert_quantiles(&qk, &planned, &["k"], "y", &QS);
        assert_quantiles(&qu, &planned, &["u"], "y", &QS);
        assert_quantiles(&qt, &planned, &[], "y", &QS);
    }

    // A row that does not fit its column: the error names the file and line.
    let bad = read_csv(
        &g,
        &pattern("bad", "csv"),
        CsvOptions {
            infer_rows: 10,
            blocksize: 200,
            ..CsvOptions::default()
        },
    )
    .unwrap();
    let err = compute(&g, sched, bad.reduce([agg::sum("x")]).unwrap())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&format!("bad.csv:{BAD_LINE}: bad row")),
        "{name}: {err}"
    );
}

/// The planned CSV files' rows as Polars computes them on one frame, whole-file partitions
/// (over 64 KiB each, so kept by their workers on a broker), and a small frame to join with:
/// duplicate keys (`0`), a key no row has (`99`) and a null key.
struct RowsCase<'g> {
    f: Frame<'g>,
    want: DataFrame,
    dim: DataFrame,
}

fn rows_case(g: &Graph) -> RowsCase<'_> {
    let csv = read_csv(
        g,
        &pattern("csv", "csv"),
        CsvOptions {
            whole_file: true,
            ..CsvOptions::default()
        },
    )
    .unwrap();
    let (with, filter, select) = plan_exprs();
    let want = csv_rows(csv.schema())
        .lazy()
        .with_columns(with)
        .filter(filter)
        .select(select)
        .collect()
        .unwrap();
    let dim = df!(
        "k" => [Some(0i64), Some(0), Some(2), Some(99), None],
        "label" => ["a", "b", "c", "z", "n"],
    )
    .unwrap();
    RowsCase {
        f: planned(&csv),
        want,
        dim,
    }
}

/// Polars' join of `l` and `r` on one column each.
fn polars_join(l: &DataFrame, r: &DataFrame, on: &str, how: JoinType) -> DataFrame {
    l.clone()
        .lazy()
        .join(r.clone().lazy(), [col(on)], [col(on)], JoinArgs::new(how))
        .collect()
        .unwrap()
}

/// Asserts `got` is `want` row for row, in order (floats within the tolerance).
fn assert_in_order(got: &DataFrame, want: &DataFrame, what: &str) {
    assert_eq!(got.height(), want.height(), "{what}: heights");
    for c in ["u", "x"] {
        assert!(
            got.column(c)
                .unwrap()
                .as_materialized_series()
                .equals_missing(want.column(c).unwrap().as_materialized_series()),
            "{what}: column {c} in order"
        );
    }
    assert_same(got, want, &[]);
}

/// `collect`, `head`, `to_parquet`, `to_csv`, group-bys through a hash exchange
/// (`split_out(n > 1)`, keys with nulls and a thousand groups) and joins (hash and broadcast,
/// inner and left, duplicate keys, a key with no match, null keys, a join feeding a group-by)
/// of frames of data on `sched`, against Polars on the same rows as one frame.
fn check_rows(name: &str, sched: Scheduler<'_>) {
    let g = Graph::new();
    let RowsCase { f, want, dim } = rows_case(&g);
    let pq = planned(&read_parquet(&g, &pattern("pq", "parquet")).unwrap());
    let out = tempfile::tempdir().unwrap();
    let (pq_dir, csv_dir) = (out.path().join("pq"), out.path().join("csv"));
    let [by_k, _, by_u, _] = want_of(&want);
    let outs = (
        f.collect(),
        pq.head(1500),
        f.to_parquet(&pq_dir).unwrap(),
        f.to_csv(&csv_dir).unwrap(),
        f.group_by(["u"]).split_out(3).agg(aggs()).unwrap(),
        f.group_by(["k"]).split_out(2).agg(aggs()).unwrap(),
    );
    let (all, head, pq_files, csv_files, u, k) = compute(&g, sched, outs).unwrap();
    assert_in_order(&all, &want, &format!("{name}: collect"));
    let pq_want = planned_rows(&all_rows()).head(Some(1500));
    assert_in_order(&head, &pq_want, &format!("{name}: head"));
    assert_same(&u, &by_u, &["u"]);
    assert!(
        by_k.column("k").unwrap().null_count() > 0,
        "{name}: a null key"
    );
    assert_same(&k, &by_k, &["k"]);
    // The files, one per partition (the header-only CSV file gives an empty one), read back.
    assert_eq!(
        pq_files.len(),
        f.npartitions(),
        "{name}: a file per partition"
    );
    assert_eq!(
        csv_files.len(),
        f.npartitions(),
        "{name}: a file per partition"
    );
    let read_back = |files: &[std::path::PathBuf], parquet: bool| {
        let mut all = DataFrame::empty_with_schema(f.schema());
        for p in files {
            let df = if parquet {
                ParquetReader::new(std::fs::File::open(p).unwrap())
                    .finish()
                    .unwrap()
            } else {
                CsvReadOptions::default()
                    .with_has_header(true)
                    .with_schema(Some(f.schema().clone()))
                    .try_into_reader_with_file_path(Some(p.clone()))
                    .unwrap()
                    .finish()
                    .unwrap()
            };
            all.vstack_mut(&df).unwrap();
        }
        all
    };
    assert_in_order(
        &read_back(&pq_files, true),
        &want,
        &format!("{name}: to_parquet"),
    );
    assert_in_order(
        &read_back(&csv_files, false),
        &want,
        &format!("{name}: to_csv"),
    );

    // Joins: with a small frame by hash and by broadcast, and two frames of files by hash
    // feeding a group-by.
    let right = Frame::from_polars(&g, dim.clone(), 2).unwrap();
    let big_right = pq
        .select([col("u"), col("x").alias("rx")])
        .unwrap()
        .filter(col("rx").gt(lit(500i64)))
        .unwrap();
    let big_right_rows = planned_rows(&all_rows())
        .lazy()
        .select([col("u"), col("x").alias("rx")])
        .filter(col("rx").gt(lit(500i64)))
        .collect()
        .unwrap();
    let join = |how, strategy| {
        f.join_with(&right, &["k"], &["k"], how, strategy)
            .unwrap()
            .collect()
    };
    let outs = (
        join(How::Inner, Strategy::Hash),
        join(How::Left, Strategy::Hash),
        join(How::Inner, Strategy::Broadcast),
        join(How::Left, Strategy::Auto),
        f.join_with(&big_right, &["u"], &["u"], How::Inner, Strategy::Hash)
            .unwrap()
            .group_by(["k"])
            .agg([agg::sum("rx"), agg::len()])
            .unwrap(),
    );
    let (inner, left, inner_b, left_b, joined_by_k) = compute(&g, sched, outs).unwrap();
    // No key matches at all: inner is empty, left keeps every row with nulls.
    let nowhere = df!("k" => [1000i64, 1001], "label" => ["p", "q"]).unwrap();
    let nowhere_f = Frame::from_polars(&g, nowhere.clone(), 2).unwrap();
    let none = |how| {
        f.join_with(&nowhere_f, &["k"], &["k"], how, Strategy::Hash)
            .unwrap()
            .collect()
    };
    let (no_inner, no_left) = compute(&g, sched, (none(How::Inner), none(How::Left))).unwrap();
    assert_eq!(no_inner.height(), 0, "{name}: no match, no inner row");
    assert_same(
        &no_inner,
        &polars_join(&want, &nowhere, "k", JoinType::Inner),
        &[],
    );
    assert_eq!(no_left.column("label").unwrap().null_count(), want.height());
    assert_same(
        &no_left,
        &polars_join(&want, &nowhere, "k", JoinType::Left),
        &[],
    );
    let (want_inner, want_left) = (
        polars_join(&want, &dim, "k", JoinType::Inner),
        polars_join(&want, &dim, "k", JoinType::Left),
    );
    assert!(want_inner.height() > 0 && want_left.height() > want_inner.height());
    assert!(
        want_left.column("label").unwrap().null_count() > 0,
        "{name}: left rows without a match"
    );
    assert_same(&inner, &want_inner, &[]);
    assert_same(&left, &want_left, &[]);
    assert_same(&inner_b, &want_inner, &[]);
    assert_same(&left_b, &want_left, &[]);
    let want_joined_by_k = polars_join(&want, &big_right_rows, "u", JoinType::Inner)
        .lazy()
        .group_by([col("k")])
        .agg([col("rx").sum(), len().cast(DataType::Int64).alias("len")])
        .collect()
        .unwrap();
    assert!(want_joined_by_k.height() > 1, "{name}: the join matched");
    assert_same(&joined_by_k, &want_joined_by_k, &["k"]);
}

/// Polars' stable sort of `df` by `by` (`descending` per column), nulls last: what a frame's
/// `sort` must give, exactly.
fn polars_sort(df: &DataFrame, by: &[&str], descending: &[bool]) -> DataFrame {
    df.sort(
        by.iter().map(|c| PlSmallStr::from(*c)).collect::<Vec<_>>(),
        SortMultipleOptions::default()
            .with_order_descending_multi(descending.iter().copied())
            .with_nulls_last(true)
            .with_maintain_order(true),
    )
    .unwrap()
}

/// Asserts `got` is `want` exactly: every column, in order, nulls in the same places (the
/// floats are the same values computed the same way, so bit for bit).
fn assert_exact(got: &DataFrame, want: &DataFrame, what: &str) {
    assert_eq!(got.height(), want.height(), "{what}: heights");
    assert!(got.equals_missing(want), "{what}:\n{got}\n{want}");
}

/// `sort` (keys with nulls, descending, several keys, a string key, floats), `set_index` and
/// `repartition` of frames of data on `sched`, exactly as Polars' stable sort of the same rows
/// as one frame (nulls last) and, for `repartition`, the same rows in the same order; a sorted
/// frame feeds a group-by and a `head`. On the local schedulers the partitions themselves
/// are checked too: each a key range, or heights that differ by at most one.
fn check_sorts(name: &str, sched: Scheduler<'_>) {
    let g = Graph::new();
    let RowsCase { f, want, .. } = rows_case(&g);
    let pq = planned(&read_parquet(&g, &pattern("pq", "parquet")).unwrap());
    let pq_want = planned_rows(&all_rows());
    let by_k_x = f.sort(&["k", "x"], &[true, false]).unwrap();
    let by_y = pq.sort(&["y"], &[true]).unwrap();
    let by_s_u = pq.sort(&["s", "u"], &[false]).unwrap();
    let by_u = f.set_index("u").unwrap();
    let re = pq.repartition(4);
    let re_up = f.repartition(7);
    assert_eq!(by_k_x.npartitions(), f.npartitions());
    assert_eq!((re.npartitions(), re_up.npartitions()), (4, 7));
    let outs = (
        by_k_x.collect(),
        by_y.collect(),
        by_s_u.collect(),
        by_u.collect(),
    );
    let (k_x, y, s_u, u) = compute(&g, sched, outs).unwrap();
    let outs = (
        re.collect(),
        re_up.collect(),
        by_u.head(25),
        by_k_x.group_by(["k"]).split_out(2).agg(aggs()).unwrap(),
    );
    let (re_rows, re_up_rows, u_head, grouped) = compute(&g, sched, outs).unwrap();
    assert!(
        want.column("k").unwrap().null_count() > 0,
        "{name}: null keys to place"
    );
    assert_exact(
        &k_x,
        &polars_sort(&want, &["k", "x"], &[true, false]),
        &format!("{name}: sort by k desc, x"),
    );
    assert_exact(
        &y,
        &polars_sort(&pq_want, &["y"], &[true]),
        &format!("{name}: sort by y desc"),
    );
    assert_exact(
        &s_u,
        &polars_sort(&pq_want, &["s", "u"], &[false, false]),
        &format!("{name}: sort by s, u"),
    );
    let u_want = polars_sort(&want, &["u"], &[false]);
    assert_exact(&u, &u_want, &format!("{name}: set_index(u)"));
    assert_exact(&u_head, &u_want.head(Some(25)), &format!("{name}: head"));
    assert_exact(&re_rows, &pq_want, &format!("{name}: repartition(4)"));
    assert_exact(&re_up_rows, &want, &format!("{name}: repartition(7)"));
    let [by_k, ..] = want_of(&want);
    assert_same(&grouped, &by_k, &["k"]);
    if matches!(sched, Scheduler::Inline | Scheduler::Threads(_)) {
        // Each partition of set_index(u) is one range of u, every one holding rows.
        let parts = compute(&g, sched, by_u.partitions()).unwrap();
        let mut last: Option<i64> = None;
        for p in &parts {
            assert!(p.height() > 0, "{name}: an empty range: {parts:?}");
            let u = p.column("u").unwrap().i64().unwrap();
            if let Some(last) = last {
                assert!(u.min().unwrap() >= last, "{name}: ranges overlap");
            }
            last = u.max();
        }
        let heights: Vec<usize> = compute(&g, sched, re_up.partitions())
            .unwrap()
            .iter()
            .map(DataFrame::height)
            .collect();
        let (lo, hi) = (heights.iter().min(), heights.iter().max());
        assert!(hi.unwrap() - lo.unwrap() <= 1, "{name}: {heights:?}");
    }
}

/// `rows` with the test's plan run by Polars.
fn planned_rows(rows: &DataFrame) -> DataFrame {
    let (with, filter, select) = plan_exprs();
    rows.clone()
        .lazy()
        .with_columns(with)
        .filter(filter)
        .select(select)
        .collect()
        .unwrap()
}

/// Polars' group-bys of rows already planned: by `k`, by `k` and `s`, by `u`, and no keys.
fn want_of(planned: &DataFrame) -> [DataFrame; 4] {
    let lf = planned.clone().lazy();
    let by = |keys: &[&str]| {
        let keys: Vec<Expr> = keys.iter().map(|k| col(*k)).collect();
        lf.clone()
            .group_by(keys)
            .agg(polars_aggs())
            .collect()
            .unwrap()
    };
    [
        by(&["k"]),
        by(&["k", "s"]),
        by(&["u"]),
        lf.clone().select(polars_aggs()).collect().unwrap(),
    ]
}

/// A step that runs a closure cannot cross processes: refused before anything runs.
fn closure_refused(sched: Scheduler<'_>, scheduler: &'static str) {
    let g = Graph::new();
    let schema = Schema::from_iter([Field::new("x".into(), DataType::Int64)]);
    let f = Frame::from_fn(&g, schema, 2, |i| df!("x" => [i as i64]));
    let err = compute(&g, sched, f.reduce([agg::sum("x")]).unwrap()).unwrap_err();
    assert!(
        matches!(&err, Error::Unsupported { scheduler: s, .. } if *s == scheduler),
        "{err:?}"
    );
    assert!(err.to_string().contains("read_csv"), "{err}");
    let mem = Frame::from_polars(&g, data(50, 3, 1), 3).unwrap();
    let err = compute(&g, sched, mem.group_by(["k"]).agg([agg::len()]).unwrap()).unwrap_err();
    assert!(err.to_string().contains("split_out(1)"), "{err}");
}

/// A worker process on `url` named `name`, serving `queues` (comma-separated), data plane on
/// (its directory inside `dir`, which the test removes: a killed worker leaves its own),
/// killed when dropped.
fn worker(url: &str, name: &str, queues: &str, dir: &tempfile::TempDir) -> Process {
    WorkerRole::new(url, name)
        .queues(queues)
        .data_plane(dir.path())
        .start(ROLE)
}

/// Two worker processes on `url`, the same answers as Polars.
fn on_broker(url: &str, name: &str) {
    let dir = tempfile::tempdir().unwrap();
    let _a = worker(url, "frame-a", DEFAULT_QUEUE, &dir);
    let _b = worker(url, "frame-b", DEFAULT_QUEUE, &dir);
    let app = App::with_backend(connect(url).unwrap());
    let client = app.client().unwrap();
    let fetched = bytes_fetched();
    check(name, Broker(&client));
    check_rows(name, Broker(&client));
    check_sorts(name, Broker(&client));
    // The largest answers (a thousand groups) stayed with their workers and were fetched
    // from there: frames travel by the data plane.
    assert!(
        bytes_fetched() > fetched,
        "{name}: nothing came by the data plane"
    );
    closure_refused(Broker(&client), "Broker");
}

/// The queue of the kill tests' last node, which only the second worker serves.
const FINISH_QUEUE: &str = "frame-finish";

/// What a kill test computes through a shuffle on worker A before A is killed: a
/// `split_out(2)` group-by, a sort or a repartition.
#[derive(Clone, Copy, Debug)]
enum Shuffle {
    /// A group-by in a tree (`partial` tasks, then `finish` on worker B): no exchange.
    Tree,
    GroupBy,
    Sort,
    Repartition,
    /// A hash join of the frame with a projection of itself on three keys.
    Join,
}

impl Shuffle {
    /// The map and reduce tasks whose values A keeps.
    fn tasks(self) -> (&'static [&'static [&'static str]], Option<&'static str>) {
        match self {
            Shuffle::Tree => (&[&["lovage.frame.partial"]], None),
            // Partition 0's map is `split_probe` (it decides whether the others skip
            // their partials), the others' `split_partial`.
            Shuffle::GroupBy => (
                &[&["lovage.frame.split_probe", "lovage.frame.split_partial"]],
                Some("lovage.frame.agg_piece"),
            ),
            Shuffle::Sort => (
                &[&["lovage.frame.sort_sample"], &["lovage.frame.sort_split"]],
                Some("lovage.frame.range_piece"),
            ),
            // CSV partitions: no heights in the metadata, so each is read once by `counted`
            // (its count and its rows) and cut by `repartition_cut`.
            Shuffle::Repartition => (
                &[&["lovage.frame.counted"], &["lovage.frame.repartition_cut"]],
                Some("lovage.frame.range_piece"),
            ),
            // Each side's partitions are cut by `split`: two maps per partition.
            Shuffle::Join => (
                &[&["lovage.frame.split"], &["lovage.frame.split"]],
                Some("lovage.frame.join_piece"),
            ),
        }
    }
}

/// Submits `out` with its final node on `FINISH_QUEUE`, which no worker serves until the
/// test starts one, and reads the graph back as the broker stored it (its nodes' tasks and
/// ids).
fn submit_finishing_later(
    g: &Graph,
    out: Delayed<DataFrame>,
    app: &App,
    client: &lovage_broker::Client,
) -> (Submitted<DataFrame>, lovage_flow::graph::StoredGraph) {
    let finish_on = TaskOptions {
        queue: Some(FINISH_QUEUE.to_owned()),
        ..TaskOptions::default()
    };
    g.set_options(out, finish_on).unwrap();
    submit_and_read_back(g, vec![out], app, client)
}

/// Submits `outs` and reads the graph back as the broker stored it (its nodes' tasks and ids).
fn submit_and_read_back(
    g: &Graph,
    outs: Vec<Delayed<DataFrame>>,
    app: &App,
    client: &lovage_broker::Client,
) -> (Submitted<DataFrame>, lovage_flow::graph::StoredGraph) {
    let sent = g.submit(client, outs).unwrap();
    let stored = stored_graph(app, sent.graph);
    (sent, stored)
}

/// Graph `id` as the broker stored it.
fn stored_graph(app: &App, id: TaskId) -> lovage_flow::graph::StoredGraph {
    let stored = app.backend().results().get_blob(id).unwrap().unwrap();
    lovage_flow::graph::StoredGraph::decode(&stored).unwrap()
}

/// Lineage: a group-by by `u` in a tree (its partials lost before `finish` runs), or through
/// a shuffle: a group-by with `split_out(2)` by `u` and `s` (some 3000 groups), a sort by `u` (descending) and `x`, or a repartition into 2, of the whole-file
/// CSV partitions (over 64 KiB each), runs its map tasks (`split_partial`; `sort_sample` and
/// `sort_split`; `counted` and `repartition_cut`) and reduce tasks (`agg_piece`, `range_piece`) on worker
/// A, whose large values are all kept there; A is killed with -9 once the final node (`concat`)
/// waits on a queue A does not serve. Worker B, started only then, cannot fetch the reducers'
/// outputs: it makes them again from their lineage, which needs the map pieces, lost too, so
/// it makes those again from theirs (reading the CSV files itself); the answer is exactly
/// Polars' (the group-by's floats within the tolerance; the sort and the repartition row for
/// row).
fn lost_shuffle_values_are_remade(url: &str, shuffle: Shuffle) {
    const LONG: Duration = Duration::from_secs(120);
    let app = App::with_backend(connect(url).unwrap());
    let client = app.client().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut a = worker(url, "frame-a", DEFAULT_QUEUE, &dir);
    let g = Graph::new();
    let RowsCase { f, want, .. } = rows_case(&g);
    let out = match shuffle {
        Shuffle::Tree => f.group_by(["u"]).agg(aggs()).unwrap(),
        Shuffle::GroupBy => f.group_by(["u", "s"]).split_out(2).agg(aggs()).unwrap(),
        Shuffle::Sort => f.sort(&["u", "x"], &[true, false]).unwrap().collect(),
        Shuffle::Repartition => f.repartition(2).collect(),
        Shuffle::Join => unreachable!("a join's lost values are tested while it runs"),
    };
    let (sent, stored) = submit_finishing_later(&g, out, &app, &client);
    let kept = |task: &str| -> Vec<lovage_broker::ResultRef> {
        stored
            .nodes
            .iter()
            .filter(|n| n.key.split('-').next() == Some(task))
            .filter_map(|n| {
                let rec = app.backend().results().wait(n.id, LONG).unwrap().unwrap();
                rec.result_ref().map(Result::unwrap)
            })
            .collect()
    };
    let (map_tasks, reduce_task) = shuffle.tasks();
    let reduced = reduce_task.map(kept).unwrap_or_default();
    assert!(
        reduce_task.is_none() || !reduced.is_empty(),
        "{shuffle:?}: reducers' outputs are kept"
    );
    let mut mapped = Vec::new();
    for names in map_tasks {
        let values: Vec<_> = names.iter().flat_map(|task| kept(task)).collect();
        let task = names.join(" and ");
        assert!(
            values.len() >= FILES as usize,
            "{shuffle:?}: the files' {task} values are kept"
        );
        assert!(
            values.iter().all(|r| r.worker.starts_with("frame-a@")),
            "{values:?}"
        );
        mapped.extend(values);
    }
    wait_until_handed_on(&app, FINISH_QUEUE, DEFAULT_QUEUE, LONG);
    a.kill9();
    assert!(
        reduced.iter().chain(&mapped).all(|r| r.fetch().is_err()),
        "{shuffle:?}: the shuffle's values went with A"
    );
    let _b = worker(
        url,
        "frame-b",
        &format!("{DEFAULT_QUEUE},{FINISH_QUEUE}"),
        &dir,
    );
    let got = sent
        .futures
        .into_iter()
        .next()
        .unwrap()
        .result_timeout(LONG)
        .unwrap();
    match shuffle {
        Shuffle::Tree => {
            let lf = want.lazy().group_by([col("u")]);
            assert_same(&got, &lf.agg(polars_aggs()).collect().unwrap(), &["u"]);
        }
        Shuffle::GroupBy => {
            let lf = want.lazy().group_by([col("u"), col("s")]);
            assert_same(&got, &lf.agg(polars_aggs()).collect().unwrap(), &["u", "s"]);
        }
        Shuffle::Sort => assert_exact(
            &got,
            &polars_sort(&want, &["u", "x"], &[true, false]),
            "sort",
        ),
        Shuffle::Repartition => assert_exact(&got, &want, "repartition"),
        Shuffle::Join => unreachable!("refused above"),
    }
}

/// The keys of `killed_during_a_shuffle`'s join: nearly unique, some repeated, some null.
const JOIN_ON: [&str; 3] = ["k", "s", "x"];

/// The join's right side: the keys and `y` renamed (a plan of its own, so its maps are other
/// tasks than the left side's).
fn join_right() -> [Expr; 4] {
    [col("k"), col("s"), col("x"), col("y").alias("y_right")]
}

/// A worker killed -9 *while* an exchange runs, not after: workers A and B serve the maps and
/// reducers of a `split_out(2)` group-by, a sort, a `repartition(4)` or a hash join (with a
/// projection of itself) of 16 CSV files (each map's pieces over 64 KiB, so kept where they
/// were made), and the worker that ran the first
/// map is killed the moment that map has a value, while it holds other tasks. The final node
/// waits on a queue no worker serves until worker C, started after the kill, serves it. The
/// killed worker's tasks in hand come back when their lease ends, its kept values are made
/// again from their lineage, and the answer is exactly Polars' on the files (the group-by's
/// floats within the tolerance; the sort and the repartition row for row; the join's rows).
fn killed_during_a_shuffle(url: &str, shuffle: Shuffle) {
    const LONG: Duration = Duration::from_secs(120);
    const PARTS: u64 = 16;
    let app = App::with_backend(connect(url).unwrap());
    let client = app.client().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let files = tempfile::tempdir().unwrap();
    let mut a = worker(url, "frame-a", DEFAULT_QUEUE, &dir);
    let mut b = worker(url, "frame-b", DEFAULT_QUEUE, &dir);
    let g = Graph::new();
    let f = common::csv_files(&g, &files, PARTS, 6000);
    let mut want = DataFrame::empty_with_schema(f.schema());
    for i in 0..PARTS {
        let path = files.path().join(format!("{i:02}.csv"));
        let part = CsvReadOptions::default()
            .with_schema(Some(f.schema().clone()))
            .try_into_reader_with_file_path(Some(path))
            .unwrap()
            .finish()
            .unwrap();
        want.vstack_mut(&part).unwrap();
    }
    // Nearly every (k, s, x) is its own group, so the partials are skipped and each map's two
    // pieces hold about half its rows: over 64 KiB, kept by the worker that made them. The
    // sort's and the repartition's pieces are a file's rows cut in two or more: over 64 KiB too.
    let aggs = [agg::sum("y"), agg::mean("y").alias("y_mean"), agg::len()];
    let out = match shuffle {
        Shuffle::GroupBy => f.group_by(["k", "s", "x"]).split_out(2).agg(aggs).unwrap(),
        Shuffle::Sort => f.sort(&["k", "x"], &[true, false]).unwrap().collect(),
        Shuffle::Repartition => f.repartition(4).collect(),
        Shuffle::Join => {
            let right = f.select(join_right()).unwrap();
            f.join_with(&right, &JOIN_ON, &JOIN_ON, How::Inner, Strategy::Hash)
                .unwrap()
                .collect()
        }
        Shuffle::Tree => unreachable!("a tree has no exchange"),
    };
    let (sent, stored) = submit_finishing_later(&g, out, &app, &client);
    let map_tasks: Vec<&str> = shuffle
        .tasks()
        .0
        .iter()
        .flat_map(|t| t.iter().copied())
        .collect();
    let maps: Vec<TaskId> = stored
        .nodes
        .iter()
        .filter(|n| {
            n.key
                .split('-')
                .next()
                .is_some_and(|t| map_tasks.contains(&t))
        })
        .map(|n| n.id)
        .collect();
    let stages = shuffle.tasks().0.len();
    assert_eq!(
        maps.len(),
        stages * PARTS as usize,
        "a map per partition and stage"
    );
    // The worker that ran a map first is killed: either may take the first maps (in a release
    // build B can run every map before A has polled once).
    let ran_on = |id: &TaskId| {
        let rec = app.backend().results().get(*id).unwrap();
        rec.and_then(|r| r.result_ref().map(|r| r.unwrap().worker.clone()))
    };
    let deadline = std::time::Instant::now() + LONG;
    let first = loop {
        if let Some(w) = maps.iter().find_map(ran_on) {
            break w;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no map ran within {LONG:?}"
        );
        std::thread::sleep(Duration::from_millis(2));
    };
    if first.starts_with("frame-a@") {
        a.kill9();
    } else {
        b.kill9();
    }
    let _c = worker(
        url,
        "frame-c",
        &format!("{DEFAULT_QUEUE},{FINISH_QUEUE}"),
        &dir,
    );
    let got = sent
        .futures
        .into_iter()
        .next()
        .unwrap()
        .result_timeout(LONG)
        .unwrap();
    match shuffle {
        Shuffle::Sort => assert_exact(
            &got,
            &polars_sort(&want, &["k", "x"], &[true, false]),
            "sort",
        ),
        Shuffle::Repartition => assert_exact(&got, &want, "repartition"),
        Shuffle::Join => {
            let right = want.clone().lazy().select(join_right());
            let on: Vec<Expr> = JOIN_ON.iter().map(|c| col(*c)).collect();
            let polars = want
                .lazy()
                .join(right, on.clone(), on, JoinArgs::new(JoinType::Inner))
                .collect()
                .unwrap();
            assert_same(&got, &polars, &[]);
        }
        _ => {
            let polars = want
                .lazy()
                .group_by([col("k"), col("s"), col("x")])
                .agg([
                    col("y").sum(),
                    col("y").mean().alias("y_mean"),
                    len().cast(DataType::Int64).alias("len"),
                ])
                .collect()
                .unwrap();
            assert_same(&got, &polars, &["k", "s", "x"]);
        }
    }
}

/// The shuffles' map tasks on two workers: each whole-file partition's pieces (a group-by's
/// partial split three ways, a join side split by key) are over 64 KiB, so they stay in the
/// store of the worker that made them (their result records hold references), the reduce
/// tasks fetch them from there, and the answers are Polars'.
fn shuffle_pieces_stay_with_their_workers(url: &str) {
    const LONG: Duration = Duration::from_secs(120);
    let app = App::with_backend(connect(url).unwrap());
    let client = app.client().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let _a = worker(url, "frame-a", DEFAULT_QUEUE, &dir);
    let _b = worker(url, "frame-b", DEFAULT_QUEUE, &dir);
    let g = Graph::new();
    let RowsCase { f, want, .. } = rows_case(&g);
    let by_u = f.group_by(["u"]).split_out(3).agg(aggs()).unwrap();
    let self_join = f
        .select([col("u"), col("x").alias("x2")])
        .unwrap()
        .filter(col("x2").gt(lit(900i64)))
        .unwrap();
    let joined = f
        .join_with(&self_join, &["u"], &["u"], How::Inner, Strategy::Hash)
        .unwrap()
        .collect();
    let (sent, stored) = submit_and_read_back(&g, vec![by_u, joined], &app, &client);
    let maps = |task: &str| -> Vec<TaskId> {
        stored
            .nodes
            .iter()
            .filter(|n| n.key.split('-').next() == Some(task))
            .map(|n| n.id)
            .collect()
    };
    for task in ["lovage.frame.split_partial", "lovage.frame.split"] {
        let mut ids = maps(task);
        if task == "lovage.frame.split_partial" {
            // Partition 0's map of a group-by is `split_probe`.
            ids.extend(maps("lovage.frame.split_probe"));
        }
        assert!(
            !ids.is_empty(),
            "{task}: no map node in {:?}",
            stored.nodes.iter().map(|n| &n.key).collect::<Vec<_>>()
        );
        let kept = ids
            .iter()
            .filter(|id| {
                let rec = app.backend().results().wait(**id, LONG).unwrap().unwrap();
                rec.result_ref().is_some()
            })
            .count();
        // The left side's three files (the header-only one is small) at least.
        assert!(
            kept >= FILES as usize,
            "{task}: {kept} of {} kept",
            ids.len()
        );
    }
    let mut futures = sent.futures.into_iter();
    let got_u = futures.next().unwrap().result_timeout(LONG).unwrap();
    assert_same(&got_u, &want_of(&want)[2], &["u"]);
    let right = want
        .clone()
        .lazy()
        .select([col("u"), col("x").alias("x2")])
        .filter(col("x2").gt(lit(900i64)))
        .collect()
        .unwrap();
    let got_join = futures.next().unwrap().result_timeout(LONG).unwrap();
    assert_same(
        &got_join,
        &polars_join(&want, &right, "u", JoinType::Inner),
        &[],
    );
}

/// A reducer reads only its piece of each map: on a memory broker with a worker in this
/// process (so this process's byte counter sees every fetch) keeping every value of 1 KiB or
/// more, a sort into four ranges and a `split_out(4)` group-by are computed; every map value
/// (`sort_split`, `split_partial`) is kept and indexed per piece, each kept value is fetched
/// once, and the maps' bytes are fetched about once in all (the four reducers a quarter
/// each), not four times as when every reducer fetched whole map values.
fn reducers_fetch_only_their_pieces() {
    const LONG: Duration = Duration::from_secs(120);
    let url = format!("memory://frame-pieces-{}", TaskId::new());
    let backend = connect(&url).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let worker = KeepingWorker::start(backend.clone(), &dir);
    let app = App::with_backend(backend);
    let client = app.client().unwrap();
    for (what, maps_task) in [
        ("sort", "lovage.frame.sort_split"),
        ("split_out(4) group-by", "lovage.frame.split_partial"),
    ] {
        let g = Graph::new();
        let RowsCase { f, want, .. } = rows_case(&g);
        assert_eq!(f.npartitions(), 4);
        let out = if what == "sort" {
            f.sort(&["u", "x"], &[false]).unwrap().collect()
        } else {
            f.group_by(["u", "s"]).split_out(4).agg(aggs()).unwrap()
        };
        let before = bytes_fetched() + bytes_read_locally();
        let sent = g.submit(&client, vec![out]).unwrap();
        let got = sent
            .futures
            .into_iter()
            .next()
            .unwrap()
            .result_timeout(LONG)
            .unwrap();
        // Fetched from a worker, or read in place from the worker's own store (one worker
        // here): either way, the bytes that reached the tasks.
        let fetched = bytes_fetched() + bytes_read_locally() - before;
        if what == "sort" {
            assert_exact(
                &got,
                &polars_sort(&want, &["u", "x"], &[false, false]),
                what,
            );
        } else {
            let lf = want.lazy().group_by([col("u"), col("s")]);
            assert_same(&got, &lf.agg(polars_aggs()).collect().unwrap(), &["u", "s"]);
        }
        let stored = stored_graph(&app, sent.graph);
        let (mut maps, mut others) = (0u64, 0u64);
        let (mut kept, mut indexed) = (0, 0);
        for n in &stored.nodes {
            let Ok(Some(rec)) = app.backend().results().get(n.id) else {
                continue;
            };
            let Some(r) = rec.result_ref() else { continue };
            let r = r.unwrap();
            if n.key.split('-').next() == Some(maps_task) {
                maps += r.size;
                kept += 1;
                indexed += usize::from(r.items.len() == 4);
            } else if r.item.is_none() {
                others += r.size;
            }
        }
        assert!(kept >= 3, "{what}: the files' map values are kept");
        assert_eq!(
            indexed, kept,
            "{what}: every kept map value is indexed by piece"
        );
        // Every kept value is read, the maps piece by piece (their pieces add up to a little
        // less than the values: the list's brackets and commas), a few small ones (the sort's
        // boundaries) by several tasks; whole map values fetched by every reducer would be
        // 4 x `maps` and more.
        assert!(
            fetched + 64 >= maps + others,
            "{what}: fetched {fetched} bytes, less than maps {maps} + others {others}"
        );
        assert!(
            fetched <= maps + maps / 4 + others,
            "{what}: fetched {fetched} bytes: the reducers read more than their pieces of the \
             maps ({maps} bytes; others {others})"
        );
    }
    drop(client);
    worker.stop();
}

fn main() {
    // The frame tasks, linked into this binary: the pool's children and the workers are it.
    lovage_frame::register().unwrap();
    lovage_pool::child_main();
    if serve_worker_role(ROLE) {
        return;
    }
    let args = Arguments::from_args();
    let mut trials = vec![
        Trial::test("frames_on_local_schedulers_match_polars", || {
            check("inline", Inline);
            check("threads", Threads(pool()));
            check_rows("inline", Inline);
            check_rows("threads", Threads(pool()));
            check_sorts("inline", Inline);
            check_sorts("threads", Threads(pool()));
            Ok(())
        }),
        Trial::test("frames_on_a_process_pool_match_polars", || {
            let pool = ProcessPool::new(2);
            check("processes", Processes(&pool));
            check_rows("processes", Processes(&pool));
            check_sorts("processes", Processes(&pool));
            closure_refused(Processes(&pool), "Processes");
            Ok(())
        }),
        Trial::test("frames_on_a_memory_broker_match_polars", || {
            let url = format!("memory://frame-broker-{}", TaskId::new());
            let backend = connect(&url).unwrap();
            let config = WorkerConfig {
                pool: PoolKind::Threads,
                concurrency: 2,
                poll: Duration::from_millis(20),
                ..WorkerConfig::default()
            };
            let worker = Worker::new(backend.clone(), config).unwrap();
            let stop = worker.shutdown_handle();
            let running = std::thread::spawn(move || worker.run());
            let client = App::with_backend(backend).client().unwrap();
            check("broker memory", Broker(&client));
            check_rows("broker memory", Broker(&client));
            check_sorts("broker memory", Broker(&client));
            closure_refused(Broker(&client), "Broker");
            drop(client);
            stop.graceful();
            running.join().unwrap().unwrap();
            Ok(())
        }),
    ];
    trials.push(Trial::test(
        "frames_reducers_fetch_only_their_pieces",
        || {
            reducers_fetch_only_their_pieces();
            Ok(())
        },
    ));
    trials.extend(on_brokers(
        &["sqlite", "redis"],
        "frames_on_workers_match_polars",
        |f| {
            on_broker(
                &f.url,
                &format!("broker {}", f.url.split(':').next().unwrap_or("?")),
            )
        },
    ));
    trials.extend(on_brokers(
        &["sqlite", "redis"],
        "frames_shuffle_pieces_stay_with_their_workers",
        |f| shuffle_pieces_stay_with_their_workers(&f.url),
    ));
    // Each shuffle's values lost, then its worker killed while it runs (the test names are
    // those the suite has always had).
    for (lost, shuffle) in [
        ("frames_lost_shuffle_values_are_remade", Shuffle::GroupBy),
        ("frames_lost_sort_values_are_remade", Shuffle::Sort),
        (
            "frames_lost_repartition_values_are_remade",
            Shuffle::Repartition,
        ),
        ("frames_lost_partials_are_remade", Shuffle::Tree),
    ] {
        trials.extend(on_brokers(&["sqlite", "redis"], lost, move |f| {
            lost_shuffle_values_are_remade(&f.url, shuffle)
        }));
    }
    for (killed, shuffle) in [
        (
            "frames_worker_killed_during_a_group_by_shuffle",
            Shuffle::GroupBy,
        ),
        ("frames_worker_killed_during_a_sort", Shuffle::Sort),
        (
            "frames_worker_killed_during_a_repartition",
            Shuffle::Repartition,
        ),
        ("frames_worker_killed_during_a_hash_join", Shuffle::Join),
    ] {
        trials.extend(on_brokers(&["sqlite", "redis"], killed, move |f| {
            killed_during_a_shuffle(&f.url, shuffle)
        }));
    }
    libtest_mimic::run(&args, trials).exit();
}
