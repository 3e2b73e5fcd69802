//! Helpers shared by the `lovage` binary's integration tests.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr,
    clippy::undocumented_unsafe_blocks
)] // tests panic to fail and print what they saw
// Each test file uses some of these, none uses all.
#![allow(dead_code)]

use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

/// A child process (a worker, a server) that is killed when the test ends or fails.
pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl std::ops::Deref for Killed {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Killed {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

/// A command's stdout and stderr, for assertion messages.
pub fn output_text(o: &Output) -> String {
    format!(
        "stdout: {}\nstderr: {}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A key prefix of a test's own on the machine's Redis (`REDIS_URL`, default 127.0.0.1:6379),
/// deleted when dropped, whether the test passed or not.
pub struct RedisPrefix {
    base: String,
    prefix: String,
}

impl RedisPrefix {
    pub fn new() -> RedisPrefix {
        RedisPrefix {
            base: std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/0".into()),
            prefix: format!("lovage-test-{}", lovage::TaskId::new()),
        }
    }

    /// The broker URL of this prefix.
    pub fn url(&self) -> String {
        format!("{}?prefix={}", self.base, self.prefix)
    }

    /// The keys under this prefix now, sorted.
    pub fn keys(&self) -> Vec<String> {
        let client = redis::Client::open(self.base.as_str()).unwrap();
        let mut c = client.get_connection().unwrap();
        let mut keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{}:*", self.prefix))
            .query(&mut c)
            .unwrap();
        keys.sort();
        keys
    }

    /// Writes the string key `{prefix}:{name}`.
    pub fn set(&self, name: &str) {
        let client = redis::Client::open(self.base.as_str()).unwrap();
        let mut c = client.get_connection().unwrap();
        let _: () = redis::cmd("SET")
            .arg(format!("{}:{name}", self.prefix))
            .arg("1")
            .query(&mut c)
            .unwrap();
    }
}

impl Drop for RedisPrefix {
    fn drop(&mut self) {
        delete_redis_prefix(&self.base, &self.prefix);
    }
}

/// Deletes every key under `prefix` on the Redis at `base` (a test's own namespace).
pub fn delete_redis_prefix(base: &str, prefix: &str) {
    let client = redis::Client::open(base).unwrap();
    let mut c = client.get_connection().unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}:*"))
        .query(&mut c)
        .unwrap_or_default();
    for chunk in keys.chunks(10_000) {
        let _: () = redis::cmd("DEL").arg(chunk).query(&mut c).unwrap();
    }
}

/// Runs the command `make()` builds until it succeeds (a server coming up), for up to 30 s;
/// fails the test with `what` and the last output after that.
pub fn retry_until_success(what: &str, mut make: impl FnMut() -> Command) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = make().output().unwrap();
        if out.status.success() {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: {}", output_text(&out));
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A test that cannot run here (a missing server, no permission): fails, saying why, unless
/// `LOVAGE_ALLOW_SKIP=1` allows skipping; then it prints SKIPPED and the caller returns.
pub fn skip(reason: &str) {
    if std::env::var("LOVAGE_ALLOW_SKIP").is_ok_and(|v| v == "1") {
        eprintln!("SKIPPED: {reason}");
    } else {
        panic!("cannot run: {reason} (set LOVAGE_ALLOW_SKIP=1 to skip instead)");
    }
}

/// Runs a kill -9 scenario (each run checks everything itself and returns how many tasks were
/// delivered again) up to three times, until one run caught work in flight. A kill that lands
/// between a no-op task's store and its ack repeats it without a trace in the records (a final
/// record is never rewritten), so one run may catch nothing by chance; three in a row fail.
pub fn until_a_redelivery(mut run: impl FnMut(usize) -> usize) {
    let mut redelivered = 0;
    for attempt in 0..3 {
        redelivered = run(attempt);
        if redelivered > 0 {
            break;
        }
    }
    assert!(
        redelivered > 0,
        "nothing was delivered again in three runs: the kills caught nothing in flight"
    );
}

/// Waits until the broker holds no task (ready, scheduled or reserved): a killed worker's
/// tasks came back when their leases ran out and ran again.
pub fn wait_until_drained(app: &lovage::App) {
    let drain_deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let stats = app.backend().admin().stats().unwrap();
        if stats
            .iter()
            .all(|s| s.ready + s.reserved + s.scheduled == 0)
        {
            return;
        }
        assert!(
            Instant::now() < drain_deadline,
            "left behind in the broker: {stats:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Starts a `lovage worker` with 2 slots and the data plane on (`--data-plane`, its kept
/// values spilled under `data_dir`) on `url`, with `extra` arguments.
pub fn data_plane_worker(url: &str, data_dir: &std::path::Path, extra: &[&str]) -> Killed {
    let child = Command::new(env!("CARGO_BIN_EXE_lovage"))
        .args([
            "worker",
            "--concurrency",
            "2",
            "--data-plane",
            "--broker",
            url,
        ])
        .args(extra)
        .arg("--data-dir")
        .arg(data_dir)
        .env("LOVAGE_LOG", "warn")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("start a worker");
    Killed(child)
}
