//! The server under test as its own process (`lovage server` of this binary), so its resident
//! memory is the server's alone and not the seeder's or the SSE clients'.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context};

/// A running `lovage server`; dropped, it is stopped (SIGTERM, then SIGKILL).
pub struct ServerProcess {
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
}

impl ServerProcess {
    /// Starts it on `broker_url`, on an ephemeral loopback port, and waits for its
    /// "listening" line.
    pub fn start(broker_url: &str) -> anyhow::Result<ServerProcess> {
        let exe = std::env::current_exe().context("finding the lovage executable")?;
        let mut child = Command::new(exe)
            .args(["server", "--broker", broker_url, "--bind", "127.0.0.1:0"])
            .env(
                "LOVAGE_LOG",
                std::env::var("LOVAGE_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .context("starting lovage server")?;
        let stdout = child.stdout.take().context("the server's stdout")?;
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .context("reading the server's first line")?;
        let addr = line
            .trim()
            .strip_prefix("lovage server listening on http://")
            .and_then(|a| a.trim_end_matches('/').parse().ok());
        let Some(addr) = addr else {
            let _ = child.kill();
            let _ = child.wait();
            bail!("lovage server did not start: {line:?}");
        };
        Ok(ServerProcess { child, addr })
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        for _ in 0..500 {
            if matches!(self.child.try_wait(), Ok(Some(_)) | Err(_)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
