//! What lovage's integration tests share, so each test file holds only its scenarios:
//!
//! - [`Fresh`]: a backend of a test's own — memory under a unique name, SQLite in a temporary
//!   directory, or Redis under a key prefix of its own ([`RedisPrefix`], its keys deleted when
//!   dropped) — so tests run in parallel on the machine's one Redis.
//! - [`Workers`]: in-process workers on one backend, stopped gracefully and joined when
//!   dropped (also when the test panics), so a failing test leaves no thread behind.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a helper that cannot set up fails its test

use std::path::PathBuf;

use lovage_broker::{connect, App, Backend};
use lovage_core::TaskId;
use lovage_worker::{Shutdown, Worker, WorkerConfig, WorkerReport};

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
        Fresh {
            backend: connect(&format!("memory://test-{}", TaskId::new())).unwrap(),
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
            dir: Some(dir),
            redis: None,
        }
    }

    /// A Redis backend under a key prefix of its own.
    pub fn redis() -> Fresh {
        let prefix = RedisPrefix::new();
        Fresh {
            backend: connect(&prefix.url()).unwrap(),
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
