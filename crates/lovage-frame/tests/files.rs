//! CSV, Parquet and JSON Lines sources against Polars reading the same files whole:
//! byte-range partitions, quoted newlines, a bad row (file and line in the error), a Parquet
//! file with another schema, `len` from the footers and a filter that skips row groups; the
//! writers round-tripping through the readers; frames from bags.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers panic to fail

use std::io::Write;

use lovage_collections::bag::Bag;
use lovage_frame::polars::prelude::*;
use lovage_frame::{agg, compute, read_csv, read_jsonl, read_parquet, CsvOptions, Frame};
use lovage_graph::{Graph, Inline};

mod common;
use common::{assert_same, cut, data, schedulers};

fn sorted(df: &DataFrame) -> DataFrame {
    let names: Vec<PlSmallStr> = df.get_column_names().into_iter().cloned().collect();
    df.sort(
        names,
        SortMultipleOptions::default().with_maintain_order(true),
    )
    .unwrap()
}

fn write_csv(path: &std::path::Path, rows: usize, start: i64) {
    let mut f = std::fs::File::create(path).unwrap();
    writeln!(f, "id,cat,price").unwrap();
    for i in 0..rows as i64 {
        writeln!(
            f,
            "{},c{},{}.5",
            start + i,
            (start + i) % 4,
            (start + i) % 97
        )
        .unwrap();
    }
}

#[test]
fn csv_byte_ranges_cut_at_line_ends_read_every_row_once() {
    let dir = tempfile::tempdir().unwrap();
    for (i, rows) in [(0, 3000), (1, 10), (2, 1)] {
        write_csv(&dir.path().join(format!("part{i}.csv")), rows, i * 100_000);
    }
    let pattern = dir.path().join("*.csv").to_string_lossy().into_owned();
    let g = Graph::new();
    // Blocks of 1000 bytes cut the big file in the middle of lines many times.
    let f = read_csv(
        &g,
        &pattern,
        CsvOptions {
            blocksize: 1000,
            ..Default::default()
        },
    )
    .unwrap();
    assert!(f.npartitions() > 10, "{} partitions", f.npartitions());
    let by_cat = f
        .group_by(["cat"])
        .agg([agg::sum("price"), agg::len()])
        .unwrap();
    let (all, by_cat) = compute(&g, Inline, (f.collect(), by_cat)).unwrap();
    let mut want = DataFrame::empty_with_schema(f.schema());
    for i in 0..3 {
        let p = dir.path().join(format!("part{i}.csv"));
        let one = CsvReadOptions::default()
            .try_into_reader_with_file_path(Some(p))
            .unwrap()
            .finish()
            .unwrap();
        want.vstack_mut(&one).unwrap();
    }
    assert_eq!(all.height(), 3011);
    assert_eq!(sorted(&all), sorted(&want));
    let lens = by_cat.column("len").unwrap().i64().unwrap().sum().unwrap();
    assert_eq!(lens, 3011);
}

#[test]
fn csv_quoted_newlines_need_whole_file_and_a_bad_row_names_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("notes.csv");
    let mut text = String::from("id,note\n");
    for i in 0..200 {
        text.push_str(&format!("{i},\"line one\nline two of {i}\"\n"));
    }
    std::fs::write(&p, &text).unwrap();
    let g = Graph::new();
    let pattern = p.to_string_lossy().into_owned();
    let f = read_csv(
        &g,
        &pattern,
        CsvOptions {
            whole_file: true,
            blocksize: 100,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(f.npartitions(), 1);
    let got = compute(&g, Inline, f.collect()).unwrap();
    assert_eq!(got.height(), 200);
    assert_eq!(
        got.column("note").unwrap().str().unwrap().get(7),
        Some("line one\nline two of 7")
    );

    // A bad row: file line 3 of data (line 4 of the file) holds text in an integer column.
    let bad = dir.path().join("bad.csv");
    std::fs::write(&bad, "id,price\n1,2.5\n2,3.5\nthree,4.5\n4,5.5\n").unwrap();
    let g = Graph::new();
    // The types are inferred from the first two rows, so the third must fit them.
    let f = read_csv(
        &g,
        &bad.to_string_lossy(),
        CsvOptions {
            infer_rows: 2,
            ..Default::default()
        },
    )
    .unwrap();
    let err = compute(&g, Inline, f.collect()).unwrap_err().to_string();
    assert!(err.contains("bad.csv:4"), "{err}");
    assert!(err.contains("\"three\""), "{err}");

    // The same bad row met in a later byte range still names the file's line.
    let big = dir.path().join("big.csv");
    let mut text = String::from("id,price\n");
    for i in 0..500 {
        text.push_str(&format!("{i},{i}.5\n"));
    }
    text.push_str("x,1.0\n");
    std::fs::write(&big, &text).unwrap();
    let g = Graph::new();
    let f = read_csv(
        &g,
        &big.to_string_lossy(),
        CsvOptions {
            blocksize: 512,
            infer_rows: 100,
            ..Default::default()
        },
    )
    .unwrap();
    let err = compute(&g, Inline, f.collect()).unwrap_err().to_string();
    assert!(err.contains("big.csv:502"), "{err}");
}

#[test]
fn csv_header_that_differs_is_an_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.csv"), "id,price\n1,2\n").unwrap();
    std::fs::write(dir.path().join("b.csv"), "id,cost\n1,2\n").unwrap();
    let g = Graph::new();
    let err = read_csv(
        &g,
        &dir.path().join("*.csv").to_string_lossy(),
        CsvOptions::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("b.csv") && err.contains("cost"), "{err}");
    let err = read_csv(
        &g,
        &dir.path().join("*.nothing").to_string_lossy(),
        CsvOptions::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("no file matches"), "{err}");
}

fn write_parquet(path: &std::path::Path, df: &mut DataFrame, row_group: usize) {
    let f = std::fs::File::create(path).unwrap();
    ParquetWriter::new(f)
        .with_row_group_size(Some(row_group))
        .finish(df)
        .unwrap();
}

#[test]
fn parquet_row_groups_len_from_footers_and_filter_skips_row_groups() {
    let dir = tempfile::tempdir().unwrap();
    let mut all = DataFrame::empty_with_schema(&Schema::from_iter([
        Field::new("id".into(), DataType::Int64),
        Field::new("price".into(), DataType::Float64),
        Field::new("cat".into(), DataType::String),
    ]));
    for file in 0..3i64 {
        let ids: Vec<i64> = (file * 1000..file * 1000 + 1000).collect();
        let prices: Vec<f64> = ids.iter().map(|i| (*i % 113) as f64 + 0.25).collect();
        let cats: Vec<String> = ids.iter().map(|i| format!("c{}", i % 3)).collect();
        let mut df = df!("id" => ids, "price" => prices, "cat" => cats).unwrap();
        write_parquet(&dir.path().join(format!("f{file}.parquet")), &mut df, 250);
        all.vstack_mut(&df).unwrap();
    }
    let pattern = dir.path().join("*.parquet").to_string_lossy().into_owned();
    let g = Graph::new();
    let f = read_parquet(&g, &pattern).unwrap();
    assert_eq!(f.npartitions(), 12, "a partition per row group");
    // ids 1100..1400 live in file 1's row groups 0 and 1 only.
    let pred = col("id")
        .gt_eq(lit(1100i64))
        .and(col("id").lt(lit(1400i64)));
    let filtered = f.filter(pred.clone()).unwrap();
    assert_eq!(
        filtered.npartitions(),
        2,
        "row groups ruled out by min/max are not read"
    );
    let whole_file_out = f.filter(col("id").gt(lit(1999i64))).unwrap();
    assert_eq!(
        whole_file_out.npartitions(),
        4,
        "files 0 and 1 skipped whole"
    );
    let sums = f
        .group_by(["cat"])
        .agg([agg::sum("id"), agg::mean("price")])
        .unwrap();
    let (n, got, got_sums) = compute(&g, Inline, (f.len(), filtered.collect(), sums)).unwrap();
    assert_eq!(n, 3000);
    let want = all.clone().lazy().filter(pred).collect().unwrap();
    assert_eq!(got, want);
    let want_sums = all
        .lazy()
        .group_by([col("cat")])
        .agg([col("id").sum(), col("price").mean()])
        .collect()
        .unwrap();
    assert_eq!(
        sorted(&got_sums).column("id").unwrap(),
        sorted(&want_sums).column("id").unwrap()
    );
    // `len` after a filter counts rows by reading the row groups that are left.
    let g = Graph::new();
    let f = read_parquet(&g, &pattern)
        .unwrap()
        .filter(col("cat").eq(lit("c1")))
        .unwrap();
    assert_eq!(compute(&g, Inline, f.len()).unwrap(), 1000);
}

#[test]
fn parquet_file_with_another_schema_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = df!("id" => [1i64, 2], "price" => [1.0f64, 2.0]).unwrap();
    let mut b = df!("id" => [3i64, 4], "price" => ["x", "y"]).unwrap();
    write_parquet(&dir.path().join("a.parquet"), &mut a, 10);
    write_parquet(&dir.path().join("b.parquet"), &mut b, 10);
    let g = Graph::new();
    let err = read_parquet(&g, &dir.path().join("*.parquet").to_string_lossy())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("b.parquet") && err.contains("a.parquet") && err.contains("price"),
        "{err}"
    );
}

#[test]
fn to_parquet_and_to_csv_round_trip_through_the_readers() {
    let df = data(2_000, 30, 5);
    for sched in schedulers() {
        let dir = tempfile::tempdir().unwrap();
        let g = Graph::new();
        // Empty partitions write files of no rows, read back as nothing.
        let f = Frame::from_partitions(&g, cut(&df, vec![0, 700, 700, 1_999])).unwrap();
        let (pq, csv) = (dir.path().join("pq"), dir.path().join("csv"));
        let written = compute(
            &g,
            sched,
            (f.to_parquet(&pq).unwrap(), f.to_csv(&csv).unwrap()),
        )
        .unwrap();
        assert_eq!(written.0.len(), 5);
        assert_eq!(written.0[2], pq.join("part-00002.parquet"));
        assert_eq!(written.1[4], csv.join("part-00004.csv"));

        let g = Graph::new();
        let back = read_parquet(&g, pq.join("*.parquet").to_str().unwrap()).unwrap();
        let back_csv = read_csv(
            &g,
            csv.join("*.csv").to_str().unwrap(),
            CsvOptions::default(),
        )
        .unwrap();
        let (p, c, n) =
            compute(&g, sched, (back.collect(), back_csv.collect(), back.len())).unwrap();
        assert_eq!(n, df.height());
        assert!(p.equals_missing(&df), "parquet:\n{p}\n{df}");
        // CSV keeps the types and the order; floats within the comparison's tolerance.
        assert_same(&c, &df, &[]);
        assert_eq!(
            c.column("k").unwrap().null_count(),
            df.column("k").unwrap().null_count()
        );
    }
}

#[test]
fn read_jsonl_reads_every_file_with_one_schema_and_names_a_bad_line() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.jsonl");
    let b = dir.path().join("b.jsonl");
    std::fs::write(
        &a,
        "{\"id\": 1, \"name\": \"x\", \"score\": 2, \"ok\": true}\n\n{\"id\": 2, \"score\": 2.5, \"ok\": null}\n",
    )
    .unwrap();
    std::fs::write(
        &b,
        "{\"id\": 3, \"name\": \"z\", \"score\": -1, \"ok\": false}\n",
    )
    .unwrap();
    let g = Graph::new();
    let f = read_jsonl(&g, dir.path().join("*.jsonl").to_str().unwrap()).unwrap();
    assert_eq!(f.npartitions(), 2);
    let got = compute(&g, Inline, f.collect()).unwrap();
    // Columns in order of first appearance, an object's fields by name.
    let want = df!(
        "id" => [1i64, 2, 3],
        "name" => [Some("x"), None, Some("z")],
        "ok" => [Some(true), None, Some(false)],
        "score" => [2.0, 2.5, -1.0]
    )
    .unwrap();
    assert!(
        got.equals_missing(&want),
        "{:?}\n{:?}",
        got.columns(),
        want.columns()
    );

    // A row whose field does not fit the schema, and a line that is not JSON.
    std::fs::write(&b, "{\"id\": 3}\n{\"id\": \"four\"}\n").unwrap();
    let g = Graph::new();
    let f = read_jsonl(&g, dir.path().join("*.jsonl").to_str().unwrap()).unwrap();
    let e = compute(&g, Inline, f.collect()).unwrap_err().to_string();
    assert!(e.contains("b.jsonl:2") && e.contains("field id"), "{e}");
    std::fs::write(&b, "{\"id\": 3}\n{\"id\": 4\n").unwrap();
    let g = Graph::new();
    let f = read_jsonl(&g, dir.path().join("*.jsonl").to_str().unwrap()).unwrap();
    let e = compute(&g, Inline, f.len()).unwrap_err().to_string();
    assert!(e.contains("b.jsonl:2: not JSON"), "{e}");
}

#[test]
fn from_bag_makes_a_partition_per_bag_partition() {
    let g = Graph::new();
    let items: Vec<serde_json::Value> = (0..100)
        .map(|i| {
            if i % 10 == 3 {
                serde_json::json!({"k": i % 4})
            } else {
                serde_json::json!({"k": i % 4, "v": f64::from(i) / 2.0})
            }
        })
        .collect();
    let bag = Bag::from_iter(&g, items, 6);
    let schema = Schema::from_iter([
        Field::new("k".into(), DataType::Int64),
        Field::new("v".into(), DataType::Float64),
    ]);
    let f = Frame::from_bag(&bag, schema.clone()).unwrap();
    assert_eq!(f.npartitions(), 6);
    let sums = f.group_by(["k"]).agg([agg::sum("v"), agg::len()]).unwrap();
    let got = compute(&g, schedulers()[1], sums).unwrap();
    let k = got.column("k").unwrap().i64().unwrap();
    let len = got.column("len").unwrap().i64().unwrap();
    assert_eq!(len.iter().flatten().sum::<i64>(), 100);
    let total: f64 = got
        .column("v")
        .unwrap()
        .f64()
        .unwrap()
        .iter()
        .flatten()
        .sum();
    let want: f64 = (0..100)
        .filter(|i| i % 10 != 3)
        .map(|i| f64::from(i) / 2.0)
        .sum();
    assert!((total - want).abs() < 1e-9, "{total} against {want}");
    assert_eq!(k.len(), 4);

    let bad = Bag::from_iter(&g, vec![serde_json::json!({"k": 1, "w": 2})], 1);
    let f = Frame::from_bag(&bad, schema).unwrap();
    let e = compute(&g, Inline, f.collect()).unwrap_err().to_string();
    assert!(
        e.contains("bag partition 0, item 0: field w is not in the schema"),
        "{e}"
    );
}
