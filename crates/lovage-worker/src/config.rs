//! How a worker runs: which queues, how many tasks at once, on which pool, with what lease.

use std::time::Duration;

/// Which pool runs the task bodies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolKind {
    /// Threads of this process: cheapest, a panic fails only its task.
    Threads,
    /// Child processes: a crash fails only its task; hard time limits kill the child.
    Processes,
}

impl PoolKind {
    /// The name used on the command line and in a worker's description.
    pub fn name(self) -> &'static str {
        match self {
            PoolKind::Threads => "threads",
            PoolKind::Processes => "processes",
        }
    }
}

/// A pool name that is neither `threads` nor `processes`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown pool {0:?} (expected threads or processes)")]
pub struct UnknownPool(pub String);

impl std::str::FromStr for PoolKind {
    type Err = UnknownPool;
    fn from_str(s: &str) -> Result<Self, UnknownPool> {
        match s {
            "threads" | "thread" => Ok(PoolKind::Threads),
            "processes" | "process" | "prefork" => Ok(PoolKind::Processes),
            other => Err(UnknownPool(other.to_owned())),
        }
    }
}

/// How a worker runs.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Queues to consume, in no particular order (priority decides within them).
    pub queues: Vec<String>,
    /// Tasks running at once (pool size).
    pub concurrency: usize,
    /// Which pool.
    pub pool: PoolKind,
    /// Most tasks reserved beyond those running (the worker holds fewer when tasks are slow).
    pub prefetch: usize,
    /// Lease on reserved tasks; renewed every third of it while they run.
    pub lease: Duration,
    /// Heartbeat interval.
    pub heartbeat: Duration,
    /// How long a reserve waits for work before checking for shutdown.
    pub poll: Duration,
    /// Results are kept this long (None: forever).
    pub result_ttl: Option<Duration>,
    /// Name part of the worker id (`name@host.pid`).
    pub name: String,
    /// Publishes events (task-started, -succeeded, -failed, ..., worker-online, -heartbeat,
    /// -offline) to the broker's event stream: batched with the finisher's store (no round
    /// trip of their own) and the keeper's tick. Off by default, as in Celery (`-E`): in this
    /// session's noisy runs they cost SQLite's end-to-end throughput 0–14%, over the 10%
    /// budget in some (docs/benchmarks.md).
    pub events: bool,
    /// The data plane: results of at least [`DataConfig::threshold`](crate::DataConfig::threshold)
    /// bytes stay with this worker and the result store gets a reference
    /// ([`lovage_broker::ResultRef`]). Off (`None`) by default: a kept value goes when its
    /// worker does, and recomputing a lost one from its task is not built yet.
    pub data: Option<crate::DataConfig>,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        WorkerConfig {
            queues: vec![lovage_broker::DEFAULT_QUEUE.to_owned()],
            concurrency: cpus,
            pool: PoolKind::Threads,
            prefetch: cpus * 64,
            lease: Duration::from_secs(30),
            heartbeat: Duration::from_secs(2),
            poll: Duration::from_millis(500),
            result_ttl: Some(Duration::from_secs(24 * 3600)),
            name: "worker".into(),
            events: false,
            data: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_names_parse_and_a_wrong_one_says_what_is_expected() {
        assert_eq!("prefork".parse::<PoolKind>(), Ok(PoolKind::Processes));
        assert_eq!("threads".parse::<PoolKind>(), Ok(PoolKind::Threads));
        let e = "gevent".parse::<PoolKind>().unwrap_err();
        assert_eq!(e, UnknownPool("gevent".into()));
        assert!(e.to_string().contains("expected threads or processes"));
    }
}
