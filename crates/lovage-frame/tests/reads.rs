//! How often a sort and a repartition read their sources: once per partition (`sort_sample`
//! keeps the rows it read for `sort_split`; a repartition of Parquet row groups takes the
//! heights from the footers, one of CSV files keeps the rows it counted), on the local
//! schedulers and on a memory broker's worker in this process with the data plane on (the
//! kept rows are fetched by element from the worker's store). Alone in its binary, so the process's read counter sees only this test.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests panic to fail

use lovage_broker::{connect, App};
use lovage_core::TaskId;
use lovage_frame::polars::prelude::*;
use lovage_frame::{compute, sources_read};
use lovage_graph::{Broker, Graph, Inline, Scheduler, Threads};

mod common;
use common::{csv_files, pool, KeepingWorker};

/// Sorts 12 partitions on `sched`: 12 sources read, and the rows in Polars' sorted order.
fn sort_reads_once(name: &str, sched: Scheduler<'_>) {
    let dir = tempfile::tempdir().unwrap();
    let g = Graph::new();
    let f = csv_files(&g, &dir, 12, 500);
    assert_eq!(f.npartitions(), 12);
    let before = sources_read();
    let got = compute(
        &g,
        sched,
        f.sort(&["k", "x"], &[true, false]).unwrap().collect(),
    )
    .unwrap();
    let reads = sources_read() - before;
    assert_eq!(
        reads, 12,
        "{name}: a sort read {reads} sources for 12 partitions"
    );
    let before = sources_read();
    let all = compute(&g, sched, f.collect()).unwrap();
    assert_eq!(
        sources_read() - before,
        12,
        "{name}: collect reads each once"
    );
    let want = all
        .sort(
            ["k", "x"],
            SortMultipleOptions::default()
                .with_order_descending_multi([true, false])
                .with_nulls_last(true)
                .with_maintain_order(true),
        )
        .unwrap();
    assert!(got.equals_missing(&want), "{name}: sorted rows differ");
}

/// Repartitions 6 Parquet files (one row group each) into 4 on `sched`: 6 sources read (the
/// heights come from the footers), and the same rows in the same order; then the 6 CSV files
/// they were written from: 6 reads too (each read once for its count and its rows).
fn repartition_reads_once(name: &str, sched: Scheduler<'_>) {
    let dir = tempfile::tempdir().unwrap();
    let g = Graph::new();
    let csv = csv_files(&g, &dir, 6, 300);
    let written = csv.to_parquet(dir.path().join("pq")).unwrap();
    assert_eq!(compute(&g, sched, written).unwrap().len(), 6);
    let pattern = format!("{}/pq/*.parquet", dir.path().display());
    let f = lovage_frame::read_parquet(&g, &pattern).unwrap();
    assert_eq!(f.npartitions(), 6);
    let before = sources_read();
    let all = compute(&g, sched, f.collect()).unwrap();
    assert_eq!(
        sources_read() - before,
        6,
        "{name}: collect reads each once"
    );
    // The CSV files have no heights in their metadata, so each partition is read once for
    // its count and its rows together.
    for (source, what) in [(&f, "6 row groups"), (&csv, "6 CSV files")] {
        let before = sources_read();
        let again = source.repartition(4);
        assert_eq!(again.npartitions(), 4);
        let got = compute(&g, sched, again.collect()).unwrap();
        let reads = sources_read() - before;
        assert_eq!(
            reads, 6,
            "{name}: a repartition read {reads} sources for {what}"
        );
        assert!(
            got.equals_missing(&all),
            "{name}: repartitioned rows of {what} differ"
        );
    }
}

#[test]
fn a_sort_and_a_repartition_read_each_partition_once() {
    lovage_frame::register().unwrap();
    sort_reads_once("inline", Inline);
    sort_reads_once("threads", Threads(pool()));
    repartition_reads_once("inline", Inline);
    repartition_reads_once("threads", Threads(pool()));
    // A worker keeping values of 1 KiB and more: the rows `sort_sample` read stay in its
    // store and `sort_split` takes them from there.
    let url = format!("memory://frame-reads-{}", TaskId::new());
    let backend = connect(&url).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let worker = KeepingWorker::start(backend.clone(), &dir);
    let client = App::with_backend(backend).client().unwrap();
    sort_reads_once("broker", Broker(&client));
    repartition_reads_once("broker", Broker(&client));
    drop(client);
    worker.stop();
}
