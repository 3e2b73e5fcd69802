//! What lovage's integration tests share, so each test file holds only its scenarios:
//!
//! - [`Fresh`]: a backend of a test's own — memory under a unique name, SQLite in a temporary
//!   directory, or Redis under a key prefix of its own ([`RedisPrefix`], its keys deleted when
//!   dropped) — so tests run in parallel on the machine's one Redis.
//! - [`Workers`]: in-process workers on one backend, stopped gracefully and joined when
//!   dropped (also when the test panics), so a failing test leaves no thread behind.
//! - [`Process`]: this test binary started again in a role (a worker, a client), killed with
//!   -9 when dropped; and [`on_brokers`], one libtest-mimic trial per broker kind, for the
//!   test binaries that run their workers as processes (`harness = false`);
//!   [`WorkerRole`] / [`serve_worker_role`], such a worker process.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a helper that cannot set up fails its test

use std::io::Read;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use lovage_broker::{connect, App, Backend};
use lovage_core::TaskId;
use lovage_worker::{Shutdown, Worker, WorkerConfig, WorkerReport};

mod worker_role;
pub use worker_role::{serve_worker_role, WorkerRole};

/// The broker kinds every broker test runs on, by the names [`Fresh::new`] takes.
pub const KINDS: [&str; 3] = ["memory", "sqlite", "redis"];

/// The machine's Redis (`REDIS_URL`, else the local default).
pub fn redis_base() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/0".into())
}

/// A backend of a test's own, with what must live as long as it: the SQLite file's
/// directory, or the Redis key prefix (its keys deleted when dropped).
pub struct Fresh {
    /// The broker and result store.
    pub backend: Backend,
    /// Its URL, for another process (a memory backend's is this process's only).
    pub url: String,
    dir: Option<tempfile::TempDir>,
    redis: Option<RedisPrefix>,
}

/// The SQLite file's name in a [`Fresh`] SQLite backend's directory.
const SQLITE_FILE: &str = "lovage.db";

impl Fresh {
    /// A backend of `kind`: `"memory"`, `"sqlite"` or `"redis"` (see [`KINDS`]).
    ///
    /// # Panics
    /// On another kind, or when the backend cannot be reached.
    pub fn new(kind: &str) -> Fresh {
        match kind {
            "memory" => Fresh::memory(),
            "sqlite" => Fresh::sqlite(),
            "redis" => Fresh::redis(),
            other => panic!("no broker kind {other:?}; the kinds are {KINDS:?}"),
        }
    }

    /// A memory backend under a name of its own.
    pub fn memory() -> Fresh {
        let url = format!("memory://test-{}", TaskId::new());
        Fresh {
            backend: connect(&url).unwrap(),
            url,
            dir: None,
            redis: None,
        }
    }

    /// An SQLite backend in a temporary directory of its own.
    pub fn sqlite() -> Fresh {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join(SQLITE_FILE).display());
        Fresh {
            backend: connect(&url).unwrap(),
            url,
            dir: Some(dir),
            redis: None,
        }
    }

    /// A Redis backend under a key prefix of its own.
    pub fn redis() -> Fresh {
        let prefix = RedisPrefix::new();
        let url = prefix.url();
        Fresh {
            backend: connect(&url).unwrap(),
            url,
            dir: None,
            redis: Some(prefix),
        }
    }

    /// A client of this backend.
    pub fn app(&self) -> App {
        App::with_backend(self.backend.clone())
    }

    /// The SQLite file, for a test that reaches behind the broker's back (None: not SQLite).
    pub fn sqlite_path(&self) -> Option<PathBuf> {
        self.dir.as_ref().map(|d| d.path().join(SQLITE_FILE))
    }

    /// The Redis key prefix, for a test that reaches behind the broker's back (None: not
    /// Redis).
    pub fn redis_prefix(&self) -> Option<&RedisPrefix> {
        self.redis.as_ref()
    }
}

/// A key prefix of a test's own on the machine's Redis ([`redis_base`]); its keys are deleted
/// when it is dropped, whether the test passed or not.
pub struct RedisPrefix {
    /// The Redis server's URL.
    pub base: String,
    /// The prefix of every key the broker writes.
    pub prefix: String,
}

impl RedisPrefix {
    /// A new prefix, `lovage-test-<id>`.
    pub fn new() -> RedisPrefix {
        RedisPrefix {
            base: redis_base(),
            prefix: format!("lovage-test-{}", TaskId::new()),
        }
    }

    /// The broker URL for this prefix.
    pub fn url(&self) -> String {
        format!("{}?prefix={}", self.base, self.prefix)
    }

    /// A plain connection to the Redis server.
    pub fn connection(&self) -> redis::Connection {
        redis::Client::open(self.base.as_str())
            .unwrap()
            .get_connection()
            .unwrap()
    }
}

impl Default for RedisPrefix {
    fn default() -> Self {
        RedisPrefix::new()
    }
}

impl Drop for RedisPrefix {
    fn drop(&mut self) {
        let Ok(client) = redis::Client::open(self.base.as_str()) else {
            return;
        };
        let Ok(mut c) = client.get_connection() else {
            return;
        };
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{}:*", self.prefix))
            .query(&mut c)
            .unwrap_or_default();
        if !keys.is_empty() {
            let _: redis::RedisResult<()> = redis::cmd("DEL").arg(keys).query(&mut c);
        }
    }
}

/// In-process workers on one backend, each on a thread of its own; stopped gracefully and
/// joined when dropped.
pub struct Workers {
    stops: Vec<Shutdown>,
    threads: Vec<std::thread::JoinHandle<WorkerReport>>,
}

impl Workers {
    /// Starts a worker per config on `backend`.
    ///
    /// # Panics
    /// When a config is refused.
    pub fn start(backend: &Backend, configs: impl IntoIterator<Item = WorkerConfig>) -> Workers {
        let mut w = Workers {
            stops: Vec::new(),
            threads: Vec::new(),
        };
        for config in configs {
            let worker = Worker::new(backend.clone(), config).unwrap();
            w.stops.push(worker.shutdown_handle());
            w.threads
                .push(std::thread::spawn(move || worker.run().expect("worker")));
        }
        w
    }

    /// Stops every worker gracefully and returns their reports, in start order.
    ///
    /// # Panics
    /// When a worker's thread panicked.
    pub fn stop(mut self) -> Vec<WorkerReport> {
        for s in &self.stops {
            s.graceful();
        }
        self.threads
            .drain(..)
            .map(|t| t.join().expect("a worker thread panicked"))
            .collect()
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        for s in &self.stops {
            s.graceful();
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// The name part of the id of the worker that stored task `id`'s record (`gpu` of
/// `gpu@host.pid` or `gpu-3@host.pid`).
///
/// # Panics
/// When the task has no successful record, or the record names no worker.
pub fn ran_on(backend: &Backend, id: TaskId) -> String {
    let rec = backend.results().get(id).unwrap().expect("a record");
    assert_eq!(rec.state, lovage_core::TaskState::Success, "{rec:?}");
    let worker = rec.worker.expect("the worker is recorded");
    let name = worker.split('@').next().unwrap();
    name.split('-').next().unwrap().to_owned()
}

/// One libtest-mimic trial per broker kind in `kinds`, named `{kind}_{name}`, each running
/// `test` on a [`Fresh`] backend of its own (dropped, so cleaned up, when the trial ends).
/// `test` may capture what it needs (one test body registered for several cases).
pub fn on_brokers<F>(kinds: &[&str], name: &str, test: F) -> Vec<libtest_mimic::Trial>
where
    F: Fn(&Fresh) + Clone + Send + 'static,
{
    kinds
        .iter()
        .map(|&kind| {
            let (kind, test) = (kind.to_owned(), test.clone());
            libtest_mimic::Trial::test(format!("{kind}_{name}"), move || {
                test(&Fresh::new(&kind));
                Ok(())
            })
        })
        .collect()
}

/// This test binary started again as a child process in a role its `main` serves (read from
/// the environment variable given), killed with -9 when dropped: a test that fails must not
/// leave it running.
pub struct Process(pub Child);

impl Process {
    /// Starts this binary with `var=role` (and `LOVAGE_LOG=warn`), its stdout to `out`.
    ///
    /// # Panics
    /// When it cannot be started.
    pub fn this_binary(var: &str, role: &str, out: Stdio) -> Process {
        let exe = std::env::current_exe().unwrap();
        let child = Command::new(exe)
            .env(var, role)
            .env("LOVAGE_LOG", "warn")
            .stdout(out)
            .spawn()
            .unwrap();
        Process(child)
    }

    /// Waits for it to end and returns what it printed (started with `Stdio::piped()`).
    ///
    /// # Panics
    /// When it failed, with what it printed.
    pub fn output(&mut self) -> String {
        let mut s = String::new();
        if let Some(mut out) = self.0.stdout.take() {
            out.read_to_string(&mut s).unwrap();
        }
        let status = self.0.wait().unwrap();
        assert!(status.success(), "the child failed ({status}): {s}");
        s
    }
}

impl Process {
    /// Kills it with -9 (SIGKILL, no chance to clean up) and waits for it to end: a worker
    /// lost with the values it keeps.
    ///
    /// # Panics
    /// When it cannot be killed or waited for.
    pub fn kill9(&mut self) {
        self.0.kill().unwrap();
        self.0.wait().unwrap();
    }
}

/// Waits until a worker has handed its work on: at least one task is ready on queue `next`
/// (which it does not serve) and nothing is ready, reserved or scheduled on queue `done`
/// (which it does). A kill -9 before that could strand a value whose continuation was not
/// yet enqueued; after it, what is lost with the worker is only what it keeps.
///
/// # Panics
/// When that does not happen within `timeout`, with the queues' counts.
pub fn wait_until_handed_on(app: &App, next: &str, done: &str, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let stats = app.backend().admin().stats().unwrap();
        let on = |q: &str| stats.iter().find(|s| s.queue == q).cloned();
        let ready = on(next).map_or(0, |s| s.ready);
        let held = on(done).map_or(0, |s| s.ready + s.reserved + s.scheduled);
        if ready >= 1 && held == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the worker never handed on from {done} to {next}: {stats:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `n` lowercase letters that depend only on `seed` (xorshift): test data whose content differs
/// by seed and is the same in every process.
pub fn letters(n: usize, seed: u64) -> String {
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

/// The boxes of a grouped DOT picture (`Graph::to_dot_grouped`, a collection's `to_dot`): (operation, node count) from labels `name ×count`.
pub fn grouped_boxes(dot: &str) -> Vec<(String, usize)> {
    dot.lines()
        .filter_map(|l| {
            let label = l.split_once("[label=\"")?.1.split_once("\", fillcolor")?.0;
            let (name, count) = label.rsplit_once(" ×")?;
            Some((name.to_owned(), count.parse().ok()?))
        })
        .collect()
}
