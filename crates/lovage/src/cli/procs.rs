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
        let mut me = WorkerProcesses {
            children: Vec::new(),
        };
        for i in 0..n {
            let child = Command::new(&exe)
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
            let seen = app.backend().broker.workers(Duration::from_secs(30))?.len();
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

impl Drop for WorkerProcesses {
    fn drop(&mut self) {
        self.stop();
    }
}
