//! The queue through the `lovage` binary, with real worker processes on an SQLite file.

mod common;

use common::{Killed, RedisPrefix};

use std::io::Write;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use lovage::{App, Codec, Signature, TaskState};

const BIN: &str = env!("CARGO_BIN_EXE_lovage");

struct Env {
    dir: tempfile::TempDir,
    url: String,
    /// For a Redis queue: its prefix, deleted afterwards.
    _redis: Option<RedisPrefix>,
}

impl Env {
    fn new() -> Env {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("q.db").display());
        Env {
            dir,
            url,
            _redis: None,
        }
    }

    /// A queue on the machine's Redis (`REDIS_URL`), under a prefix of its own.
    fn redis() -> Env {
        let redis = RedisPrefix::new();
        Env {
            dir: tempfile::tempdir().unwrap(),
            url: redis.url(),
            _redis: Some(redis),
        }
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.args(args)
            .env("LOVAGE_BROKER", &self.url)
            .env("LOVAGE_LOG", "warn");
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }

    fn worker(&self, extra: &[&str]) -> Killed {
        let mut args = vec!["worker", "--concurrency", "2"];
        args.extend_from_slice(extra);
        Killed(self.cmd(&args).stdout(Stdio::null()).spawn().unwrap())
    }

    fn app(&self) -> App {
        App::connect(&self.url).unwrap()
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn term(child: &mut Child) -> std::process::ExitStatus {
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    wait_exit(child)
}

/// Waits (up to a minute) for a worker that was already asked to stop.
fn wait_exit(child: &mut Child) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "worker did not stop after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn malformed_arguments_are_refused_before_enqueue() {
    let env = Env::new();
    let out = env.run(&["submit", "lovage.echo", "[1, 2"]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(
        err.contains("ARGS is not valid JSON") && err.contains("column"),
        "{err}"
    );
    let out = env.run(&["submit", "lovage.echo", r#"{"value": 1}"#]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("must be a JSON array"));
    let out = env.run(&["submit", "lovage.echo", "[1]", "--kwargs", "{}"]);
    assert_eq!(out.status.code(), Some(2));
    let out = env.run(&["submit", "lovage.echo", "[1]", "--eta", "next tuesday"]);
    assert_eq!(out.status.code(), Some(2));
    let out = env.run(&["queues", "--json"]);
    assert_eq!(text(&out.stdout).trim(), "[]", "nothing was enqueued");
}

#[test]
fn a_file_that_is_not_a_broker_is_a_clear_error() {
    let env = Env::new();
    let notes = env.dir.path().join("notes.txt");
    std::fs::write(
        &notes,
        "not a database at all, just some words\n".repeat(100),
    )
    .unwrap();
    let out = Command::new(BIN)
        .args([
            "queues",
            "--broker",
            &format!("sqlite://{}", notes.display()),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("not a lovage broker database") && err.contains("notes.txt"),
        "{err}"
    );
}

#[test]
fn submit_a_shell_job_and_get_its_output_back() {
    let env = Env::new();
    let mut worker = env.worker(&[]);
    let out = env.run(&[
        "submit",
        "lovage.shell",
        r#"[["echo", "hello from a worker"]]"#,
        "--wait",
        "--timeout",
        "60s",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("hello from a worker") && stdout.contains("\"exit_code\": 0"),
        "{stdout}"
    );

    // A failing command: exit 1, the reason on stderr.
    let out = env.run(&[
        "submit",
        "lovage.shell",
        r#"[["sh", "-c", "echo oops >&2; exit 3"]]"#,
        "--wait",
        "--timeout",
        "60s",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("FAILURE") && err.contains("exited with code 3") && err.contains("oops"),
        "{err}"
    );

    // Fire and forget, then status and result by id.
    let out = env.run(&["submit", "lovage.echo", r#"[{"k": [1, 2]}]"#]);
    let id = text(&out.stdout).trim().to_owned();
    let out = env.run(&["result", &id, "--wait", "--timeout", "60s"]);
    assert!(out.status.success());
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&text(&out.stdout)).unwrap(),
        serde_json::json!({"k": [1, 2]})
    );
    let out = env.run(&["status", &id, "--json"]);
    let status: serde_json::Value = serde_json::from_str(&text(&out.stdout)).unwrap();
    assert_eq!(status["state"], "SUCCESS");

    // An unknown task fails with the registered names; the worker lives on.
    let out = env.run(&["submit", "no.such.task", "[]", "--wait", "--timeout", "60s"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("lovage.shell"),
        "{}",
        text(&out.stderr)
    );
    // Arguments of the wrong type fail with the decode error.
    let out = env.run(&[
        "submit",
        "lovage.sleep",
        r#"["soon"]"#,
        "--wait",
        "--timeout",
        "60s",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("CodecError"),
        "{}",
        text(&out.stderr)
    );

    let out = env.run(&["workers", "--json"]);
    let workers: serde_json::Value = serde_json::from_str(&text(&out.stdout)).unwrap();
    assert_eq!(workers.as_array().unwrap().len(), 1);
    let out = env.run(&["result", &uuid_like(), "--broker", &env.url]);
    assert_eq!(out.status.code(), Some(3), "an unknown id is not finished");

    assert!(term(&mut worker).success(), "SIGTERM: clean exit");
    let out = env.run(&["workers", "--json"]);
    assert_eq!(
        text(&out.stdout).trim(),
        "[]",
        "a stopped worker unregisters"
    );
}

fn uuid_like() -> String {
    lovage::TaskId::new().to_string()
}

#[test]
fn map_runs_a_file_of_commands_and_sums_up_failures() {
    let env = Env::new();
    let mut worker = env.worker(&[]);
    let file = env.dir.path().join("jobs.txt");
    let mut f = std::fs::File::create(&file).unwrap();
    writeln!(f, "# a comment\necho one\n\necho two\nfalse\necho three").unwrap();
    let out = env.run(&["map", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stdout),
        "one\ntwo\nthree\n",
        "outputs in input order"
    );
    let err = text(&out.stderr);
    assert!(
        err.contains("4 command(s): 3 succeeded, 1 failed") && err.contains("line 5: false"),
        "{err}"
    );
    term(&mut worker);
}

/// Sends `lovage.sleep(seconds)` and returns once a worker holds it.
fn send_sleep_and_wait_until_reserved(app: &App, seconds: f64) -> lovage::TaskId {
    let id = app
        .send_signature(Signature::new("lovage.sleep", &[seconds], Codec::Json).unwrap())
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while app
        .backend()
        .admin()
        .stats()
        .unwrap()
        .iter()
        .all(|s| s.reserved == 0)
    {
        assert!(Instant::now() < deadline, "no worker reserved the task");
        std::thread::sleep(Duration::from_millis(10));
    }
    id
}

#[test]
fn graceful_stop_finishes_the_running_task() {
    let env = Env::new();
    let mut worker = env.worker(&[]);
    let app = env.app();
    let id = send_sleep_and_wait_until_reserved(&app, 1.0);
    assert!(term(&mut worker).success());
    assert_eq!(
        app.backend().results().get(id).unwrap().unwrap().state,
        TaskState::Success
    );
}

#[test]
fn a_second_signal_requeues_the_running_task() {
    let env = Env::new();
    let mut worker = env.worker(&[]);
    let app = env.app();
    let id = send_sleep_and_wait_until_reserved(&app, 30.0);
    unsafe { libc::kill(worker.id() as i32, libc::SIGTERM) };
    std::thread::sleep(Duration::from_millis(200));
    term(&mut worker);
    let stats = app.backend().admin().stats().unwrap();
    assert_eq!(
        (stats[0].ready, stats[0].reserved),
        (1, 0),
        "the task is back in the queue: {stats:?}"
    );
    assert!(app
        .backend()
        .results()
        .get(id)
        .unwrap()
        .is_none_or(|r| !r.state.is_final()));
}

#[test]
fn a_process_pool_worker_enforces_hard_time_limits() {
    let env = Env::new();
    let mut worker = env.worker(&["--pool", "processes"]);
    let out = env.run(&[
        "submit",
        "lovage.sleep",
        "[30]",
        "--time-limit",
        "300ms",
        "--wait",
        "--timeout",
        "60s",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("TimeLimitExceeded"),
        "{}",
        text(&out.stderr)
    );
    let out = env.run(&["submit", "lovage.echo", "[7]", "--wait", "--timeout", "60s"]);
    assert_eq!(
        text(&out.stdout).trim(),
        "7",
        "the pool replaced the killed child"
    );
    assert!(term(&mut worker).success());
}

#[test]
fn the_same_commands_work_on_redis() {
    let env = Env::redis();
    let mut worker = env.worker(&[]);
    let out = env.run(&[
        "submit",
        "lovage.shell",
        r#"[["echo", "via redis"]]"#,
        "--wait",
        "--timeout",
        "60s",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("via redis"));
    let out = env.run(&[
        "submit",
        "lovage.echo",
        "[1]",
        "--countdown",
        "3s",
        "--priority",
        "9",
    ]);
    let id = text(&out.stdout).trim().to_owned();
    let out = env.run(&["queues", "--json"]);
    assert!(
        text(&out.stdout).contains("\"scheduled\":1"),
        "{}",
        text(&out.stdout)
    );
    let out = env.run(&["result", &id, "--wait", "--timeout", "60s"]);
    assert_eq!(text(&out.stdout).trim(), "1");
    let out = env.run(&["workers", "--json"]);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&text(&out.stdout))
            .unwrap()
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert!(term(&mut worker).success());
}

/// Kills one of the two workers with -9 and starts a new one in its place, at most 8 times,
/// until `enough()`; returns how many were killed. A worker is killed only once it has
/// finished one of `ids` (it is consuming, so it holds tasks) while the broker holds reserved
/// tasks, never while it is still starting up; then the test waits 300 ms. Fails after 3
/// minutes.
fn kill_in_turn(
    env: &Env,
    app: &App,
    ids: &[lovage::TaskId],
    workers: &mut [Killed],
    lease: &[&str],
    mut enough: impl FnMut() -> bool,
) -> usize {
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut kills = 0;
    'kills: while kills < 8 {
        let victim = kills % 2;
        let suffix = format!(".{}", workers[victim].id());
        // Wait until the victim is busy: it finished a task and some are reserved.
        loop {
            if enough() {
                break 'kills;
            }
            assert!(
                Instant::now() < deadline,
                "the run did not get far enough in time"
            );
            let ran = app
                .backend()
                .results()
                .get_many(ids)
                .unwrap()
                .iter()
                .flatten()
                .any(|r| r.worker.as_deref().is_some_and(|w| w.ends_with(&suffix)));
            let reserved = app
                .backend()
                .admin()
                .stats()
                .unwrap()
                .iter()
                .any(|s| s.reserved > 0);
            if ran && reserved {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let w = &mut workers[victim];
        w.kill().unwrap(); // SIGKILL
        w.wait().unwrap();
        workers[victim] = env.worker(lease);
        kills += 1;
        std::thread::sleep(Duration::from_millis(300));
    }
    kills
}

/// Fails unless some task of `ids` was delivered more than once (a kill caught it reserved
/// or running, and its lease brought it back).
fn assert_some_task_was_delivered_again(app: &App, ids: &[lovage::TaskId]) {
    let records = app.backend().results().get_many(ids).unwrap();
    let most = records.iter().flatten().map(|r| r.attempts).max();
    assert!(
        most.is_some_and(|a| a > 1),
        "no task was delivered again (most attempts: {most:?}): the kills caught nothing"
    );
}

/// A signal that reaches the worker while a Redis call waits for its reply must not lose that
/// reply. Redis sockets have read timeouts, so a signal makes the read fail with EINTR; a
/// reserve whose reply is lost leaves its tasks leased until the lease runs out, and they run
/// again. Here tasks go to an idle worker while a script holds Redis busy, so the worker's
/// reserve is waiting for its reply when SIGTERM (a graceful stop) arrives: the worker must
/// finish what it reserved, and a second worker finds nothing delivered twice. (SIGCHLD from a
/// task's children cuts calls short the same way, but only by a race.) The lease is 5 s, not
/// 1 s: on two cores busy with other tests, a 1 s lease sometimes ran out while the worker's
/// threads waited for a core, and its tasks ran again for that reason alone.
#[test]
fn a_signal_while_redis_is_slow_loses_no_reply() {
    let env = Env::redis();
    let log = env.dir.path().join("worker.log");
    let mut worker = Killed(
        env.cmd(&["worker", "--concurrency", "2", "--lease", "5s"])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    let app = env.app();
    let base = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/0".into());
    let mut busy_conn = redis::Client::open(base.as_str())
        .unwrap()
        .get_connection()
        .unwrap();
    let noop = || Signature::new("lovage.noop", &serde_json::json!([]), Codec::Json).unwrap();
    // The worker is up and idle once a first task is done.
    let first = app.send_signature(noop()).unwrap();
    app.wait_record(first, Duration::from_secs(60)).unwrap();
    let pid = worker.id() as i32;
    let ids = app.send_batch((0..50).map(|_| noop())).unwrap();
    let signaller = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(100));
        // SAFETY: a signal to our own child process.
        unsafe { libc::kill(pid, libc::SIGTERM) };
    });
    let _: i64 = redis::cmd("EVAL")
        .arg(BUSY_SCRIPT)
        .arg(0)
        .arg(300_000)
        .query(&mut busy_conn)
        .unwrap();
    signaller.join().unwrap();
    // Not `term`: a second SIGTERM asks for an immediate stop, which requeues what still runs
    // (counted as an attempt), and on a busy machine the graceful stop has not ended by then.
    assert!(wait_exit(&mut worker).success());
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(
        !logged.contains("Interrupted system call"),
        "a signal cut a broker call short:\n{logged}"
    );
    // Whatever the first worker left, a second one finishes.
    let mut second = env.worker(&["--lease", "5s"]);
    for id in &ids {
        let rec = app.wait_record(*id, Duration::from_secs(60)).unwrap();
        assert_eq!(rec.map(|r| r.state), Some(TaskState::Success), "{id}");
    }
    let again = app
        .records(&ids)
        .unwrap()
        .into_iter()
        .filter(|r| r.as_ref().is_some_and(|r| r.attempts != 1))
        .count();
    assert_eq!(again, 0, "tasks delivered again: a signal lost a reply");
    assert!(term(&mut second).success());
}

/// Keeps Redis busy for ARGV[1] microseconds (every other client waits meanwhile).
const BUSY_SCRIPT: &str = "local t = redis.call('TIME') \
    local start = t[1] * 1000000 + t[2] \
    while true do \
        local n = redis.call('TIME') \
        if n[1] * 1000000 + n[2] - start > tonumber(ARGV[1]) then return 1 end \
    end";

/// Two workers, 2,000 tasks, one worker killed with -9 again and again while it holds tasks
/// (and restarted): some task is delivered again, and every task ends SUCCESS, none lost.
#[test]
fn chaos_killing_workers_loses_nothing() {
    chaos_kill_workers(Env::new());
}

#[test]
fn chaos_killing_workers_loses_nothing_on_redis() {
    chaos_kill_workers(Env::redis());
}

fn chaos_kill_workers(env: Env) {
    let lease = ["--lease", "1s"];
    let mut workers = vec![env.worker(&lease), env.worker(&lease)];
    let app = env.app();
    let calls = (0..2000).map(|_| Signature::new("lovage.sleep", &[0.002], Codec::Json).unwrap());
    let ids = app.send_batch(calls).unwrap();
    let succeeded = || {
        app.backend()
            .results()
            .get_many(&ids)
            .unwrap()
            .iter()
            .filter(|r| r.as_ref().is_some_and(|r| r.state == TaskState::Success))
            .count()
    };
    let kills = kill_in_turn(&env, &app, &ids, &mut workers, &lease, || {
        succeeded() == ids.len()
    });
    let deadline = Instant::now() + Duration::from_secs(180);
    while succeeded() < ids.len() {
        assert!(
            Instant::now() < deadline,
            "only {} of {} tasks finished",
            succeeded(),
            ids.len()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        kills >= 1,
        "the run finished before any worker was killed; make it longer"
    );
    for id in &ids {
        let r = app.backend().results().get(*id).unwrap().unwrap();
        assert_eq!(r.state, TaskState::Success, "{id}");
    }
    // Results are stored before tasks are acked, and a killed worker's last tasks come back
    // when their leases run out (and run again): the broker drains shortly after.
    common::wait_until_drained(&app);
    assert_some_task_was_delivered_again(&app, &ids);
    for w in &mut workers {
        term(w);
    }
}

/// A chord of 2,000 members while workers are killed with -9 again and again: its callback
/// runs exactly once (one delivery), with all 2,000 results in member order.
#[test]
fn chaos_killing_workers_during_a_chord_fires_it_once() {
    chaos_chord(Env::new());
}

#[test]
fn chaos_killing_workers_during_a_chord_fires_it_once_on_redis() {
    chaos_chord(Env::redis());
}

fn chaos_chord(env: Env) {
    let lease = ["--lease", "1s"];
    let app = env.app();
    // Each member sleeps about 2 ms and returns its own value: 0.002 + i µs.
    let value = |i: usize| 0.002 + i as f64 * 1e-6;
    let members =
        (0..2000).map(|i| Signature::new("lovage.sleep", &[value(i)], Codec::Json).unwrap());
    // The body appends what it receives (the list of the members' results) to a file: one
    // line per run.
    let sink = env.dir.path().join("chord.jsonl");
    let body = Signature::new(
        "lovage.append_jsonl",
        &[sink.display().to_string()],
        Codec::Json,
    )
    .unwrap();
    let wf = lovage::chord(members, body);
    let sent = lovage::flow::send(&app, &wf).unwrap();
    let member_ids = sent.member_ids().to_vec();
    // Kills rarely land between a member's join and its ack, the moment that makes a member
    // finish again after the callback was sent. So the test plays one such worker itself:
    // it takes a member, runs it to its join, and hands it back unacked once the callback
    // ran (below), as a lease running out would.
    let held = hold_a_member_past_its_join(&app);
    let mut workers = vec![env.worker(&lease), env.worker(&lease)];
    // Kill while the header runs; stop before it completes, so no kill hits the callback.
    let kills = kill_in_turn(&env, &app, &member_ids, &mut workers, &lease, || {
        let done = app
            .backend()
            .results()
            .get_many(&member_ids)
            .unwrap()
            .iter()
            .filter(|r| r.as_ref().is_some_and(|r| r.state == TaskState::Success))
            .count();
        done > 1500
    });
    assert!(
        kills >= 1,
        "the header finished before any worker was killed"
    );
    let written: u64 = sent.get(Duration::from_secs(180)).unwrap();
    app.backend()
        .broker()
        .retry(&held.lease, Duration::ZERO)
        .unwrap();
    // Members whose worker was killed before their ack come back when their leases run out
    // and finish again, after the callback was sent: count its runs only once the broker is
    // empty, a lease has passed with nothing new in it, and the workers stopped gracefully.
    common::wait_until_drained(&app);
    std::thread::sleep(Duration::from_millis(1500));
    common::wait_until_drained(&app);
    for w in &mut workers {
        assert!(term(w).success(), "SIGTERM: clean exit");
    }
    common::wait_until_drained(&app);
    let again = app
        .backend()
        .results()
        .get(held.envelope.id)
        .unwrap()
        .unwrap();
    assert!(
        again.attempts > 1 && again.worker.as_deref() != Some("by-hand"),
        "a worker ran the handed-back member again: {again:?}"
    );
    let killed: Vec<lovage::TaskId> = member_ids
        .iter()
        .copied()
        .filter(|id| *id != held.envelope.id)
        .collect();
    assert_some_task_was_delivered_again(&app, &killed);
    let text = std::fs::read_to_string(&sink).unwrap();
    assert_eq!(
        text.lines().count(),
        1,
        "the callback ran once: {text:.300}"
    );
    assert_eq!(text.len() as u64, written);
    let results: Vec<f64> = serde_json::from_str(text.trim()).unwrap();
    assert_eq!(
        results.len(),
        2000,
        "the callback got every member's result"
    );
    for (i, r) in results.iter().enumerate() {
        assert!(
            (r - value(i)).abs() < 1e-9,
            "result {i} is {r}, not member {i}'s {}: out of order",
            value(i)
        );
    }
}

/// Reserves one chord member (no worker runs yet), stores its result and records it in its
/// join as a worker does, and keeps it reserved (a long lease) without acking it.
fn hold_a_member_past_its_join(app: &App) -> lovage_broker::Delivery {
    let backend = app.backend();
    let mut got = backend
        .broker()
        .reserve(
            &[lovage::DEFAULT_QUEUE.to_owned()],
            1,
            Duration::from_secs(600),
            Duration::from_secs(10),
        )
        .unwrap();
    assert_eq!(got.len(), 1, "a member to hold");
    let d = got.remove(0);
    let args: (f64,) = serde_json::from_slice(&d.envelope.args).unwrap();
    let bytes = serde_json::to_vec(&args.0).unwrap();
    let now = lovage::Timestamp::now();
    backend
        .results()
        .store(&[lovage::ResultRecord {
            id: d.envelope.id,
            task: d.envelope.task.clone(),
            state: TaskState::Success,
            value: Some(bytes.clone()),
            codec: d.envelope.codec,
            error: None,
            attempts: d.envelope.attempts,
            worker: Some("by-hand".into()),
            started: Some(now),
            updated: now,
            expires: None,
        }])
        .unwrap();
    let ctx = lovage::flow::Context {
        backend,
        result_ttl: None,
        worker: Some("by-hand"),
        sent_events: false,
        steal_after: None,
    };
    lovage::flow::advance(&ctx, &d.envelope, lovage::flow::Finished::Success(&bytes)).unwrap();
    d
}

/// A workflow described in JSON, sent with `lovage submit --workflow`, run by a worker
/// process, and shown by `lovage status` as a tree.
#[test]
fn submit_a_workflow_and_see_it_as_a_tree() {
    let env = Env::new();
    let mut worker = env.worker(&[]);
    let description = r#"{"chain": [
        {"task": "lovage.echo", "args": [[1, 2, 3]]},
        {"chord": [{"task": "lovage.sum"}, {"task": "lovage.sum"}], "body": {"task": "lovage.sum"}}
    ]}"#;
    let out = env.run(&[
        "submit",
        "--workflow",
        description,
        "--wait",
        "--timeout",
        "60s",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), "12.0", "(1+2+3) twice, summed");
    // The id printed without --wait is the workflow's; status shows every node.
    let out = env.run(&["submit", "--workflow", description]);
    let id = text(&out.stdout).trim().to_owned();
    let out = env.run(&["result", &id, "--wait", "--timeout", "60s"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = env.run(&["status", &id]);
    let tree = text(&out.stdout);
    assert!(tree.starts_with("chain\n"), "{tree}");
    assert_eq!(tree.matches("SUCCESS").count(), 5, "{tree}");
    assert!(tree.contains("└─ body: lovage.sum"), "{tree}");
    let out = env.run(&["status", &id, "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["chain"][1]["body"]["state"], "SUCCESS");
    // A mistake in the description names the node and sends nothing.
    let out = env.run(&[
        "submit",
        "--workflow",
        r#"{"chain": [{"task": "lovage.echo"}, {"tsk": 1}]}"#,
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("workflow.chain[1]"),
        "{}",
        text(&out.stderr)
    );
    term(&mut worker);
}

/// `map`, `starmap` and `chunks` over a list, run by a worker process.
#[test]
fn map_starmap_and_chunks_over_a_list() {
    let env = Env::new();
    let mut worker = env.worker(&[]);
    let app = env.app();
    let long = Duration::from_secs(60);
    let wf = lovage::flow::map("lovage.echo", ["a", "b", "c"], Codec::Json).unwrap();
    let got: Vec<String> = lovage::flow::send(&app, &wf).unwrap().get(long).unwrap();
    assert_eq!(got, ["a", "b", "c"]);
    let wf =
        lovage::flow::starmap("lovage.sum", [[vec![1, 2]], [vec![3, 4]]], Codec::Json).unwrap();
    let got: Vec<f64> = lovage::flow::send(&app, &wf).unwrap().get(long).unwrap();
    assert_eq!(got, [3.0, 7.0]);
    let lists = (1..=5).map(|i| [vec![i, i]]);
    let wf = lovage::flow::chunks("lovage.sum", lists, 2, Codec::Json).unwrap();
    let sent = lovage::flow::send(&app, &wf).unwrap();
    assert_eq!(sent.member_ids().len(), 3, "5 calls in chunks of 2");
    let got: Vec<Vec<f64>> = sent.get(long).unwrap();
    assert_eq!(got, vec![vec![2.0, 4.0], vec![6.0, 8.0], vec![10.0]]);
    term(&mut worker);
}
