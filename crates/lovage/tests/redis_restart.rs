//! Redis goes away in the middle of a run and comes back: workers and clients retry, resume,
//! and every task ends SUCCESS once in the result store. The test runs its own redis-server
//! (append-only file on) on a free port, so it never touches the machine's Redis.

mod common;

use common::Killed;

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use lovage::{App, Codec, Signature, TaskId, TaskState};

const BIN: &str = env!("CARGO_BIN_EXE_lovage");

struct Server {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
}

impl Server {
    fn start() -> Option<Server> {
        let port = TcpListener::bind("127.0.0.1:0")
            .ok()?
            .local_addr()
            .ok()?
            .port();
        let mut s = Server {
            child: None,
            port,
            dir: tempfile::tempdir().unwrap(),
        };
        s.spawn()?;
        Some(s)
    }

    fn spawn(&mut self) -> Option<()> {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--appendonly",
                "yes",
                "--save",
                "",
            ])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .spawn()
            .ok()?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(())
    }

    /// SHUTDOWN (the append-only file is flushed), then start again on the same files.
    fn restart(&mut self, down_for: Duration) {
        let _ = Command::new("redis-cli")
            .args(["-p", &self.port.to_string(), "shutdown"])
            .output();
        if let Some(mut c) = self.child.take() {
            let _ = c.wait();
        }
        std::thread::sleep(down_for);
        self.spawn().expect("redis-server restarts");
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Results for `ids`, retrying while Redis is away.
fn finished(app: &App, ids: &[TaskId]) -> usize {
    ids.chunks(1000)
        .map(|chunk| match app.backend().results().get_many(chunk) {
            Ok(recs) => recs
                .iter()
                .filter(|r| r.as_ref().is_some_and(|r| r.state == TaskState::Success))
                .count(),
            Err(_) => 0,
        })
        .sum()
}

#[test]
fn a_redis_restart_mid_run_loses_nothing() {
    let Some(mut server) = Server::start() else {
        common::skip("redis-server is not installed or could not start");
        return;
    };
    let url = server.url();
    let mut workers: Vec<Killed> = (1..=2)
        .map(|i| {
            Killed(
                Command::new(BIN)
                    .args([
                        "worker",
                        "--broker",
                        &url,
                        "--concurrency",
                        "2",
                        "--lease",
                        "5s",
                        "--name",
                        &format!("w{i}"),
                    ])
                    .env("LOVAGE_LOG", "error")
                    .stdout(Stdio::null())
                    .spawn()
                    .unwrap(),
            )
        })
        .collect();
    let app = App::connect(&url).unwrap();
    let calls = (0..5000).map(|_| Signature::new("lovage.sleep", &[0.001], Codec::Json).unwrap());
    let ids = app.send_batch(calls).unwrap();

    // Let some work happen, then take Redis away for a moment.
    let deadline = Instant::now() + Duration::from_secs(60);
    while finished(&app, &ids) < 200 {
        assert!(Instant::now() < deadline, "workers never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    let before = finished(&app, &ids);
    server.restart(Duration::from_millis(500));
    let restarted = lovage::Timestamp::now();
    assert!(
        before < ids.len(),
        "the run ended before the restart; make it longer"
    );

    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let done = finished(&app, &ids);
        if done == ids.len() {
            break;
        }
        for (i, w) in workers.iter_mut().enumerate() {
            let status = w.try_wait().unwrap();
            assert!(status.is_none(), "worker w{} exited: {status:?}", i + 1);
        }
        assert!(
            Instant::now() < deadline,
            "only {done} of {} tasks finished after the restart",
            ids.len()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Results are stored before tasks are acked, and a killed worker's last tasks come back
    // when their leases run out (and run again): the broker drains shortly after.
    common::wait_until_drained(&app);
    // Both workers lived through the outage and both went on working after it.
    for (i, w) in workers.iter_mut().enumerate() {
        let status = w.try_wait().unwrap();
        assert!(
            status.is_none(),
            "worker w{} exited during the run: {status:?}",
            i + 1
        );
    }
    let mut after = [0usize; 2];
    for chunk in ids.chunks(1000) {
        for r in app
            .backend()
            .results()
            .get_many(chunk)
            .unwrap()
            .iter()
            .flatten()
        {
            if r.updated <= restarted {
                continue;
            }
            for (i, n) in after.iter_mut().enumerate() {
                let name = format!("w{}@", i + 1);
                if r.worker.as_deref().is_some_and(|w| w.starts_with(&name)) {
                    *n += 1;
                }
            }
        }
    }
    assert!(
        after.iter().all(|n| *n > 0),
        "both workers finished tasks after the restart (w1, w2): {after:?}"
    );
}
