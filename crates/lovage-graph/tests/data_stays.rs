//! The data plane under a task graph (issue 17), with two real worker processes on SQLite
//! and on Redis: a 64 MiB intermediate made on worker A feeds a task on worker B.
//!
//! - It stays put: it crosses neither the broker (the SQLite file and its WAL stay small;
//!   Redis's `total_net_input_bytes` and `used_memory` do not grow by it) nor the client's
//!   connection (the client process's own read-byte counter, `rchar` in `/proc/self/io`, stays
//!   small while the graph runs and its futures finish), and the client gets the bytes only
//!   when it calls `result()`.
//!
//! - Values nobody needs are freed: an intermediate once its readers finished, a result once
//!   the caller's future let it go; the workers' stores (memory and files) return to empty.
//!
//! - A value lost with its worker (killed -9) is made again from its recorded task by the
//!   worker that needs it, and its reader's result is right.
//!
//! - A value put in once with `scatter` is an input of later calls by reference.
//!
//! The workers and the client are this test binary started again with `DATA_STAYS_ROLE` set
//! (so they know its tasks), hence `harness = false`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr
)] // tests panic to fail and print what they saw

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};

use libtest_mimic::Arguments;
use lovage_broker::dataref::bytes_fetched;
use lovage_broker::{connect, App};
use lovage_graph::Graph;
use lovage_testkit::{letters as text, on_brokers, redis_base, wait_until_handed_on, Process};
use lovage_worker::{DataConfig, Worker, WorkerConfig};

/// The intermediate's size.
const BIG: usize = 64 << 20;
const LONG: Duration = Duration::from_secs(300);
const GIB: usize = 1 << 30;

/// What `digest` says of a text: its length and byte sum.
fn summary(s: &str) -> String {
    format!("{}:{}", s.len(), s.bytes().map(u64::from).sum::<u64>())
}

/// The large intermediate: made on worker A (its queue).
#[lovage_macros::task(crate = lovage_core, graph = lovage_graph, queue = "stays-make")]
fn make_text(n: usize, seed: u64) -> String {
    text(n, seed)
}

/// Its reader: runs on worker B (its queue), so the value must travel A → B.
#[lovage_macros::task(crate = lovage_core, graph = lovage_graph, queue = "stays-use")]
fn digest(s: String) -> String {
    summary(&s)
}

/// A worker process: `worker|url|queue|name|data_dir|memory_limit`.
fn worker_main(url: &str, queue: &str, name: &str, dir: &str, limit: &str) {
    let config = WorkerConfig {
        queues: vec![queue.to_owned()],
        concurrency: 2,
        name: name.to_owned(),
        data: Some(DataConfig {
            dir: Some(PathBuf::from(dir)),
            memory_limit: limit.parse().unwrap(),
            ..DataConfig::default()
        }),
        ..WorkerConfig::default()
    };
    let worker = Worker::new(connect(url).unwrap(), config).unwrap();
    lovage_worker::install_signal_handlers(worker.shutdown_handle()).unwrap();
    worker.run().unwrap();
}

/// Bytes this process has read with `read(2)` (the SQLite file's pages among them; socket
/// `recv`s are not counted, hence the proxy for Redis).
fn rchar() -> u64 {
    let io = std::fs::read_to_string("/proc/self/io").unwrap();
    io.lines()
        .find_map(|l| l.strip_prefix("rchar: "))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

static PROXIED: AtomicU64 = AtomicU64::new(0);

/// A TCP proxy to `upstream` that counts every byte it carries (both ways) in [`PROXIED`]:
/// the client's connections to Redis go through it. Its address.
fn counting_proxy(upstream: String) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(down) = conn else { continue };
            let Ok(up) = TcpStream::connect(&upstream) else {
                continue;
            };
            for (mut from, mut to) in [
                (down.try_clone().unwrap(), up.try_clone().unwrap()),
                (up, down),
            ] {
                std::thread::spawn(move || {
                    let mut buf = vec![0u8; 1 << 16];
                    loop {
                        let n = match from.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        PROXIED.fetch_add(n as u64, Ordering::Relaxed);
                        if to.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = to.shutdown(std::net::Shutdown::Both);
                });
            }
        }
    });
    addr
}

/// What crossed the client's connection to the broker so far: the SQLite file's reads, or
/// the bytes through the Redis proxy.
fn connection_bytes() -> u64 {
    rchar() + PROXIED.load(Ordering::Relaxed)
}

/// The client process: sends the graph, waits for both futures to finish, then reads the
/// small result and the large one, printing at each step its broker connection's byte count
/// and the bytes of kept values it fetched.
fn client_main(url: &str) {
    let url = match url.strip_prefix("redis://") {
        Some(rest) => {
            let (hostport, tail) = rest.split_once('/').unwrap();
            format!("redis://{}/{tail}", counting_proxy(hostport.to_owned()))
        }
        None => url.to_owned(),
    };
    let app = App::with_backend(connect(&url).unwrap());
    let client = app.client().unwrap();
    let g = Graph::new();
    let big = make_text::delayed(&g, BIG, 7);
    let small = digest::delayed(&g, big);
    let start = connection_bytes();
    let mut futures = g.submit(&client, vec![big, small]).unwrap().futures;
    let deadline = Instant::now() + LONG;
    while !futures.iter().all(|f| f.done()) {
        assert!(Instant::now() < deadline, "the graph did not finish");
        std::thread::sleep(Duration::from_millis(20));
    }
    let done = connection_bytes() - start;
    let fetched_done = bytes_fetched();
    let small = futures.pop().unwrap().result().unwrap();
    let fetched_small = bytes_fetched();
    let big = futures.pop().unwrap().result().unwrap();
    let conn = connection_bytes() - start;
    let fetched_big = bytes_fetched();
    println!(
        "client: conn_done={done} conn_end={conn} fetched_done={fetched_done} fetched_small={fetched_small} fetched_big={fetched_big} summary={small} big_ok={}",
        big == text(BIG, 7)
    );
}

/// Its reader on worker B, kept there too.
#[lovage_macros::task(crate = lovage_core, graph = lovage_graph, queue = "stays-use")]
fn shout(s: String) -> String {
    s.to_ascii_uppercase()
}

/// Files in worker A's data directory (it spills everything: its memory limit is 0).
fn files_in(dir: &Path) -> usize {
    walk(dir)
}

fn walk(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| {
                    let p = e.path();
                    if p.is_dir() {
                        walk(&p)
                    } else {
                        1
                    }
                })
                .sum()
        })
        .unwrap_or(0)
}

/// Polls `f` until it is true, for at most ten seconds.
fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "not within 10 s: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The freeing client: `a` (made and spilled on A) feeds `b` (kept in B's memory), which
/// feeds `out`; the caller asks for `b` and `out`. Once the graph is done, `a` is freed (its
/// only reader finished) and A's directory is empty again; `b` stays while the caller's
/// future holds it, and goes once the caller took it: both stores back to their baseline.
fn free_main(url: &str, dir_a: &Path) {
    const N: usize = 1 << 20;
    let app = App::with_backend(connect(url).unwrap());
    let client = app.client().unwrap();
    assert_eq!(files_in(dir_a), 0, "A's baseline: nothing kept");
    let g = Graph::new();
    let a = make_text::delayed(&g, N, 3);
    let b = shout::delayed(&g, a);
    let out = digest::delayed(&g, b);
    let sent = g.submit(&client, vec![b, out]).unwrap();
    let mut futures = sent.futures;
    let deadline = Instant::now() + LONG;
    while !futures.iter().all(|f| f.done()) {
        assert!(Instant::now() < deadline, "the graph did not finish");
        std::thread::sleep(Duration::from_millis(20));
    }
    let rec = app
        .backend()
        .results()
        .get(futures[0].id())
        .unwrap()
        .unwrap();
    let on_b = rec.result_ref().expect("b is kept").unwrap();
    assert!(on_b.worker.starts_with("stays-b@"), "{on_b:?}");
    let stats = |what: &str| on_b.store_stats().unwrap()[what].as_u64().unwrap();
    // `a`'s reference, from its record (the stored graph names its id).
    let stored = app
        .backend()
        .results()
        .get_blob(sent.graph)
        .unwrap()
        .unwrap();
    let stored = lovage_flow::graph::StoredGraph::decode(&stored).unwrap();
    let a_id = stored
        .nodes
        .iter()
        .find(|n| n.key.contains("make_text"))
        .unwrap()
        .id;
    let rec = app.backend().results().get(a_id).unwrap().unwrap();
    let on_a = rec.result_ref().expect("a is kept").unwrap();
    assert!(
        on_a.path.is_some(),
        "a was spilled to A's directory: {on_a:?}"
    );
    assert_eq!(on_a.readers, 1, "shout reads it, the caller does not");
    eventually("a is freed on A once shout read it", || {
        on_a.store_stats().unwrap()["values"] == 0
    });
    assert_eq!(files_in(dir_a), 0, "a's file is gone");
    assert_eq!(stats("values"), 1, "b is held by the caller's future");
    assert_eq!(stats("memory_bytes"), N as u64 + 2);
    let out = futures.pop().unwrap().result().unwrap();
    let b = futures.pop().unwrap().result().unwrap();
    assert_eq!(out, summary(&b));
    assert_eq!(b, text(N, 3).to_ascii_uppercase());
    eventually("b is freed on B once the caller took it", || {
        stats("values") == 0
    });
    // What is kept now (the stats also count what went through since the worker started).
    let now = on_b.store_stats().unwrap();
    let kept: Vec<_> = ["values", "memory_bytes", "files", "file_bytes"]
        .map(|k| now[k].as_u64())
        .into();
    assert_eq!(kept, [Some(0); 4], "{now}");
    println!("client: freed");
}

fn freed(url: &str) {
    let dir = tempfile::tempdir().unwrap();
    let (dir_a, dir_b) = (dir.path().join("a"), dir.path().join("b"));
    std::fs::create_dir_all(&dir_a).unwrap();
    let _a = start(
        &format!("worker|{url}|stays-make|stays-a|{}|0", dir_a.display()),
        Stdio::null(),
    );
    let _b = start(
        &format!("worker|{url}|stays-use|stays-b|{}|{GIB}", dir_b.display()),
        Stdio::null(),
    );
    let mut client = start(&format!("free|{url}|{}", dir_a.display()), Stdio::piped());
    let out = client.output();
    assert!(out.contains("client: freed"), "{out}");
}

/// Lineage: `a` is made and kept (in memory) on worker A; A is killed with -9 before any
/// worker reads it; worker B, started only then, runs `a`'s reader: the fetch fails, B makes
/// `a` again from the task its reference records, and the reader's result is right.
fn remade(url: &str) {
    const N: usize = 1 << 20;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let app = App::with_backend(connect(url).unwrap());
    let client = app.client().unwrap();
    let mut a_worker = start(
        &format!("worker|{url}|stays-make|stays-a|{d}|{GIB}"),
        Stdio::null(),
    );
    let g = Graph::new();
    let a = make_text::delayed(&g, N, 11);
    let out = digest::delayed(&g, a);
    let sent = g.submit(&client, vec![out]).unwrap();
    let stored = app
        .backend()
        .results()
        .get_blob(sent.graph)
        .unwrap()
        .unwrap();
    let stored = lovage_flow::graph::StoredGraph::decode(&stored).unwrap();
    let a_id = stored
        .nodes
        .iter()
        .find(|n| n.key.contains("make_text"))
        .unwrap()
        .id;
    let rec = app.backend().results().wait(a_id, LONG).unwrap().unwrap();
    let on_a = rec.result_ref().expect("a is kept").unwrap();
    assert!(
        on_a.worker.starts_with("stays-a@") && on_a.path.is_none(),
        "{on_a:?}"
    );
    // Kill A only once it has finished with `a` (its reader enqueued, its lease completed): a
    // kill between the store and the continue step would strand `a` on a queue nobody serves.
    wait_until_handed_on(&app, "stays-use", "stays-make", LONG);
    a_worker.kill9();
    assert!(on_a.fetch().is_err(), "a went with its worker");
    let started = Instant::now();
    let _b = start(
        &format!("worker|{url}|stays-use|stays-b|{d}|{GIB}"),
        Stdio::null(),
    );
    let got = sent
        .futures
        .into_iter()
        .next()
        .unwrap()
        .result_timeout(Duration::from_secs(60))
        .unwrap();
    assert_eq!(
        got,
        summary(&text(N, 11)),
        "the reader's result, from a remade a"
    );
    assert!(started.elapsed() < Duration::from_secs(60));
}

/// `scatter`: a 1 MiB value put in once lands with worker A (the scatter task on A's queue);
/// two calls on worker B take its reference as their argument (a few hundred bytes each) and
/// read the value from A.
fn scattered(url: &str) {
    const N: usize = 1 << 20;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let _a = start(
        &format!("worker|{url}|stays-make|stays-a|{d}|{GIB}"),
        Stdio::null(),
    );
    let _b = start(
        &format!("worker|{url}|stays-use|stays-b|{d}|{GIB}"),
        Stdio::null(),
    );
    let app = App::with_backend(connect(url).unwrap());
    let client = app.client().unwrap();
    let value = text(N, 13);
    let s = client.scatter(&value, Some("stays-make")).unwrap();
    let arg = s.arg(LONG).unwrap();
    let r = lovage_broker::ResultRef::from_value(&arg).expect("kept by a worker");
    assert!(r.worker.starts_with("stays-a@"), "{r:?}");
    assert_eq!(
        r.size,
        N as u64 + 2,
        "the JSON string, as the caller encoded it"
    );
    let calls: Vec<_> = (0..2)
        .map(|_| {
            let sig = lovage_core::Signature::new(digest::NAME, &(&arg,), lovage_core::Codec::Json)
                .unwrap();
            assert!(sig.args.len() < 2048, "the call carries the reference only");
            client.submit_raw_many(vec![sig]).unwrap().remove(0)
        })
        .collect();
    for f in calls {
        let bytes = f.result_timeout(LONG).unwrap();
        let got: String = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(got, summary(&value));
    }
}

/// This binary again in `role` (see `main`), killed with -9 when dropped.
fn start(role: &str, out: Stdio) -> Process {
    Process::this_binary("DATA_STAYS_ROLE", role, out)
}

/// A number from `key=value` in the client's line.
fn field(line: &str, key: &str) -> String {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key} in {line:?}"))
        .to_owned()
}

/// What the broker holds or has received, in bytes, to compare before and after.
trait Meter {
    fn read(&self) -> Vec<(&'static str, u64)>;
}

/// The SQLite file and its write-ahead log.
struct SqliteFiles(PathBuf);

impl Meter for SqliteFiles {
    fn read(&self) -> Vec<(&'static str, u64)> {
        let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
        let wal = PathBuf::from(format!("{}-wal", self.0.display()));
        vec![("sqlite file", size(&self.0)), ("sqlite wal", size(&wal))]
    }
}

/// Redis's byte counters (the whole server's: other tests add noise, never 64 MiB).
struct RedisInfo(String);

impl Meter for RedisInfo {
    fn read(&self) -> Vec<(&'static str, u64)> {
        let client = redis::Client::open(self.0.as_str()).unwrap();
        let mut c = client.get_connection().unwrap();
        let info: String = redis::cmd("INFO").arg("all").query(&mut c).unwrap();
        let get = |k: &str| -> u64 {
            info.lines()
                .find_map(|l| l.strip_prefix(&format!("{k}:")))
                .unwrap()
                .trim()
                .parse()
                .unwrap()
        };
        vec![
            ("redis total_net_input_bytes", get("total_net_input_bytes")),
            ("redis used_memory", get("used_memory")),
        ]
    }
}

fn stays_put(url: &str, meter: &dyn Meter) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let _a = start(
        &format!("worker|{url}|stays-make|stays-a|{d}|{GIB}"),
        Stdio::null(),
    );
    let _b = start(
        &format!("worker|{url}|stays-use|stays-b|{d}|{GIB}"),
        Stdio::null(),
    );
    let before = meter.read();
    let mut client = start(&format!("client|{url}"), Stdio::piped());
    let out = client.output();
    let line = out
        .lines()
        .find(|l| l.starts_with("client:"))
        .unwrap_or_else(|| panic!("the client said {out:?}"))
        .to_owned();
    let after = meter.read();
    eprintln!("{line}");
    let want = summary(&text(BIG, 7));
    assert_eq!(field(&line, "summary"), want, "B read A's value");
    assert_eq!(field(&line, "big_ok"), "true");
    let n = |k: &str| field(&line, k).parse::<u64>().unwrap();
    let big = BIG as u64;
    // Only records crossed the client's broker connection, the value never did.
    assert!(n("conn_done") < big / 16, "{line}");
    assert!(n("conn_end") < big / 16, "{line}");
    // The value came to the client from its worker, and only when result() asked for it.
    assert_eq!(n("fetched_done"), 0, "{line}");
    assert_eq!(n("fetched_small"), 0, "{line}");
    assert!(n("fetched_big") > big, "{line}");
    // The meters are the whole server's, and the suite's other Redis tests run meanwhile (up
    // to ~30 MB of their traffic was seen during this test): a value that went through the
    // broker adds its 64 MiB on top, so the bound sits between the two.
    for ((what, b), (_, a)) in before.iter().zip(&after) {
        eprintln!("{what}: {b} → {a}");
        assert!(
            a.saturating_sub(*b) < big * 3 / 4,
            "{what} grew from {b} to {a}: the value went through the broker"
        );
    }
}

fn main() {
    if let Ok(role) = std::env::var("DATA_STAYS_ROLE") {
        let parts: Vec<&str> = role.split('|').collect();
        match parts[..] {
            ["worker", url, queue, name, dir, limit] => worker_main(url, queue, name, dir, limit),
            ["client", url] => client_main(url),
            ["free", url, dir_a] => free_main(url, Path::new(dir_a)),
            _ => panic!("bad DATA_STAYS_ROLE {role:?}"),
        }
        return;
    }
    let args = Arguments::from_args();
    let kinds = ["sqlite", "redis"];
    let trials: Vec<_> = [
        on_brokers(
            &kinds,
            "a_64_mib_intermediate_stays_with_its_worker",
            |f| match f.sqlite_path() {
                Some(file) => stays_put(&f.url, &SqliteFiles(file)),
                None => stays_put(&f.url, &RedisInfo(redis_base())),
            },
        ),
        on_brokers(&kinds, "values_nobody_needs_are_freed", |f| freed(&f.url)),
        on_brokers(&kinds, "a_value_lost_with_its_worker_is_remade", |f| {
            remade(&f.url)
        }),
        on_brokers(&kinds, "a_scattered_value_is_an_input_by_reference", |f| {
            scattered(&f.url)
        }),
    ]
    .into_iter()
    .flatten()
    .collect();
    libtest_mimic::run(&args, trials).exit();
}
