//! Worker processes that a command starts itself (`lovage demo`, `lovage bench queue`) and
//! always stops, also when the command fails.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use lovage::App;

/// Worker processes of this binary; dropped, they are stopped (SIGTERM, then SIGKILL).
pub struct WorkerProcesses {
    children: Vec<Child>,
}

impl WorkerProcesses {
    /// Starts `n` `lovage worker` processes on `broker_url` with `extra` arguments.
    pub fn start(n: usize, broker_url: &str, extra: &[&str]) -> anyhow::Result<Self> {
        let exe = std::env::current_exe().context("finding the lovage executable")?;
        Self::start_exe(&exe, n, broker_url, extra)
    }

    /// [`start`](Self::start) with another `lovage` executable (a benchmark comparing
    /// builds).
    pub fn start_exe(
        exe: &std::path::Path,
        n: usize,
        broker_url: &str,
        extra: &[&str],
    ) -> anyhow::Result<Self> {
        let mut me = WorkerProcesses {
            children: Vec::new(),
        };
        for i in 0..n {
            let child = Command::new(exe)
                .arg("worker")
                .args(["--broker", broker_url, "--name", &format!("w{}", i + 1)])
                .args(extra)
                .env(
                    "LOVAGE_LOG",
                    std::env::var("LOVAGE_LOG").unwrap_or_else(|_| "warn".into()),
                )
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .spawn()
                .context("starting a worker process")?;
            me.children.push(child);
        }
        Ok(me)
    }

    /// Waits until `n` workers have a heartbeat in the broker.
    pub fn wait_registered(
        &mut self,
        app: &App,
        n: usize,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let seen = app.workers(Duration::from_secs(30))?.len();
            if seen >= n {
                return Ok(());
            }
            for c in &mut self.children {
                if let Some(status) = c.try_wait()? {
                    anyhow::bail!("a worker process exited early ({status})");
                }
            }
            if Instant::now() > deadline {
                anyhow::bail!("only {seen} of {n} workers registered within {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Process ids of the workers.
    pub fn pids(&self) -> Vec<u32> {
        self.children.iter().map(Child::id).collect()
    }

    /// Asks every worker to stop gracefully and waits; kills those that do not stop in time.
    pub fn stop(&mut self) {
        for c in &self.children {
            // SAFETY: signalling our own child.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
        }
        let deadline = Instant::now() + Duration::from_secs(15);
        for c in &mut self.children {
            loop {
                match c.try_wait() {
                    Ok(Some(_)) | Err(_) => break,
                    Ok(None) if Instant::now() > deadline => {
                        let _ = c.kill();
                        let _ = c.wait();
                        break;
                    }
                    Ok(None) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        }
        self.children.clear();
    }
}

/// Resident memory of a process in KiB (`VmRSS`), if it still runs.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Samples the largest resident memory of `pids` until dropped.
pub struct RssSampler {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<u64>>,
}

impl RssSampler {
    /// Starts sampling every 50 ms.
    pub fn start(pids: Vec<u32>) -> Self {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut max = 0;
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                for &pid in &pids {
                    max = max.max(rss_kib(pid).unwrap_or(0));
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            max
        });
        RssSampler {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops and returns the largest sample, in KiB.
    pub fn finish(mut self) -> u64 {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.take().map_or(0, |t| t.join().unwrap_or(0))
    }
}

impl Drop for WorkerProcesses {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The broker a benchmark uses: `url` when given, else a fresh SQLite file in a temporary
/// directory, which lives as long as this value. On a Redis URL whose prefix held no key when
/// the bench opened it, every key under the prefix is deleted when this value is dropped (at
/// the end of the bench, or on its error), which a run would otherwise leave behind. A prefix
/// that held keys already (another bench's, or a deployment's) is left as it is, with a
/// warning.
pub struct BenchBroker {
    _dir: tempfile::TempDir,
    /// Where to connect.
    pub url: String,
    /// How reports name it (the temporary file's path is left out).
    pub shown: String,
    /// A client on it.
    pub app: lovage::App,
    /// The prefix to empty when dropped: Redis, and fresh when opened (boxed: the backend is
    /// large, and benches keep this beside smaller things).
    #[cfg(feature = "redis")]
    cleanup: Option<Box<lovage_broker::redis_backend::RedisBackend>>,
}

pub fn bench_broker(url: Option<&str>) -> anyhow::Result<BenchBroker> {
    use anyhow::Context;
    let dir = tempfile::Builder::new()
        .prefix("lovage-bench-")
        .tempdir()
        .context("creating a temporary directory")?;
    let (url, shown) = match url {
        Some(u) => (u.to_owned(), u.to_owned()),
        None => (
            format!("sqlite://{}", dir.path().join("bench.db").display()),
            "sqlite://<temp>/bench.db".to_owned(),
        ),
    };
    #[cfg(feature = "redis")]
    let cleanup = fresh_redis_prefix(&url)?;
    let app = lovage::App::connect(&url).context("opening the broker")?;
    Ok(BenchBroker {
        _dir: dir,
        url,
        shown,
        app,
        #[cfg(feature = "redis")]
        cleanup,
    })
}

/// A bench's broker with its worker processes running on it. The fields drop in order: the
/// workers stop before the broker's keys are deleted (a running worker writes its own again).
pub struct BenchCluster {
    /// The `lovage worker` processes: held only to be stopped when this is dropped.
    _workers: WorkerProcesses,
    /// Their broker.
    pub broker: BenchBroker,
}

/// Opens the bench's broker ([`bench_broker`]) and starts `n` workers on it with `extra`
/// arguments; returns once all `n` have registered (at most 30 s).
pub fn bench_cluster(url: Option<&str>, n: usize, extra: &[&str]) -> anyhow::Result<BenchCluster> {
    let broker = bench_broker(url)?;
    let mut workers = WorkerProcesses::start(n, &broker.url, extra)?;
    workers.wait_registered(&broker.app, n, Duration::from_secs(30))?;
    Ok(BenchCluster {
        _workers: workers,
        broker,
    })
}

/// For a Redis URL, the backend whose prefix the bench empties at its end: `None` for another
/// broker, or when the prefix holds keys already (only this build's layout mark, which
/// opening it writes, may be there).
#[cfg(feature = "redis")]
fn fresh_redis_prefix(
    url: &str,
) -> anyhow::Result<Option<Box<lovage_broker::redis_backend::RedisBackend>>> {
    use lovage_broker::redis_backend::RedisBackend;
    if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
        return Ok(None);
    }
    let r = RedisBackend::open(url).context("opening the Redis broker")?;
    let found = r
        .count_prefix_keys()
        .context("counting the prefix's keys")?;
    // Opening it wrote the layout mark (or found it): that one key does not count.
    let others = found.saturating_sub(1);
    if others > 0 {
        eprintln!(
            "lovage bench: the prefix {:?} holds {others} key{} besides its layout mark \
             already; the bench's keys are left there too (name a fresh ?prefix= to have them \
             deleted at the end)",
            r.prefix(),
            if others == 1 { "" } else { "s" }
        );
        return Ok(None);
    }
    Ok(Some(Box::new(r)))
}

impl Drop for BenchBroker {
    fn drop(&mut self) {
        #[cfg(feature = "redis")]
        if let Some(r) = self.cleanup.take() {
            if let Err(e) = r.delete_prefix_keys() {
                eprintln!(
                    "lovage bench: could not delete the keys under the prefix {p:?}: {e}; \
                     redis-cli --scan --pattern '{p}:*' | xargs redis-cli unlink",
                    p = r.prefix()
                );
            }
        }
    }
}
