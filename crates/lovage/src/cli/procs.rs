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
/// directory, which lives as long as this value.
pub struct BenchBroker {
    _dir: tempfile::TempDir,
    /// Where to connect.
    pub url: String,
    /// How reports name it (the temporary file's path is left out).
    pub shown: String,
    /// A client on it.
    pub app: lovage::App,
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
    let app = lovage::App::connect(&url).context("opening the broker")?;
    Ok(BenchBroker {
        _dir: dir,
        url,
        shown,
        app,
    })
}
