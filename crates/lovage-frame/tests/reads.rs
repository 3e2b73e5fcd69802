//! How often a sort reads its sources: once per partition (`sort_sample` keeps the rows it
//! read for `sort_split`), on the local schedulers and on a memory broker's worker in this
//! process with the data plane on (the kept rows are fetched by element from the worker's
//! store). Alone in its binary, so the process's read counter sees only this test.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests panic to fail

use std::time::Duration;

use lovage_broker::{connect, App};
use lovage_core::TaskId;
use lovage_frame::polars::prelude::*;
use lovage_frame::{compute, read_csv, sources_read, CsvOptions, Frame};
use lovage_graph::{Broker, Graph, Inline, Scheduler, Threads};
use lovage_worker::{PoolKind, Worker, WorkerConfig};

mod common;
use common::{data, pool};

/// `parts` CSV files of `data` rows in `dir`, one partition each.
fn csv_frame<'g>(g: &'g Graph, dir: &tempfile::TempDir, parts: u64) -> Frame<'g> {
    for i in 0..parts {
        let mut df = data(500, 50, i);
        let path = dir.path().join(format!("{i:02}.csv"));
        CsvWriter::new(std::fs::File::create(path).unwrap())
            .finish(&mut df)
            .unwrap();
    }
    let pattern = format!("{}/*.csv", dir.path().display());
    read_csv(g, &pattern, CsvOptions::default()).unwrap()
}

/// Sorts 12 partitions on `sched`: 12 sources read, and the rows in Polars' sorted order.
fn sort_reads_once(name: &str, sched: Scheduler<'_>) {
    let dir = tempfile::tempdir().unwrap();
    let g = Graph::new();
    let f = csv_frame(&g, &dir, 12);
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

#[test]
fn a_sort_reads_each_partition_once() {
    lovage_frame::register().unwrap();
    sort_reads_once("inline", Inline);
    sort_reads_once("threads", Threads(pool()));
    // A worker keeping values of 1 KiB and more: the rows `sort_sample` read stay in its
    // store and `sort_split` takes them from there.
    let url = format!("memory://frame-reads-{}", TaskId::new());
    let backend = connect(&url).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = WorkerConfig {
        pool: PoolKind::Threads,
        concurrency: 2,
        poll: Duration::from_millis(20),
        data: Some(lovage_worker::DataConfig {
            threshold: 1 << 10,
            dir: Some(dir.path().to_owned()),
            ..lovage_worker::DataConfig::default()
        }),
        ..WorkerConfig::default()
    };
    let worker = Worker::new(backend.clone(), config).unwrap();
    let stop = worker.shutdown_handle();
    let running = std::thread::spawn(move || worker.run());
    let client = App::with_backend(backend).client().unwrap();
    sort_reads_once("broker", Broker(&client));
    drop(client);
    stop.graceful();
    running.join().unwrap().unwrap();
}
