//! A private `redis-server` for tests that need a server of their own: a configuration the
//! shared one on 6379 must keep (an eviction policy, a replica, a cluster node, a tiny memory
//! limit), or a server to kill. Include it with `mod support;` from an integration test.

#![allow(dead_code)] // each test file uses its own part

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a server may take to answer PING after it starts.
const START_WITHIN: Duration = Duration::from_secs(10);

/// A `redis-server` on a free local port, with no RDB snapshots and no AOF unless `args` ask
/// for them, its files in a temporary directory; killed (-9) when dropped.
pub struct PrivateRedis {
    child: Option<Child>,
    /// Its port on 127.0.0.1.
    pub port: u16,
    args: Vec<String>,
    dir: tempfile::TempDir,
}

impl PrivateRedis {
    /// Starts a server with `args` added to its command line (e.g. `["--maxmemory-policy",
    /// "volatile-lru"]`) and waits until it answers PING.
    pub fn start(args: &[&str]) -> Self {
        let mut dir = tempfile::tempdir().expect("a temporary directory");
        let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        // A port found free can be taken before the server binds it: try a few.
        let mut last = String::new();
        for _ in 0..5 {
            let port = free_port();
            let mut server = PrivateRedis {
                child: None,
                port,
                args: args.clone(),
                dir,
            };
            match server.spawn() {
                Ok(()) => return server,
                Err(e) => {
                    last = e;
                    dir = server.take_dir();
                }
            }
        }
        panic!("redis-server did not start: {last}");
    }

    fn take_dir(mut self) -> tempfile::TempDir {
        self.stop();
        std::mem::replace(
            &mut self.dir,
            tempfile::tempdir().expect("a temporary directory"),
        )
    }

    /// Starts the process (again, on the same port and directory) and waits for PING.
    fn spawn(&mut self) -> Result<(), String> {
        let mut child = Command::new("redis-server")
            .arg("--port")
            .arg(self.port.to_string())
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot run redis-server: {e}"))?;
        let deadline = Instant::now() + START_WITHIN;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!("redis-server exited: {status}"));
            }
            if self.ping() {
                self.child = Some(child);
                return Ok(());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("no PING reply within {START_WITHIN:?}"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn ping(&self) -> bool {
        redis::Client::open(self.url())
            .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(1)))
            .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c))
            .is_ok()
    }

    /// `redis://127.0.0.1:{port}/0`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Its directory (where an AOF goes).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// A new connection to it.
    pub fn conn(&self) -> redis::Connection {
        redis::Client::open(self.url())
            .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(5)))
            .expect("a connection to the private redis-server")
    }

    /// Sends `signal` (`STOP`, `CONT`, ...) to the process.
    pub fn signal(&self, signal: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill -{signal} {}", self.pid());
    }

    /// Kills the process with -9 and waits for it.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills it with -9 and starts it again on the same port and directory (with its AOF,
    /// if it has one).
    pub fn restart(&mut self) {
        self.stop();
        if let Err(e) = self.spawn() {
            panic!("redis-server did not restart: {e}");
        }
    }

    /// Waits (bounded) until a replica reports its link to the primary up.
    pub fn wait_replica_link(&self) {
        let deadline = Instant::now() + START_WITHIN;
        let mut c = self.conn();
        loop {
            let info: String = redis::cmd("INFO")
                .arg("replication")
                .query(&mut c)
                .expect("INFO replication");
            if info.contains("master_link_status:up") {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the replica on {} did not link up: {info}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A path inside its directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A port free now on 127.0.0.1 (bound, then released).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free local port")
}
