//! Helpers shared by the worker's integration tests: a backend of a test's own (memory,
//! SQLite in a temporary directory, or Redis under a key prefix of its own).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr,
    clippy::undocumented_unsafe_blocks
)] // tests panic to fail and print what they saw

// Each test file uses some of these helpers.
#![allow(dead_code)]

use std::time::Duration;

use lovage_broker::{connect, App, Backend};
use lovage_core::TaskId;
use lovage_worker::{PoolKind, Worker, WorkerConfig};

/// A backend of a scenario's own, with what must live as long as it: the SQLite file's
/// directory, or the Redis key prefix (deleted when dropped).
pub struct Fresh {
    pub backend: Backend,
    _dir: Option<tempfile::TempDir>,
    _redis: Option<RedisPrefix>,
}

impl Fresh {
    pub fn app(&self) -> App {
        App::with_backend(self.backend.clone())
    }

    /// Damages the stored message of task `id` behind the broker's back, as the brokers'
    /// poison-message tests do: SQLite's options column made no JSON, Redis's value no task
    /// value. Memory holds no message to damage.
    pub fn damage(&self, id: TaskId) {
        if let Some(dir) = &self._dir {
            let raw = rusqlite::Connection::open(dir.path().join("w.db")).unwrap();
            let n = raw
                .execute(
                    "UPDATE tasks SET options = '{not json' WHERE id = ?1",
                    [id.to_string()],
                )
                .unwrap();
            assert_eq!(n, 1, "task {id} is stored");
        } else if let Some(r) = &self._redis {
            let mut c = redis::Client::open(r.base.as_str())
                .unwrap()
                .get_connection()
                .unwrap();
            let _: () = redis::cmd("HSET")
                .arg(format!("{}:tasks", r.prefix))
                .arg(id.to_string())
                .arg("garbage")
                .query(&mut c)
                .unwrap();
        } else {
            panic!("memory holds no message to damage");
        }
    }
}

/// A worker running in this process until dropped.
pub struct Running {
    shutdown: lovage_worker::Shutdown,
    thread: Option<std::thread::JoinHandle<lovage_worker::WorkerReport>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.shutdown.graceful();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A 2-thread worker on the default queue, running in this process until dropped.
pub fn worker(backend: &Backend) -> Running {
    worker_on(backend, &[lovage_broker::DEFAULT_QUEUE])
}

/// [`worker`] consuming `queues`.
pub fn worker_on(backend: &Backend, queues: &[&str]) -> Running {
    let config = WorkerConfig {
        concurrency: 2,
        prefetch: 64,
        pool: PoolKind::Threads,
        poll: Duration::from_millis(50),
        lease: Duration::from_secs(10),
        queues: queues.iter().map(|q| q.to_string()).collect(),
        ..Default::default()
    };
    let worker = Worker::new(backend.clone(), config).unwrap();
    let shutdown = worker.shutdown_handle();
    let thread = std::thread::spawn(move || worker.run().expect("start the worker threads"));
    Running {
        shutdown,
        thread: Some(thread),
    }
}

pub fn memory_backend() -> Fresh {
    Fresh {
        backend: connect(&format!("memory://worker-{}", TaskId::new())).unwrap(),
        _dir: None,
        _redis: None,
    }
}

pub fn sqlite_backend() -> Fresh {
    let dir = tempfile::tempdir().unwrap();
    let backend = connect(&format!("sqlite://{}", dir.path().join("w.db").display())).unwrap();
    Fresh {
        backend,
        _dir: Some(dir),
        _redis: None,
    }
}

pub fn redis_backend() -> Fresh {
    let prefix = RedisPrefix::new();
    Fresh {
        backend: connect(&prefix.url()).unwrap(),
        _dir: None,
        _redis: Some(prefix),
    }
}

/// A key prefix of this test's own on the machine's Redis (`REDIS_URL`); its keys are deleted
/// when it is dropped, whether the test passed or not.
pub struct RedisPrefix {
    base: String,
    prefix: String,
}

impl RedisPrefix {
    pub fn new() -> RedisPrefix {
        RedisPrefix {
            base: std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/0".into()),
            prefix: format!("lovage-test-{}", TaskId::new()),
        }
    }

    /// The broker URL for this prefix.
    pub fn url(&self) -> String {
        format!("{}?prefix={}", self.base, self.prefix)
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
