//! The `lovage` binary as a user runs it.

mod common;

use common::Killed;

use std::io::{BufRead, Read};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

fn lovage(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_lovage"))
        .args(args)
        .output()
        .expect("run lovage")
}

#[test]
fn bench_pool_quick_prints_a_table_and_json_with_every_key() {
    let out = lovage(&["bench", "pool", "--quick", "--runs", "1", "--json"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "stdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("thread pool: submit + result"), "{stdout}");
    let last = stdout.lines().last().expect("output");
    let json: serde_json::Value = serde_json::from_str(last).expect("last line is JSON");
    for key in [
        "thread_submit_per_s",
        "thread_map_per_s",
        "process_submit_per_s",
        "process_map_per_s",
        "primes_speedup",
        "pi_speedup",
        "matmul_speedup",
        "fib_speedup",
        "pipeline_speedup",
    ] {
        let v = json.get(key).and_then(|v| v.as_f64());
        assert!(
            v.is_some_and(|v| v > 0.0),
            "{key} missing or not positive in {last}"
        );
    }
}

#[test]
fn tasks_lists_the_builtins() {
    let out = lovage(&["tasks", "--json"]);
    assert!(out.status.success());
    let names: Vec<String> = serde_json::from_slice(&out.stdout).unwrap();
    for n in [
        "lovage.noop",
        "lovage.sleep",
        "lovage.echo",
        "lovage.primes",
        "lovage.pi",
        "lovage.fib",
        "lovage.matmul_rows",
    ] {
        assert!(names.iter().any(|x| x == n), "{n} missing from {names:?}");
    }
}

#[test]
fn bad_flags_exit_2_with_a_message() {
    let out = lovage(&["bench", "pool", "--tasks", "lots"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--tasks"));
}

/// A worker on a fresh SQLite broker with its stderr on a pipe, once it has logged "worker
/// started" (its signal handlers are in place then): what it logged so far and the pipe.
struct LoggingWorker {
    worker: Killed,
    log: Vec<u8>,
    stderr: std::io::BufReader<std::process::ChildStderr>,
    _dir: tempfile::TempDir,
}

impl LoggingWorker {
    fn start() -> LoggingWorker {
        let dir = tempfile::tempdir().unwrap();
        let broker = format!("sqlite://{}", dir.path().join("broker.db").display());
        let mut worker = Killed(
            Command::new(env!("CARGO_BIN_EXE_lovage"))
                .args(["worker", "--concurrency", "1", "--broker", &broker])
                // Whatever the environment says, colour must be off because stderr is a pipe.
                .env_remove("NO_COLOR")
                .env_remove("LOVAGE_LOG")
                .env("TERM", "xterm-256color")
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap(),
        );
        let mut stderr = std::io::BufReader::new(worker.stderr.take().unwrap());
        // Read on a thread, so that a worker that never logs fails the test instead of hanging it.
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut log = Vec::new();
            while !String::from_utf8_lossy(&log).contains("worker started") {
                match stderr.read_until(b'\n', &mut log) {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
            let _ = tx.send((log, stderr));
        });
        let Ok((log, stderr)) = rx.recv_timeout(Duration::from_secs(60)) else {
            panic!("the worker did not log its start within 60 s (or exited)");
        };
        LoggingWorker {
            worker,
            log,
            stderr,
            _dir: dir,
        }
    }
}

/// Sends SIGTERM and waits (up to a minute) for the worker to exit.
fn stop(worker: &mut Killed) -> std::process::ExitStatus {
    unsafe { libc::kill(worker.id() as i32, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(s) = worker.try_wait().unwrap() {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "the worker did not stop within 60 s of SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Logs that go to a file or a pipe are for grep and log collectors: plain text, no ANSI colour
/// codes (colour is for a terminal only). A worker logs at info when it starts and stops.
#[test]
fn logs_to_a_pipe_carry_no_colour_codes() {
    let mut w = LoggingWorker::start();
    let status = stop(&mut w.worker);
    // The worker has exited: the rest of the pipe ends.
    w.stderr.read_to_end(&mut w.log).unwrap();
    let text = String::from_utf8_lossy(&w.log);
    assert!(status.success(), "worker exit {status}: {text}");
    assert!(
        text.contains("INFO") && text.contains("worker stopped"),
        "no info log on stderr: {text:?}"
    );
    assert!(
        !w.log.contains(&0x1b),
        "ANSI escape codes in logs written to a pipe: {text:?}"
    );
}

/// When whatever reads the worker's logs goes away (`lovage worker 2>&1 | head`, a collector
/// that restarts), the worker still stops on SIGTERM: its log lines are dropped, not fatal.
#[test]
fn a_worker_whose_log_reader_is_gone_still_stops_on_sigterm() {
    let LoggingWorker {
        mut worker,
        stderr,
        _dir,
        ..
    } = LoggingWorker::start();
    // Close the read end of the pipe: the worker's next log line meets EPIPE.
    drop(stderr);
    let status = stop(&mut worker);
    assert!(status.success(), "worker exit {status}");
}
