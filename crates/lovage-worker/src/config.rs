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

/// The autoscaler's bounds: the worker grows its pool toward `max` while tasks in hand wait
/// for a slot, and shrinks it toward `min` once slots have been idle for `idle`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Autoscale {
    /// Most slots.
    pub max: usize,
    /// Fewest slots (at least 1).
    pub min: usize,
    /// How long some slot must stay idle before the pool shrinks (Celery's keepalive, 30 s by
    /// default).
    pub idle: std::time::Duration,
}

impl Autoscale {
    /// Bounds checked: `1 <= min <= max`.
    pub fn new(max: usize, min: usize, idle: Duration) -> Result<Autoscale, String> {
        if min == 0 {
            return Err("autoscale: min must be at least 1 (a worker keeps one slot)".into());
        }
        if max < min {
            return Err(format!(
                "autoscale: max ({max}) is below min ({min}); give MAX,MIN as in Celery"
            ));
        }
        Ok(Autoscale { max, min, idle })
    }

    /// `"MAX,MIN"` as in Celery's `--autoscale 10,3` (a single number is `MAX,1`), with the
    /// default idle time.
    pub fn parse(text: &str) -> Result<Autoscale, String> {
        let count = |w: &str| {
            w.trim()
                .parse::<usize>()
                .map_err(|_| format!("autoscale {text:?}: {w:?} is not a count (give MAX,MIN)"))
        };
        let (max, min) = match text.split_once(',') {
            Some((max, min)) => (count(max)?, count(min)?),
            None => (count(text)?, 1),
        };
        Autoscale::new(max, min, crate::scale::DEFAULT_AUTOSCALE_IDLE)
    }
}

/// How a worker runs.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Queues to consume, in no particular order (priority decides within them).
    pub queues: Vec<String>,
    /// Tasks running at once (pool size) when the worker starts; `pool_grow` and
    /// `pool_shrink` commands change it while it runs. Ignored with `autoscale`, which starts
    /// at its min.
    pub concurrency: usize,
    /// Grow and shrink the pool with the backlog, within these bounds (off by default). The
    /// pool is built at max and parked down to min, so growing starts no thread.
    pub autoscale: Option<Autoscale>,
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
    /// Publishes `task-sent` for the workflow steps this worker sends as workflows continue
    /// (and for what tasks send through `lovage::ctx()`), one event write per finished batch:
    /// the worker's side of [`App::sent_events`](lovage_broker::App::sent_events) (Celery's
    /// `task_send_sent_event`). Off by default, apart from `events`.
    pub sent_events: bool,
    /// The data plane: results of at least [`DataConfig::threshold`](crate::DataConfig::threshold)
    /// bytes stay with this worker and the result store gets a reference
    /// ([`lovage_broker::ResultRef`]). Off (`None`) by default: a kept value goes when its
    /// worker does, and recomputing a lost one from its task is not built yet.
    pub data: Option<crate::DataConfig>,
    /// Benchmark mode (HyperQueue's "zero worker"): every task is finished without running
    /// its body — a fixed small result (the integer 0) is stored and what follows it (a
    /// graph's dependents, a workflow's next step, a scope's count) is released as for a real
    /// result — so a run measures the scheduling and broker cost alone. Off by default; only
    /// `lovage bench graph --zero-worker` turns it on. Never use it for real work.
    pub zero_worker: bool,
    /// Abstract resources this worker has, name → units (`--resources gpu=2`, or fractional
    /// with at most 3 decimals, `gpu=1.5`; Dask's
    /// `dask worker --resources "GPU=2"`). Tasks sent with
    /// [`resource`](lovage_core::TypedSignature::resource) run only on workers that have
    /// enough units of each, at most as many at once as the units allow (beside tasks that
    /// need none, up to the worker's slots). At most
    /// [`MAX_WORKER_RESOURCES`](lovage_core::options::MAX_WORKER_RESOURCES) names. Empty by
    /// default: such a worker never takes a task that needs a resource.
    pub resources: lovage_core::Resources,
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
            autoscale: None,
            events: false,
            sent_events: false,
            data: None,
            zero_worker: false,
            resources: Default::default(),
        }
    }
}

impl WorkerConfig {
    /// The autoscaler's idle time (its default when the autoscaler is off, for an
    /// `autoscale` command that turns it on).
    pub(crate) fn autoscale_idle(&self) -> Duration {
        self.autoscale
            .map_or(crate::scale::DEFAULT_AUTOSCALE_IDLE, |a| a.idle)
    }

    /// Slots when the worker starts, and the most it is built with.
    pub(crate) fn initial_and_built_slots(&self) -> (usize, usize) {
        match self.autoscale {
            Some(a) => (a.min, a.max),
            None => (self.concurrency, self.concurrency),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn autoscale_bounds_parse_like_celery_and_bad_ones_say_why() {
        let a = Autoscale::parse("10,3").unwrap();
        assert_eq!((a.max, a.min), (10, 3));
        assert_eq!(Autoscale::parse(" 4 ").map(|a| (a.max, a.min)), Ok((4, 1)));
        assert!(Autoscale::parse("3,10").unwrap_err().contains("below min"));
        assert!(Autoscale::parse("3,0").unwrap_err().contains("at least 1"));
        assert!(Autoscale::parse("x,1").unwrap_err().contains("not a count"));
    }

    #[test]
    fn pool_names_parse_and_a_wrong_one_says_what_is_expected() {
        assert_eq!("prefork".parse::<PoolKind>(), Ok(PoolKind::Processes));
        assert_eq!("threads".parse::<PoolKind>(), Ok(PoolKind::Threads));
        let e = "gevent".parse::<PoolKind>().unwrap_err();
        assert_eq!(e, UnknownPool("gevent".into()));
        assert!(e.to_string().contains("expected threads or processes"));
    }
}
