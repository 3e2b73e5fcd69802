//! Locality-aware queueing (issue 17, item 1), with two real worker processes on SQLite and on
//! Redis: a graph node whose input is a value kept by worker A is queued for A, which reads
//! the value from its own store (no bytes fetched); when A is busy, idle worker B steals the
//! node once its steal delay has passed, fetching the value across. Also `scatter` with
//! broadcast: a copy in every live worker's store, read there without a fetch.
//!
//! The workers are this test binary started again with `LOCALITY_ROLE` set (so they know its
//! tasks), hence `harness = false`. Each task that reads a kept value reports, from its
//! worker's process, the bytes of kept values fetched and read in place so far
//! (`lovage_broker::dataref::bytes_fetched` and `bytes_read_locally`).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr
)] // tests panic to fail and print what they saw

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use libtest_mimic::Arguments;
use lovage_broker::dataref::{bytes_fetched, bytes_read_locally};
use lovage_broker::{connect, App, Client};
use lovage_core::{Codec, Signature, TaskId};
use lovage_graph::Graph;
use lovage_testkit::{letters as text, on_brokers, Process};
use lovage_worker::{DataConfig, Worker, WorkerConfig};

/// The kept value's size: well above the 64 KiB threshold.
const N: usize = 1 << 20;
const LONG: Duration = Duration::from_secs(120);

/// A text's length and byte sum.
fn summary(s: &str) -> String {
    format!("{}:{}", s.len(), s.bytes().map(u64::from).sum::<u64>())
}

/// What a reader reports: the summary of what it read, then its process's bytes of kept
/// values fetched and read in place so far.
type Report = (String, u64, u64);

/// The kept value: made on worker A (only A serves this queue).
#[lovage_macros::task(crate = lovage_core, graph = lovage_graph, queue = "loc-make")]
fn make_value(n: usize, seed: u64) -> String {
    text(n, seed)
}

/// A reader either worker may run.
#[lovage_macros::task(crate = lovage_core, graph = lovage_graph, queue = "loc-any")]
fn probe(s: String) -> Report {
    (summary(&s), bytes_fetched(), bytes_read_locally())
}

/// A reader either worker may run, that also waits for `gate`.
#[lovage_macros::task(crate = lovage_core, graph = lovage_graph, queue = "loc-any")]
fn probe_after(s: String, _gate: u64) -> Report {
    (summary(&s), bytes_fetched(), bytes_read_locally())
}

/// Sleeps `secs` on worker B (only B serves this queue): holds a reader back until A is busy.
#[lovage_macros::task(crate = lovage_core, graph = lovage_graph, queue = "loc-gate")]
fn gate(secs: u64) -> u64 {
    std::thread::sleep(Duration::from_secs(secs));
    secs
}

/// Keeps worker A busy for `secs`.
#[lovage_macros::task(crate = lovage_core, graph = lovage_graph, queue = "loc-make")]
fn block(secs: u64) -> u64 {
    std::thread::sleep(Duration::from_secs(secs));
    secs
}

/// A worker process: `worker|url|queue,queue|name|concurrency|prefetch|steal ms|data dir`.
fn worker_main(role: &[&str]) {
    let [url, queues, name, concurrency, prefetch, steal_ms, dir] = role else {
        panic!("bad worker role {role:?}");
    };
    let config = WorkerConfig {
        queues: queues.split(',').map(str::to_owned).collect(),
        concurrency: concurrency.parse().unwrap(),
        prefetch: prefetch.parse().unwrap(),
        name: (*name).to_owned(),
        data: Some(DataConfig {
            dir: Some(PathBuf::from(dir)),
            steal_after: Duration::from_millis(steal_ms.parse().unwrap()),
            ..DataConfig::default()
        }),
        ..WorkerConfig::default()
    };
    let worker = Worker::new(connect(url).unwrap(), config).unwrap();
    lovage_worker::install_signal_handlers(worker.shutdown_handle()).unwrap();
    worker.run().unwrap();
}

/// This binary again as a worker (see `worker_main`), killed with -9 when dropped.
fn start_worker(url: &str, spec: &str, dir: &tempfile::TempDir) -> Process {
    let role = format!("worker|{url}|{spec}|{}", dir.path().display());
    Process::this_binary("LOCALITY_ROLE", &role, Stdio::null())
}

/// The worker that ran `id`, from its record.
fn ran_on(app: &App, id: TaskId) -> String {
    let rec = app.backend().results().get(id).unwrap().unwrap();
    rec.worker.unwrap_or_default()
}

/// Waits until both workers have registered (so neither misses what is sent next).
fn both_up(app: &App) {
    let deadline = Instant::now() + LONG;
    loop {
        let workers = app.backend().presence().workers(LONG).unwrap();
        let up = |name: &str| workers.iter().any(|w| w.id.starts_with(name));
        if up("loc-a@") && up("loc-b@") {
            return;
        }
        assert!(Instant::now() < deadline, "the workers did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Six readers of a value kept on A, which either worker may run. A takes one task at a time
/// (one slot, no prefetch) and B up to ten, so from a shared queue B would take most of them;
/// queued for A with a steal delay (10 s) far longer than A takes to run them one by one, they
/// all run on A, which reads the value in place, fetching nothing; idle B gets none.
fn dependents_run_where_their_input_is(url: &str) {
    let dir = tempfile::tempdir().unwrap();
    let _a = start_worker(url, "loc-make,loc-any|loc-a|1|0|10000", &dir);
    let _b = start_worker(url, "loc-any|loc-b|2|8|10000", &dir);
    let app = App::with_backend(connect(url).unwrap());
    both_up(&app);
    let client = app.client().unwrap();
    let g = Graph::new();
    let value = make_value::delayed(&g, N, 3);
    let readers: Vec<_> = (0..6).map(|_| probe::delayed(&g, value)).collect();
    let futures = g.submit(&client, readers).unwrap().futures;
    let want = summary(&text(N, 3));
    for f in futures {
        let id = f.id();
        let (got, fetched, local): Report = f.result_timeout(LONG).unwrap();
        let worker = ran_on(&app, id);
        eprintln!("reader {id}: on {worker}, fetched {fetched}, read in place {local}");
        assert_eq!(got, want);
        assert!(
            worker.starts_with("loc-a@"),
            "ran on {worker}, not where its input is"
        );
        assert_eq!(fetched, 0, "A fetched nothing: the value is its own");
        assert!(
            local >= N as u64,
            "A read the value in place ({local} bytes)"
        );
    }
}

/// A reader of a value kept on A becomes ready (its gate on B opened) while A is busy with a
/// long task (one slot, no prefetch): B, idle, steals it once the steal delay (1 s) passed,
/// fetching the value from A, long before A is free again.
fn an_idle_worker_steals_from_a_busy_one(url: &str) {
    let dir = tempfile::tempdir().unwrap();
    let _a = start_worker(url, "loc-make,loc-any|loc-a|1|0|1000", &dir);
    let _b = start_worker(url, "loc-any,loc-gate|loc-b|2|0|1000", &dir);
    let app = App::with_backend(connect(url).unwrap());
    both_up(&app);
    let client = app.client().unwrap();
    let g = Graph::new();
    let value = make_value::delayed(&g, N, 5);
    let opened = gate::delayed(&g, 2);
    let reader = probe_after::delayed(&g, value, opened);
    let reader = g.submit(&client, vec![reader]).unwrap().futures.remove(0);
    // Sent after the graph's roots: A makes the value first (FIFO), then blocks.
    let busy = block_for(&client, 60);
    let id = reader.id();
    let (got, fetched, _): Report = reader.result_timeout(LONG).unwrap();
    let worker = ran_on(&app, id);
    eprintln!("reader {id}: on {worker}, fetched {fetched}");
    assert_eq!(got, summary(&text(N, 5)));
    assert!(
        worker.starts_with("loc-b@"),
        "ran on {worker}: B did not steal it"
    );
    assert!(
        fetched >= N as u64,
        "B fetched the value from A ({fetched} bytes)"
    );
    assert!(
        !busy.done(),
        "A was still busy: the reader did not wait for it"
    );
}

/// `scatter` with broadcast: a value put in once lands with A (the scatter task on A's queue);
/// `broadcast` copies it into B's store; a call on B then reads it in place, fetching nothing.
fn a_broadcast_value_is_read_in_place_everywhere(url: &str) {
    let dir = tempfile::tempdir().unwrap();
    let _a = start_worker(url, "loc-make|loc-a|2|8|200", &dir);
    let _b = start_worker(url, "loc-gate|loc-b|2|8|200", &dir);
    let app = App::with_backend(connect(url).unwrap());
    both_up(&app);
    let client = app.client().unwrap();
    let value = text(N, 17);
    let scattered = client.scatter(&value, Some("loc-make")).unwrap();
    let sent = scattered.broadcast(LONG).unwrap();
    eprintln!(
        "broadcast: copies {:?}, without {:?}",
        sent.copies, sent.without
    );
    let r = lovage_broker::ResultRef::from_value(&sent.arg).expect("kept by a worker");
    assert!(r.worker.starts_with("loc-a@") && r.everywhere, "{r:?}");
    assert_eq!(sent.copies.len(), 1, "{sent:?}");
    assert!(sent.copies[0].starts_with("loc-b@"), "{sent:?}");
    assert!(sent.without.is_empty(), "{sent:?}");
    for queue in ["loc-gate", "loc-make"] {
        let mut sig = Signature::new(probe::NAME, &(&sent.arg,), Codec::Json).unwrap();
        sig.options.queue = Some(queue.into());
        assert!(sig.args.len() < 2048, "the call carries the reference only");
        let f = client.submit_raw_many(vec![sig]).unwrap().remove(0);
        let id = f.id();
        let bytes = f.result_timeout(LONG).unwrap();
        let (got, fetched, local): Report = serde_json::from_slice(&bytes).unwrap();
        let worker = ran_on(&app, id);
        eprintln!("reader on {worker}: fetched {fetched}, read in place {local}");
        assert_eq!(got, summary(&value));
        // B fetched the value once, for its copy (counted in its process), and no more.
        let copy = if worker.starts_with("loc-b@") {
            r.size
        } else {
            0
        };
        assert_eq!(
            fetched, copy,
            "{worker} read its own copy, fetching nothing for the call"
        );
        assert!(
            local >= r.size,
            "{worker} read the value in place ({local} bytes)"
        );
    }
}

/// A measurement, not a check (ignored unless asked for: `cargo test -p lovage-graph --test
/// locality -- --ignored`): four readers of a 64 MiB value kept on A, both workers serving the
/// readers' queue (two slots, prefetch 8 each), with a steal delay of 0 (no worker is
/// preferred: the behaviour before locality), the default 200 ms, and 2 s. Prints where the
/// readers ran, the bytes the workers fetched, and the wall time from submit to the last result.
fn measure_bytes_moved(url: &str) {
    const BIG: usize = 64 << 20;
    for steal_ms in [0, 200, 2000] {
        let dir = tempfile::tempdir().unwrap();
        let _a = start_worker(url, &format!("loc-make,loc-any|loc-a|2|8|{steal_ms}"), &dir);
        let _b = start_worker(url, &format!("loc-any|loc-b|2|8|{steal_ms}"), &dir);
        let app = App::with_backend(connect(url).unwrap());
        both_up(&app);
        let client = app.client().unwrap();
        let g = Graph::new();
        let value = make_value::delayed(&g, BIG, 9);
        let readers: Vec<_> = (0..4).map(|_| probe::delayed(&g, value)).collect();
        let started = Instant::now();
        let futures = g.submit(&client, readers).unwrap().futures;
        let mut fetched_by: std::collections::BTreeMap<String, u64> = Default::default();
        let mut on_b = 0;
        for f in futures {
            let id = f.id();
            let (got, fetched, _): Report = f.result_timeout(LONG).unwrap();
            assert_eq!(got, summary(&text(BIG, 9)));
            let worker = ran_on(&app, id);
            on_b += usize::from(worker.starts_with("loc-b@"));
            let most = fetched_by.entry(worker).or_default();
            *most = (*most).max(fetched);
        }
        let wall = started.elapsed();
        let fetched: u64 = fetched_by.values().sum();
        println!(
            "measure: steal_after={steal_ms}ms readers_on_a={} readers_on_b={on_b} \
             bytes_fetched_by_workers={fetched} wall_ms={}",
            4 - on_b,
            wall.as_millis()
        );
    }
}

/// Sends `block(secs)` to A's queue.
fn block_for(client: &Client, secs: u64) -> lovage_broker::TaskFuture<Vec<u8>> {
    let mut sig = Signature::new(block::NAME, &(secs,), Codec::Json).unwrap();
    sig.options.queue = Some("loc-make".into());
    client.submit_raw_many(vec![sig]).unwrap().remove(0)
}

fn main() {
    if let Ok(role) = std::env::var("LOCALITY_ROLE") {
        let parts: Vec<&str> = role.split('|').collect();
        match parts[..] {
            ["worker", ref rest @ ..] => worker_main(rest),
            _ => panic!("bad LOCALITY_ROLE {role:?}"),
        }
        return;
    }
    let args = Arguments::from_args();
    let kinds = ["sqlite", "redis"];
    let trials: Vec<_> = [
        on_brokers(&kinds, "dependents_run_where_their_input_is", |f| {
            dependents_run_where_their_input_is(&f.url)
        }),
        on_brokers(&kinds, "an_idle_worker_steals_from_a_busy_one", |f| {
            an_idle_worker_steals_from_a_busy_one(&f.url)
        }),
        on_brokers(
            &kinds,
            "a_broadcast_value_is_read_in_place_everywhere",
            |f| a_broadcast_value_is_read_in_place_everywhere(&f.url),
        ),
    ]
    .into_iter()
    .flatten()
    .chain(
        on_brokers(&kinds, "measure_bytes_moved", |f| {
            measure_bytes_moved(&f.url)
        })
        .into_iter()
        .map(|t| t.with_ignored_flag(true)),
    )
    .collect();
    libtest_mimic::run(&args, trials).exit();
}
