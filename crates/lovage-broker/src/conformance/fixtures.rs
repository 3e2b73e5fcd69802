//! Factories for the backends this crate ships: each call opens a fresh, isolated backend.

use lovage_core::TaskId;

use super::Fixture;
use crate::connect;

/// A memory backend under a name of its own.
pub fn memory() -> Fixture {
    let url = format!("memory://conformance-{}", TaskId::new());
    Fixture::new(connect(&url).unwrap()).reopens_at(url)
}

/// A SQLite backend in a new temporary directory, removed afterwards.
#[cfg(feature = "sqlite")]
pub fn sqlite() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("broker.db").display());
    Fixture::new(connect(&url).unwrap())
        .reopens_at(url)
        .keep(dir)
}

/// The Redis server tests use: `REDIS_URL`, default `redis://127.0.0.1:6379/0`.
#[cfg(feature = "redis")]
pub fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/0".into())
}

/// A Redis backend under a key prefix of its own (on [`redis_url`]), whose keys are deleted
/// afterwards. Its results expire by themselves.
#[cfg(feature = "redis")]
pub fn redis() -> Fixture {
    let base = redis_url();
    let prefix = format!("lovage-test-{}", TaskId::new());
    let url = format!("{base}?task_index=1&prefix={prefix}");
    let backend = connect(&url).unwrap_or_else(|e| panic!("Redis at {base}: {e} (set REDIS_URL)"));
    let cleanup = move || {
        let Ok(mut c) = redis::Client::open(base.as_str()).and_then(|c| c.get_connection()) else {
            return;
        };
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{prefix}:*"))
            .query(&mut c)
            .unwrap_or_default();
        if !keys.is_empty() {
            let _: redis::RedisResult<()> = redis::cmd("DEL").arg(keys).query(&mut c);
        }
    };
    Fixture::new(backend)
        .reopens_at(url)
        .on_drop(cleanup)
        .expires_by_itself()
}
