//! `lovage worker`: consume queues until SIGTERM/SIGINT.

use lovage::{PoolKind, Worker, WorkerConfig};

use super::{BrokerArgs, Exit};

#[derive(Debug, clap::Args)]
pub struct WorkerArgs {
    /// Queues to consume, comma-separated.
    #[arg(long, short = 'Q', default_value = "default", value_delimiter = ',')]
    queues: Vec<String>,
    /// Tasks run at once (threads or child processes); default: the number of CPUs.
    #[arg(long, short = 'c', value_parser = at_least_one)]
    concurrency: Option<usize>,
    /// Where task bodies run: threads (cheapest) or processes (a crash or a hard time limit
    /// kills only that task's child).
    #[arg(long, short = 'P', default_value = "threads")]
    pool: PoolKind,
    /// Grow the pool toward MAX while tasks wait for a slot and shrink it toward MIN when
    /// slots stay idle (as Celery's `--autoscale 10,3`); --concurrency is then ignored.
    #[arg(long, value_name = "MAX,MIN", value_parser = lovage::worker::Autoscale::parse)]
    autoscale: Option<lovage::worker::Autoscale>,
    /// With --autoscale: how long slots stay idle before the pool shrinks.
    #[arg(long, default_value = "30s", value_parser = lovage::parse_duration)]
    autoscale_idle: std::time::Duration,
    /// Tasks reserved ahead of those running; default 64 per slot.
    #[arg(long)]
    prefetch: Option<usize>,
    /// Lease on reserved tasks (renewed while they run); a dead worker's tasks come back after it.
    #[arg(long, default_value = "30s", value_parser = lovage::parse_duration)]
    lease: std::time::Duration,
    /// Name in the worker id (name@host.pid).
    #[arg(long, short = 'n', default_value = "worker")]
    name: String,
    /// Publish events to the broker's event stream (what `lovage server`'s live pages show),
    /// as Celery's `-E`: off by default (they cost a busy SQLite queue up to ~14%).
    #[arg(long, short = 'E', env = "LOVAGE_EVENTS")]
    events: bool,
    /// Publish `task-sent` for the workflow steps this worker sends as workflows continue, and
    /// for what tasks send (as `lovage submit --sent-event`; Celery's task_send_sent_event).
    #[arg(long, env = "LOVAGE_SEND_SENT_EVENT")]
    sent_event: bool,
    /// The data plane: results of at least --data-threshold bytes stay with this worker
    /// (memory, spilled to files past --memory-limit) and the result store gets a reference
    /// that readers fetch from the worker. A kept value goes when the worker does.
    #[arg(long)]
    data_plane: bool,
    /// With --data-plane: results this large or larger stay here (K, M, G suffixes: KiB…).
    #[arg(long, default_value = "64K", value_parser = parse_bytes)]
    data_threshold: usize,
    /// With --data-plane: the worker's memory, as Dask's `--memory-limit`. Kept results hold
    /// up to 40% of it in memory and spill to files past that (or once the process's resident
    /// memory passes 70% of it); the tasks in hand read at most 10% of it in kept inputs (a
    /// task whose inputs do not fit waits in the broker, unless it would run alone).
    #[arg(long, default_value = "1G", value_parser = parse_bytes)]
    memory_limit: usize,
    /// With --data-plane: where spilled results go (default: the temporary directory).
    #[arg(long)]
    data_dir: Option<std::path::PathBuf>,
    /// With --data-plane: where the data endpoint listens (`0.0.0.0:0` to serve other hosts).
    #[arg(long, default_value = "127.0.0.1:0")]
    data_bind: std::net::SocketAddr,
    /// With --data-plane: the `host:port` put in references when the bound address is not
    /// the one others should dial.
    #[arg(long)]
    data_advertise: Option<String>,
    /// With --data-plane: a graph node whose inputs are kept values is queued for the worker
    /// holding most of their bytes; another worker may steal it after this many milliseconds.
    #[arg(long, default_value_t = 200)]
    steal_after_ms: u64,
    /// Abstract resources this worker has, `NAME=UNITS` comma-separated (`gpu=2,mem=16`, or
    /// fractional with at most 3 decimals, `gpu=1.5`; Dask's `--resources "GPU=2"`): tasks
    /// sent needing a resource run only on workers that have enough of it, at most as many at
    /// once as the units allow (two `gpu=0.5` tasks share one unit). At most 4 names.
    #[arg(long, value_name = "NAME=N,...", value_parser = lovage_core::parse_resources)]
    resources: Option<lovage_core::Resources>,
    /// Benchmark mode: finish every task without running it (a fixed result, 0, is stored
    /// and its dependents released), to measure scheduling alone. For `lovage bench graph
    /// --zero-worker`; never for real work.
    #[arg(long, hide = true)]
    zero_worker: bool,
    #[command(flatten)]
    broker: BrokerArgs,
}

/// A byte count: a number with an optional K, M or G suffix (powers of 1024).
pub(super) fn parse_bytes(s: &str) -> Result<usize, String> {
    let t = s
        .trim()
        .trim_end_matches(['B', 'b'])
        .trim_end_matches(['i']);
    let (num, mul) = match t.chars().last() {
        Some('K' | 'k') => (&t[..t.len() - 1], 1usize << 10),
        Some('M' | 'm') => (&t[..t.len() - 1], 1 << 20),
        Some('G' | 'g') => (&t[..t.len() - 1], 1 << 30),
        _ => (t, 1),
    };
    num.trim()
        .parse::<usize>()
        .ok()
        .and_then(|n| n.checked_mul(mul))
        .ok_or_else(|| format!("{s:?} is not a byte count (a number, optionally with K, M or G)"))
}

/// A count of slots: 1 or more (a worker of 0 slots would never run a task).
fn at_least_one(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

pub fn run(a: WorkerArgs) -> Result<(), Exit> {
    if a.data_plane {
        // Its memory is bounded (--memory-limit): freed memory must leave the process.
        lovage::worker::bound_allocator();
    }
    let app = a.broker.app()?;
    let mut config = WorkerConfig {
        queues: a.queues,
        pool: a.pool,
        lease: a.lease,
        name: a.name,
        events: a.events,
        sent_events: a.sent_event,
        zero_worker: a.zero_worker,
        resources: a.resources.unwrap_or_default(),
        ..Default::default()
    };
    if let Some(c) = a.concurrency {
        config.concurrency = c;
    }
    if let Some(mut scale) = a.autoscale {
        scale.idle = a.autoscale_idle;
        config.autoscale = Some(scale);
    }
    let most_slots = a.autoscale.map_or(config.concurrency, |s| s.max);
    config.prefetch = a.prefetch.unwrap_or(most_slots * 64);
    if a.data_plane {
        config.data = Some(lovage::worker::DataConfig {
            threshold: a.data_threshold,
            memory_limit: a.memory_limit,
            dir: a.data_dir,
            bind: a.data_bind,
            advertise: a.data_advertise,
            steal_after: std::time::Duration::from_millis(a.steal_after_ms),
        });
    }
    // The built-in collection tasks (`lovage.array.*`, `lovage.bag.*`): arrays and bags run
    // on these workers.
    lovage::collections::register()
        .map_err(|e| Exit::failed(format!("the built-in collection tasks: {e}")))?;
    // The built-in frame tasks (`lovage.frame.*`): frames of files reduce on these workers.
    #[cfg(feature = "frames")]
    lovage::frame::register()
        .map_err(|e| Exit::failed(format!("the built-in frame tasks: {e}")))?;
    let worker = Worker::new(app.backend().clone(), config)
        .map_err(|e| Exit::failed(format!("cannot start the worker: {e}")))?;
    lovage::worker::install_signal_handlers(worker.shutdown_handle())
        .map_err(|e| Exit::failed(format!("cannot watch for SIGTERM: {e}")))?;
    worker
        .run()
        .map_err(|e| Exit::failed(format!("cannot start the worker's threads: {e}")))?;
    // After an immediate stop, tasks may still run in the pool (their leases are already
    // handed back); leave without waiting for them in destructors.
    std::process::exit(0);
}

#[cfg(test)]
mod tests {
    use super::parse_bytes;

    #[test]
    fn byte_counts_take_binary_suffixes_and_a_bad_one_says_what_is_expected() {
        assert_eq!(parse_bytes("65536"), Ok(65536));
        assert_eq!(parse_bytes("64K"), Ok(64 << 10));
        assert_eq!(parse_bytes("64KiB"), Ok(64 << 10));
        assert_eq!(parse_bytes("512m"), Ok(512 << 20));
        assert_eq!(parse_bytes("2G"), Ok(2 << 30));
        assert_eq!(parse_bytes("0"), Ok(0));
        let e = parse_bytes("lots").unwrap_err();
        assert!(e.contains("\"lots\"") && e.contains("K, M or G"), "{e}");
        assert!(parse_bytes("99999999999999999999G").is_err());
    }
}
