//! The `lovage` binary as a user runs it.

mod common;

use common::Killed;

use std::io::{BufRead, Read};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

fn lovage(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_lovage"))
        .args(args)
        .output()
        .expect("run lovage")
}

/// A SQLite broker of its own in a temporary directory, and the worker processes started on it
/// (killed when dropped).
struct Broker {
    _dir: tempfile::TempDir,
    url: String,
    workers: Vec<Child>,
}

impl Broker {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}", dir.path().join("cli.db").display());
        Broker {
            _dir: dir,
            url,
            workers: Vec::new(),
        }
    }

    /// Runs `lovage ARGS --broker URL`.
    fn run(&self, args: &[&str]) -> std::process::Output {
        let mut all = args.to_vec();
        all.extend(["--broker", &self.url]);
        lovage(&all)
    }

    /// Starts a worker process on this broker.
    fn worker(&mut self) {
        let child = Command::new(env!("CARGO_BIN_EXE_lovage"))
            .args(["worker", "--concurrency", "2", "--broker", &self.url])
            .env("LOVAGE_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("start a worker");
        self.workers.push(child);
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        for c in &mut self.workers {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Stdout as exactly one JSON document (fails, showing both streams, when it is not).
fn json_doc(out: &std::process::Output) -> Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not one JSON document ({e}):\n{stdout}\nstderr:\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn ok(out: &std::process::Output) {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
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
        // The built-in collection tasks, so `lovage worker` reduces arrays.
        "lovage.array.partial",
        "lovage.array.combine",
        "lovage.array.stat",
        "lovage.array.index",
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

#[test]
fn a_worker_of_concurrency_0_is_a_usage_error() {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}", dir.path().join("cli.db").display());
    let mut child = Killed(
        Command::new(env!("CARGO_BIN_EXE_lovage"))
            .args(["worker", "--concurrency", "0", "--broker", &url])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start a worker"),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the worker") {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "`lovage worker --concurrency 0` still runs after 60 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut stderr)
        .expect("read stderr");
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--concurrency"), "{stderr}");
}

#[test]
fn submit_json_gives_the_id_that_status_knows() {
    let b = Broker::new();
    let out = b.run(&["submit", "lovage.echo", "[1]", "--json"]);
    ok(&out);
    let doc = json_doc(&out);
    assert_eq!(doc["task"], "lovage.echo");
    assert_eq!(doc["workflow"], false);
    let id = doc["id"].as_str().expect("id is a string");
    let status = b.run(&["status", id, "--json"]);
    ok(&status);
    let status = json_doc(&status);
    assert_eq!(status["id"], id);
    assert_eq!(status["state"], "PENDING");

    // A workflow: its result id, and no task name.
    let wf = r#"{"chain": [{"task": "lovage.echo", "args": [1]}, {"task": "lovage.echo"}]}"#;
    let out = b.run(&["submit", "--workflow", wf, "--json"]);
    ok(&out);
    let doc = json_doc(&out);
    assert_eq!(doc["workflow"], true);
    assert_eq!(doc["task"], Value::Null);
    assert!(doc["id"].as_str().is_some_and(|id| !id.is_empty()), "{doc}");

    // Not finished: `result --json` says so, with exit 3.
    let out = b.run(&["result", id, "--json"]);
    assert_eq!(out.status.code(), Some(3));
    let doc = json_doc(&out);
    assert_eq!(doc["finished"], false);
    assert_eq!(doc["state"], "PENDING");
}

#[test]
fn purge_json_counts_the_tasks_removed() {
    let b = Broker::new();
    for i in 0..3 {
        ok(&b.run(&[
            "submit",
            "lovage.echo",
            &format!("[{i}]"),
            "-q",
            "cli-purge",
        ]));
    }
    let out = b.run(&["purge", "cli-purge", "--json"]);
    ok(&out);
    let doc = json_doc(&out);
    assert_eq!(doc["queue"], "cli-purge");
    assert_eq!(doc["purged"], 3);
    let again = json_doc(&b.run(&["purge", "cli-purge", "--json"]));
    assert_eq!(again["purged"], 0);
}

#[test]
fn map_json_reports_each_command_and_exits_1_on_a_failure() {
    let mut b = Broker::new();
    b.worker();
    let file = b._dir.path().join("commands");
    std::fs::write(
        &file,
        "echo one\n# a comment\n\nsh -c 'echo bad >&2; exit 3'\necho three\n",
    )
    .expect("write the commands");
    let out = b.run(&["map", file.to_str().expect("utf-8 path"), "--json"]);
    assert_eq!(out.status.code(), Some(1), "one command fails");
    let doc = json_doc(&out);
    assert_eq!(doc["commands"], 3);
    assert_eq!(doc["succeeded"], 2);
    assert_eq!(doc["failed"], 1);
    let results = doc["results"].as_array().expect("results");
    let lines: Vec<u64> = results
        .iter()
        .map(|r| r["line"].as_u64().unwrap_or(0))
        .collect();
    assert_eq!(lines, [1, 4, 5], "input order, comments and blanks skipped");
    assert_eq!(results[0]["command"], "echo one");
    assert_eq!(results[0]["state"], "SUCCESS");
    assert_eq!(results[0]["stdout"], "one\n");
    assert_eq!(results[0]["exit_code"], 0);
    assert_eq!(results[0]["error"], Value::Null);
    assert_eq!(results[1]["state"], "FAILURE");
    assert_eq!(results[1]["stdout"], Value::Null);
    assert_eq!(results[1]["error"]["kind"], "NonZeroExit");
    assert_eq!(results[2]["stdout"], "three\n");
}

#[test]
fn a_failed_tasks_result_json_gives_the_error_and_exit_1() {
    let mut b = Broker::new();
    b.worker();
    let id = String::from_utf8(
        b.run(&[
            "submit",
            "lovage.shell",
            r#"[["sh", "-c", "echo broken >&2; exit 7"]]"#,
        ])
        .stdout,
    )
    .expect("utf-8");
    let id = id.trim();
    let out = b.run(&["result", id, "--wait", "--timeout", "60s", "--json"]);
    assert_eq!(out.status.code(), Some(1), "a failed task exits 1");
    let doc = json_doc(&out);
    assert_eq!(doc["id"], id);
    assert_eq!(doc["state"], "FAILURE");
    assert_eq!(doc["finished"], true);
    assert_eq!(doc["result"], Value::Null);
    assert_eq!(doc["error"]["kind"], "NonZeroExit");
    assert!(
        doc["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("code 7")),
        "{doc}"
    );
    assert!(
        doc["error"]["causes"].to_string().contains("broken"),
        "the task's stderr is among the causes: {doc}"
    );

    // The same through `submit --wait --json`, and a success for contrast.
    let out = b.run(&["submit", "lovage.echo", r#"[{"x": 1}]"#, "--wait", "--json"]);
    ok(&out);
    let doc = json_doc(&out);
    assert_eq!(doc["state"], "SUCCESS");
    assert_eq!(doc["result"], serde_json::json!({"x": 1}));
    assert_eq!(doc["error"], Value::Null);
}

#[test]
fn demo_quick_json_reports_every_phase() {
    let out = lovage(&["demo", "--quick", "--json"]);
    ok(&out);
    let doc = json_doc(&out);
    assert_eq!(doc["workers"], 2);
    assert_eq!(doc["pids"].as_array().map(Vec::len), Some(2));
    assert!(doc["broker"]
        .as_str()
        .is_some_and(|u| u.starts_with("sqlite://")));
    let phases = doc["phases"].as_array().expect("phases");
    let names: Vec<&str> = phases.iter().filter_map(|p| p["name"].as_str()).collect();
    assert_eq!(names, ["no-op", "primes", "pi", "fib"]);
    for p in phases {
        assert!(p["tasks"].as_u64().is_some_and(|n| n > 0), "{p}");
        assert!(p["wall_s"].as_f64().is_some_and(|s| s > 0.0), "{p}");
        assert!(p["tasks_per_s"].as_f64().is_some_and(|r| r > 0.0), "{p}");
    }
    assert_eq!(
        phases[0]["serial_s"],
        Value::Null,
        "no-op has no serial run"
    );
    assert!(phases[1]["speedup"].as_f64().is_some_and(|s| s > 0.0));
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

#[test]
fn bench_collections_reports_every_workload_as_json() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = lovage(&[
        "bench",
        "collections",
        "--elements",
        "100000",
        "--chunk",
        "30000",
        "--text-mb",
        "1",
        "--blocksize",
        "100000",
        "--fold",
        "1000",
        "--runs",
        "1",
        "--dir",
        dir.path().to_str().expect("utf-8 path"),
        "--json",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "stdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let last = stdout.lines().last().expect("output");
    let json: serde_json::Value = serde_json::from_str(last).expect("last line is JSON");
    for key in [
        "array_mean_s",
        "hand_loop_s",
        "wordcount_mb_per_s",
        "fold_s",
    ] {
        let v = json.get(key).and_then(|v| v.as_f64());
        assert!(
            v.is_some_and(|v| v > 0.0),
            "{key} missing or not positive in {last}"
        );
    }
    assert_eq!(json["wordcount_mb"], 1);
}

#[test]
fn bench_graph_runs_every_shape_on_every_local_scheduler() {
    for shape in ["tree", "chains", "fanout"] {
        for scheduler in ["inline", "threads", "processes"] {
            let out = lovage(&[
                "bench",
                "graph",
                "--nodes",
                "2000",
                "--shape",
                shape,
                "--scheduler",
                scheduler,
                "--runs",
                "1",
                "--json",
            ]);
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success(),
                "{shape} on {scheduler}: stdout:\n{stdout}\nstderr:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let last = stdout.lines().last().expect("output");
            let json: serde_json::Value = serde_json::from_str(last).expect("last line is JSON");
            for key in ["build_us_per_node", "us_per_task", "peak_rss_mb"] {
                let v = json.get(key).and_then(|v| v.as_f64());
                assert!(
                    v.is_some_and(|v| v > 0.0),
                    "{key} missing or not positive in {last}"
                );
            }
            assert_eq!(json["tasks"], json["nodes"], "every node ran: {last}");
        }
    }
    let out = lovage(&["bench", "graph", "--shape", "star"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--shape"));
}

#[test]
fn bench_graph_map_sends_and_gathers_every_task_through_the_futures_client() {
    let out = lovage(&[
        "bench",
        "graph",
        "--shape",
        "map",
        "--scheduler",
        "broker",
        "--nodes",
        "500",
        "--runs",
        "1",
        "--json",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "stdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let last = stdout.lines().last().expect("output");
    let json: serde_json::Value = serde_json::from_str(last).expect("last line is JSON");
    assert_eq!(json["shape"], "map", "{last}");
    assert_eq!(json["tasks"], 500, "{last}");
    for key in ["us_per_task", "send_us_per_task", "tasks_per_s"] {
        let v = json.get(key).and_then(|v| v.as_f64());
        assert!(
            v.is_some_and(|v| v > 0.0),
            "{key} missing or not positive in {last}"
        );
    }
    // The futures client lives on a broker; a local scheduler is refused with the reason.
    let out = lovage(&["bench", "graph", "--shape", "map", "--scheduler", "threads"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--scheduler broker"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// On a Redis broker, `bench graph` deletes the keys of its prefix once it is done (they were
/// left behind); a prefix that held keys before it started is left alone,
/// with a warning.
#[test]
fn bench_graph_on_redis_leaves_no_keys_behind_in_a_fresh_prefix() {
    let bench = |url: &str, shape: &str| {
        let out = lovage(&[
            "bench",
            "graph",
            "--shape",
            shape,
            "--scheduler",
            "broker",
            "--nodes",
            "300",
            "--runs",
            "1",
            "--json",
            "--broker",
            url,
        ]);
        assert!(out.status.success(), "{}", common::output_text(&out));
        out
    };
    for shape in ["map", "tree", "crawl"] {
        let prefix = common::RedisPrefix::new();
        bench(&prefix.url(), shape);
        assert_eq!(prefix.keys(), Vec::<String>::new(), "{shape}");
    }
    let used = common::RedisPrefix::new();
    used.set("someone-elses");
    let out = bench(&used.url(), "map");
    let keys = used.keys();
    assert!(keys.len() > 2, "the bench's keys stay: {keys:?}");
    assert!(
        keys.iter().any(|k| k.ends_with(":someone-elses")),
        "{keys:?}"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("holds 1 key besides"), "{err}");
}

/// `--zero-worker`: two worker processes finish a tree's tasks without running them (the
/// graph still completes, every node finished); a crawl, whose pages are found by running
/// its tasks, and a local scheduler refuse it and say why.
#[test]
fn bench_graph_zero_worker_finishes_a_broker_graph_and_is_refused_elsewhere() {
    let out = lovage(&[
        "bench",
        "graph",
        "--nodes",
        "300",
        "--shape",
        "tree",
        "--scheduler",
        "broker",
        "--runs",
        "1",
        "--zero-worker",
        "--json",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "stdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let last = stdout.lines().last().expect("output");
    let json: serde_json::Value = serde_json::from_str(last).expect("last line is JSON");
    assert_eq!(json["zero_worker"], true, "{last}");
    assert_eq!(json["tasks"], json["nodes"], "every node finished: {last}");
    for (shape, scheduler, says) in [
        ("crawl", "broker", "found by running"),
        ("tree", "threads", "broker"),
    ] {
        let out = lovage(&[
            "bench",
            "graph",
            "--nodes",
            "100",
            "--shape",
            shape,
            "--scheduler",
            scheduler,
            "--zero-worker",
        ]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{shape} on {scheduler} ran");
        assert!(err.contains("--zero-worker") && err.contains(says), "{err}");
    }
}
