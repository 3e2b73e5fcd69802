//! The data plane with two real worker processes on one broker (SQLite, then Redis): a large
//! result stays with the worker that made it and the result store holds only its reference;
//! a task on the other worker reads it (from the spilled file on this host, or over the first
//! worker's HTTP endpoint when it is held in memory); the client's read fetches it; once its
//! worker is gone, a read fails naming that worker. A worker past its memory limit pauses:
//! one task at a time.
//!
//! The workers are this test binary started again with `DATA_PLANE_WORKER` set (so they know
//! its tasks), hence `harness = false`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr
)] // tests panic to fail and print what they saw

mod common;

use std::process::{Child, Command};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use libtest_mimic::{Arguments, Trial};
use lovage_broker::ops::{broadcast, ControlRequest};
use lovage_broker::{connect, App, ResultRef};
use lovage_core::{TaskError, TaskState};
use lovage_macros::task;
use lovage_worker::{DataConfig, Worker, WorkerConfig};

use common::RedisPrefix;

const LONG: Duration = Duration::from_secs(60);

/// The text `make_text` returns: `n` bytes that depend on `seed`.
fn text(n: usize, seed: u64) -> String {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            char::from(b'a' + (x % 26) as u8)
        })
        .collect()
}

/// A large result (kept by its worker).
#[task(crate = lovage_core)]
fn make_text(n: usize, seed: u64) -> String {
    text(n, seed)
}

/// Reads the value `r` refers to (wherever it is) and returns its text's length and a sum of
/// its bytes.
#[task(crate = lovage_core)]
fn digest(r: ResultRef) -> Result<(u64, u64), TaskError> {
    let bytes = r
        .fetch()
        .map_err(|e| TaskError::new("Fetch", e.to_string()))?;
    let s: String =
        serde_json::from_slice(&bytes).map_err(|e| TaskError::new("Decode", e.to_string()))?;
    Ok((s.len() as u64, s.bytes().map(u64::from).sum::<u64>()))
}

/// Tasks of `overlap` running now in this process.
static RUNNING: AtomicUsize = AtomicUsize::new(0);

/// Runs until another task runs beside it or `ms` pass; answers the most tasks it saw running
/// at once (itself included).
#[task(crate = lovage_core)]
fn overlap(ms: u64) -> usize {
    let mut most = RUNNING.fetch_add(1, Ordering::SeqCst) + 1;
    let deadline = Instant::now() + Duration::from_millis(ms);
    while most < 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
        most = most.max(RUNNING.load(Ordering::SeqCst));
    }
    RUNNING.fetch_sub(1, Ordering::SeqCst);
    most
}

/// The worker side: `DATA_PLANE_WORKER=url|queue|name|memory_limit`.
fn worker_main(spec: &str) {
    let parts: Vec<&str> = spec.split('|').collect();
    let [url, queue, name, limit] = parts[..] else {
        panic!("bad DATA_PLANE_WORKER {spec:?}")
    };
    let config = WorkerConfig {
        queues: vec![queue.to_owned()],
        concurrency: 2,
        name: name.to_owned(),
        data: Some(DataConfig {
            memory_limit: limit.parse().unwrap(),
            ..DataConfig::default()
        }),
        ..WorkerConfig::default()
    };
    let worker = Worker::new(connect(url).unwrap(), config).unwrap();
    lovage_worker::install_signal_handlers(worker.shutdown_handle()).unwrap();
    worker.run().unwrap();
}

/// A worker process, killed (SIGTERM, then waited for) when dropped.
struct WorkerProcess(Child);

impl WorkerProcess {
    fn start(url: &str, queue: &str, name: &str, memory_limit: usize) -> WorkerProcess {
        let exe = std::env::current_exe().unwrap();
        let child = Command::new(exe)
            .env(
                "DATA_PLANE_WORKER",
                format!("{url}|{queue}|{name}|{memory_limit}"),
            )
            .spawn()
            .unwrap();
        WorkerProcess(child)
    }

    fn stop(&mut self) {
        // SAFETY: signalling our own child, which we have not waited for yet.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let _ = self.0.wait();
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            self.stop();
        }
    }
}

/// One scenario on the broker at `url`; `spill` puts the producer's memory limit at 0 so its
/// value goes to a file.
fn scenario(url: &str, spill: bool, sqlite_file: Option<&std::path::Path>) {
    let tag = lovage_core::TaskId::new().to_string();
    let (qa, qb) = (format!("make-{tag}"), format!("use-{tag}"));
    let limit = if spill { 0 } else { 1 << 30 };
    let mut a = WorkerProcess::start(url, &qa, "dp-make", limit);
    let _b = WorkerProcess::start(url, &qb, "dp-use", 1 << 30);
    let app = App::with_backend(connect(url).unwrap());
    const N: usize = 8 << 20;
    let made = app.send(make_text::s(N, 7).queue(qa.as_str())).unwrap();

    // The store holds the reference, not the 8 MiB.
    let rec = app
        .backend()
        .results()
        .wait(made.id(), LONG)
        .unwrap()
        .expect("a record");
    assert_eq!(rec.state, TaskState::Success, "{rec:?}");
    let stored = rec.value.as_ref().unwrap().len();
    assert!(stored < 1024, "{stored} bytes stored: the value itself");
    let r = rec.result_ref().expect("a reference").unwrap();
    assert!(r.worker.starts_with("dp-make@"), "{}", r.worker);
    assert_eq!(r.size, N as u64 + 2, "the JSON string's length");
    assert_eq!(r.path.is_some(), spill, "{r:?}");
    if let Some(f) = sqlite_file {
        let size = std::fs::metadata(f).unwrap().len();
        assert!(size < (N as u64) / 4, "the SQLite file is {size} bytes");
    }

    // The other worker reads it straight from the first (file or HTTP).
    let used = app.send(digest::s(r.clone()).queue(qb.as_str())).unwrap();
    let want = text(N, 7);
    assert_eq!(
        used.get(LONG).unwrap(),
        (N as u64, want.bytes().map(u64::from).sum::<u64>())
    );
    // A range, as a reader of part of a chunk would ask.
    assert_eq!(r.fetch_range(1, 5).unwrap(), want.as_bytes()[..5].to_vec());

    // The client's read fetches the value.
    assert_eq!(made.get(LONG).unwrap(), want);

    // Gone with its worker: the read fails and says whose value it was.
    a.stop();
    let mut gone = r.clone();
    gone.path = None; // the directory went with the worker; ask the endpoint
    let e = made.get(LONG).unwrap_err();
    assert!(e.message.contains("dp-make@"), "{e}");
    assert!(gone.fetch().is_err());
}

/// The `stats` of the worker `paused_for_memory` started as `dp-pause-{paused}`.
fn stats_of(app: &App, paused: bool) -> serde_json::Value {
    let stats = broadcast(
        app.backend(),
        &[],
        &ControlRequest::new("stats", serde_json::json!({}), "data_plane test"),
        Duration::from_secs(10),
        false,
    )
    .unwrap();
    let (_, reply) = stats
        .replies
        .iter()
        .find(|(w, _)| w.starts_with(&format!("dp-pause-{paused}@")))
        .expect("the worker's stats");
    reply["ok"].clone()
}

/// A worker whose resident memory is past its `--memory-limit` pauses (as Dask's does at 80%):
/// with two slots it runs one task at a time, and its `stats` say so; the same worker with
/// room runs two at once.
fn paused_for_memory(url: &str) {
    let tag = lovage_core::TaskId::new().to_string();
    let app = App::with_backend(connect(url).unwrap());
    for (limit, paused) in [(1usize << 20, true), (1 << 34, false)] {
        let queue = format!("pause-{paused}-{tag}");
        let _w = WorkerProcess::start(url, &queue, &format!("dp-pause-{paused}"), limit);
        // Alone, each runs 300 ms; beside another, it ends as soon as it sees it (within 10 s).
        let ms = if paused { 300 } else { 10_000 };
        let sent: Vec<_> = (0..4)
            .map(|_| app.send(overlap::s(ms).queue(queue.as_str())).unwrap())
            .collect();
        if paused {
            // While the others wait, the paused worker holds two at most (one runs, one
            // waits): the rest stay in the broker for other workers.
            sent[0].get(LONG).unwrap();
            let in_hand = stats_of(&app, paused)["running"].as_u64().unwrap();
            assert!(in_hand <= 2, "paused, it holds {in_hand} tasks");
        }
        let most: Vec<usize> = sent.iter().map(|r| r.get(LONG).unwrap()).collect();
        let ok = &stats_of(&app, paused);
        if paused {
            assert_eq!(most, [1; 4], "paused: two tasks ran at once");
            assert_eq!(ok["paused_for_memory"], true, "{ok}");
            assert!(ok["memory_pauses"].as_u64().unwrap() >= 1, "{ok}");
        } else {
            assert!(
                most.contains(&2),
                "with room, no two tasks ran at once: {most:?}"
            );
            assert_eq!(ok["memory_pauses"], 0, "{ok}");
        }
    }
}

fn main() {
    if let Ok(spec) = std::env::var("DATA_PLANE_WORKER") {
        worker_main(&spec);
        return;
    }
    let args = Arguments::from_args();
    let mut trials = Vec::new();
    for spill in [false, true] {
        let how = if spill {
            "spilled_file"
        } else {
            "memory_over_http"
        };
        trials.push(Trial::test(format!("sqlite_{how}"), move || {
            let dir = tempfile::tempdir().unwrap();
            let file = dir.path().join("dp.db");
            scenario(&format!("sqlite://{}", file.display()), spill, Some(&file));
            Ok(())
        }));
        trials.push(Trial::test(format!("redis_{how}"), move || {
            let prefix = RedisPrefix::new();
            scenario(&prefix.url(), spill, None);
            Ok(())
        }));
    }
    trials.push(Trial::test("sqlite_paused_for_memory", || {
        let dir = tempfile::tempdir().unwrap();
        paused_for_memory(&format!("sqlite://{}", dir.path().join("dp.db").display()));
        Ok(())
    }));
    trials.push(Trial::test("redis_paused_for_memory", || {
        let prefix = RedisPrefix::new();
        paused_for_memory(&prefix.url());
        Ok(())
    }));
    libtest_mimic::run(&args, trials).exit();
}
