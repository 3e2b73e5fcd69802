//! Arrays on a broker's workers (issue 17, item 4): two real worker processes on SQLite and
//! on Redis reduce the same random array, under two chunkings, to the same bits as `Inline`;
//! NaN and infinities come back as themselves; a closure step is refused before anything is
//! sent, naming the step.
//!
//! The workers are this test binary started again with `COLL_BROKER_ROLE` set (so they know
//! its tasks), hence `harness = false`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests panic to fail

use std::process::{Child, Command};

use libtest_mimic::{Arguments, Trial};
use lovage_broker::{connect, App};
use lovage_collections::array::{Array, Func, Op};
use lovage_collections::bag::Bag;
use lovage_collections::{compute, Error};
use lovage_graph::{Broker, Graph, Inline, Scheduler};
use lovage_worker::{Worker, WorkerConfig};

/// Sum, mean, var, std, min, max (bits) and argmax.
fn stats(g: &Graph, x: &Array<'_>, sched: Scheduler<'_>) -> ([u64; 6], usize) {
    let (s, m, v, sd, lo, hi) = compute(
        g,
        sched,
        (x.sum(), x.mean(), x.var(), x.std(), x.min(), x.max()),
    )
    .unwrap();
    let at = compute(g, sched, x.argmax()).unwrap();
    ([s, m, v, sd, lo, hi].map(f64::to_bits), at)
}

/// A worker process: `worker|url|name`, two slots, the built-in collection tasks registered.
fn worker_main(url: &str, name: &str) {
    lovage_collections::register().unwrap();
    let config = WorkerConfig {
        concurrency: 2,
        name: name.to_owned(),
        ..WorkerConfig::default()
    };
    let worker = Worker::new(connect(url).unwrap(), config).unwrap();
    lovage_worker::install_signal_handlers(worker.shutdown_handle()).unwrap();
    worker.run().unwrap();
}

/// A child process of this binary, killed with -9 when dropped (a test that fails must not
/// leave it running).
struct Process(Child);

impl Process {
    fn worker(url: &str, name: &str) -> Process {
        let exe = std::env::current_exe().unwrap();
        let child = Command::new(exe)
            .env("COLL_BROKER_ROLE", format!("worker|{url}|{name}"))
            .env("LOVAGE_LOG", "warn")
            .spawn()
            .unwrap();
        Process(child)
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The test on one broker: two workers, the same arrays as `Inline`.
fn same_on_broker(url: &str) {
    let _a = Process::worker(url, "coll-a");
    let _b = Process::worker(url, "coll-b");
    let app = App::with_backend(connect(url).unwrap());
    let client = app.client().unwrap();
    for chunks in [[200usize, 16], [333, 37]] {
        let g = Graph::new();
        let x = Array::random(&g, &[1000, 37], &chunks, 7).unwrap();
        assert_eq!(
            stats(&g, &x, Broker(&client)),
            stats(&g, &x, Inline),
            "chunks {chunks:?}"
        );
        let y = x
            .scalar(Op::Sub, 0.5)
            .apply(Func::Abs)
            .mul(&x)
            .unwrap()
            .slice(&[5..905, 1..37])
            .unwrap();
        assert_eq!(
            stats(&g, &y, Broker(&client)),
            stats(&g, &y, Inline),
            "derived, chunks {chunks:?}"
        );
    }
    // NaN and infinities travel as themselves (JSON has neither).
    let g = Graph::new();
    let nan = Array::full(&g, &[10], &[3], f64::NAN).unwrap();
    let inf = Array::full(&g, &[10], &[3], f64::INFINITY).unwrap();
    let (m, hi, lo) = compute(&g, Broker(&client), (nan.mean(), inf.max(), inf.min())).unwrap();
    assert!(m.is_nan());
    assert_eq!((hi, lo), (f64::INFINITY, f64::INFINITY));
    // A task error comes back named, as locally.
    let empty = Array::zeros(&g, &[0], &[4]).unwrap();
    let err = compute(&g, Broker(&client), empty.argmax()).unwrap_err();
    assert!(
        err.to_string().contains("argmax of an empty array"),
        "{err}"
    );
    // Closure steps are refused before anything is sent, naming the step.
    let b = Bag::from_iter(&g, 0..10i64, 2);
    let err = compute(&g, Broker(&client), b.count()).unwrap_err();
    assert!(
        matches!(&err, Error::Unsupported { scheduler: "Broker", op } if op.starts_with("bag")),
        "{err:?}"
    );
    let err = compute(&g, Broker(&client), inf.map(|v| -v).max()).unwrap_err();
    assert_eq!(
        err,
        Error::Unsupported {
            scheduler: "Broker",
            op: "array-map".into()
        }
    );
}

fn redis_base() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/0".into())
}

/// Deletes a Redis prefix's keys when dropped.
struct RedisPrefix(String);

impl Drop for RedisPrefix {
    fn drop(&mut self) {
        let Ok(client) = redis::Client::open(redis_base()) else {
            return;
        };
        let Ok(mut c) = client.get_connection() else {
            return;
        };
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{}:*", self.0))
            .query(&mut c)
            .unwrap_or_default();
        if !keys.is_empty() {
            let _: redis::RedisResult<()> = redis::cmd("DEL").arg(keys).query(&mut c);
        }
    }
}

fn main() {
    if let Ok(role) = std::env::var("COLL_BROKER_ROLE") {
        match role.split('|').collect::<Vec<_>>()[..] {
            ["worker", url, name] => worker_main(url, name),
            _ => panic!("bad COLL_BROKER_ROLE {role:?}"),
        }
        return;
    }
    let args = Arguments::from_args();
    let trials = vec![
        Trial::test("sqlite_array_reductions_match_inline", || {
            let dir = tempfile::tempdir().unwrap();
            let file = dir.path().join("arrays.db");
            same_on_broker(&format!("sqlite://{}", file.display()));
            Ok(())
        }),
        Trial::test("redis_array_reductions_match_inline", || {
            let prefix = RedisPrefix(format!("lovage-test-{}", lovage_core::TaskId::new()));
            same_on_broker(&format!("{}?prefix={}", redis_base(), prefix.0));
            Ok(())
        }),
    ];
    libtest_mimic::run(&args, trials).exit();
}
