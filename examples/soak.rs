//! The soak driver behind `scripts/soak` (issue 14, item 8): the tasks, the workers, a steady
//! producer with a beat, and the check that compares what was sent with what the broker and
//! the result store hold at the end. `scripts/soak` starts the workers and injects the faults
//! (kill -9, Redis restarts, a network cut, a clock step, a full disk); this program only
//! produces load and judges the outcome.
//!
//! ```text
//! soak worker  --broker URL --marks DIR [--name N] [--concurrency 4] [--lease 2s]
//! soak produce --broker URL --dir DIR --seconds S [--rate 10] [--drain 120] [--label L]
//! soak check   --broker URL --dir DIR [--label L]      # writes DIR/summary.json, exit 1 on a failed check
//! soak table   A/summary.json B/summary.json           # the side-by-side table, exit 1 if any failed
//! soak --quick                                         # all of it in one process on SQLite, no faults (CI)
//! ```
//!
//! The evidence. Every task takes a `key` and, before it returns, appends a line to
//! `marks/runs.jsonl` (key, a nonce unique to the run, pid, ok or not); its value carries the
//! same nonce. The producer writes each task it sent (after the send returned) to
//! `ledger.jsonl` with the outcome it must end in, and the first final record it read for each
//! (state, attempts) to `finished.jsonl`. The check then knows, per task: whether it has a
//! final record (none: lost or missing), whether the stored value comes from a run that
//! happened, whether a RETRY/FAILURE sits where a run succeeded or a SUCCESS was already read,
//! or an older attempt's SUCCESS where a newer one's was read (a stale run wrote over a newer
//! result), how often a chord callback ran against how often it was delivered (its record's
//! attempts: more runs than deliveries means it was sent twice — or that an older attempt's
//! record replaced a newer one), and which dead letters are the expected ones (`soak.doomed`,
//! which fails on every attempt). See docs/reliability.md.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use lovage::{App, PoolKind, TaskId, TaskState, Timestamp, Worker, WorkerConfig};
use serde::{Deserialize, Serialize};

// ---------------------------------------------------------------------------------------------
// The tasks.

/// Where the tasks leave their marks (set once per process: `--marks`, or the quick run's).
static MARKS: OnceLock<PathBuf> = OnceLock::new();

fn marks() -> &'static Path {
    MARKS.get().map_or(Path::new("."), PathBuf::as_path)
}

/// What a task returns: which run produced the stored value.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Run {
    key: String,
    nonce: String,
    pid: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sum: Option<i64>,
}

/// One line of `runs.jsonl`.
#[derive(Debug, Serialize, Deserialize)]
struct RunLine {
    key: String,
    nonce: String,
    pid: u32,
    ok: bool,
    at: i64,
}

fn start_run(key: &str) -> Run {
    Run {
        key: key.to_owned(),
        nonce: TaskId::new().to_string(),
        pid: std::process::id(),
        sum: None,
    }
}

/// Appends the run's line in one write (O_APPEND: lines of concurrent runs do not interleave).
fn mark(run: &Run, ok: bool) {
    let line = RunLine {
        key: run.key.clone(),
        nonce: run.nonce.clone(),
        pid: run.pid,
        ok,
        at: Timestamp::now().as_millis(),
    };
    let mut text = serde_json::to_string(&line).expect("a run line encodes");
    text.push('\n');
    let written = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(marks().join("runs.jsonl"))
        .and_then(|mut f| f.write_all(text.as_bytes()));
    if let Err(e) = written {
        // The check would call this run's value unexplained: say why here.
        eprintln!("soak: cannot write the run mark of {}: {e}", run.key);
    }
}

#[lovage::task(name = "soak.noop")]
fn noop(key: String) -> Run {
    let run = start_run(&key);
    mark(&run, true);
    run
}

/// Runs longer than the lease (2 s in the soak): the keeper must renew it.
#[lovage::task(name = "soak.sleep")]
fn sleep(key: String, ms: u64) -> Run {
    let run = start_run(&key);
    std::thread::sleep(Duration::from_millis(ms));
    mark(&run, true);
    run
}

/// Fails on its first run, succeeds on the next (a marker file per key says which is which).
/// Retries are generous because a kill -9 or a lost lease also counts as an attempt.
#[lovage::task(
    name = "soak.flaky",
    max_retries = 12,
    retry_backoff = "200ms",
    retry_backoff_max = "2s"
)]
fn flaky(key: String) -> Result<Run, String> {
    let run = start_run(&key);
    let marker = marks().join("flaky").join(&key);
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&marker)
    {
        Ok(_) => {
            mark(&run, false);
            Err(format!("{key}: the first run fails on purpose"))
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            mark(&run, true);
            Ok(run)
        }
        Err(e) => {
            mark(&run, false);
            Err(format!("{key}: marker {}: {e}", marker.display()))
        }
    }
}

/// Fails on every attempt: must end FAILURE, in the dead letters.
#[lovage::task(name = "soak.doomed", max_retries = 1, retry_backoff = "100ms")]
fn doomed(key: String) -> Result<Run, String> {
    let run = start_run(&key);
    mark(&run, false);
    Err(format!("{key}: fails on every attempt"))
}

/// A chord member: returns its value.
#[lovage::task(name = "soak.member")]
fn member(key: String, value: i64) -> i64 {
    mark(&start_run(&key), true);
    value
}

/// A chord's callback: the members' values, in order, then the chord's key.
#[lovage::task(name = "soak.chord_done")]
fn chord_done(values: Vec<i64>, key: String) -> Run {
    let mut run = start_run(&key);
    run.sum = Some(values.iter().sum());
    mark(&run, true);
    run
}

/// The beat's task.
#[lovage::task(name = "soak.tick")]
fn tick() -> u32 {
    std::process::id()
}

const BEAT_EVERY_MS: i64 = 2000;

fn beat_schedule() -> lovage::beat::Schedule {
    let text = format!(
        "[[entry]]\nname = \"soak-tick\"\ntask = \"{}\"\nevery = \"{}ms\"\n",
        tick::NAME,
        BEAT_EVERY_MS
    );
    lovage::beat::Schedule::parse(&text).expect("the soak's beat schedule parses")
}

// ---------------------------------------------------------------------------------------------
// Arguments.

struct Args(Vec<String>);

impl Args {
    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .position(|a| a == name)
            .and_then(|i| self.0.get(i + 1))
            .map(String::as_str)
    }

    fn need(&self, name: &str) -> &str {
        self.get(name)
            .unwrap_or_else(|| die(&format!("{name} is required")))
    }

    fn num<T: std::str::FromStr>(&self, name: &str, default: T) -> T {
        self.get(name).map_or(default, |v| {
            v.parse()
                .unwrap_or_else(|_| die(&format!("{name}: not a number: {v}")))
        })
    }

    fn duration(&self, name: &str, default: Duration) -> Duration {
        self.get(name).map_or(default, |v| {
            lovage::parse_duration(v).unwrap_or_else(|e| die(&format!("{name}: {e}")))
        })
    }
}

fn die(msg: &str) -> ! {
    eprintln!("soak: {msg}");
    std::process::exit(2)
}

fn main() {
    lovage::init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--quick") {
        std::process::exit(quick());
    }
    let Some((cmd, rest)) = args.split_first() else {
        die("usage: soak worker|produce|check|table ... (or --quick); see the file's header")
    };
    let a = Args(rest.to_vec());
    let code = match cmd.as_str() {
        "worker" => worker(&a),
        "produce" => produce(&a),
        "check" => check(&a),
        "table" => table(rest),
        other => die(&format!("unknown command {other:?}")),
    };
    std::process::exit(code);
}

fn init_logging() {
    let level = match std::env::var("LOVAGE_LOG").as_deref() {
        Ok("info") => tracing::level_filters::LevelFilter::INFO,
        Ok("debug") => tracing::level_filters::LevelFilter::DEBUG,
        Ok("error") => tracing::level_filters::LevelFilter::ERROR,
        _ => tracing::level_filters::LevelFilter::WARN,
    };
    let _ = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .log_internal_errors(false)
        .try_init();
}

fn connect(url: &str) -> App {
    // The broker may be down (a Redis restart) or full when a worker starts: keep trying.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        match App::connect(url) {
            Ok(app) => return app,
            Err(e) if Instant::now() < deadline => {
                eprintln!("soak: cannot open {url} yet: {e}");
                std::thread::sleep(Duration::from_millis(500));
            }
            Err(e) => die(&format!("cannot open {url}: {e}")),
        }
    }
}

fn worker_config(a: &Args) -> WorkerConfig {
    WorkerConfig {
        pool: PoolKind::Threads,
        concurrency: a.num("--concurrency", 4),
        prefetch: a.num("--prefetch", 8),
        lease: a.duration("--lease", Duration::from_secs(2)),
        name: a.get("--name").unwrap_or("soak").to_owned(),
        ..WorkerConfig::default()
    }
}

fn worker(a: &Args) -> i32 {
    init_logging();
    let dir = PathBuf::from(a.need("--marks"));
    std::fs::create_dir_all(dir.join("flaky")).expect("the marks directory");
    let _ = MARKS.set(dir);
    let app = connect(a.need("--broker"));
    let w = Worker::new(app.backend().clone(), worker_config(a)).expect("start the worker");
    match w.run() {
        Ok(report) => {
            eprintln!("soak worker stopped: {report:?}");
            0
        }
        Err(e) => {
            eprintln!("soak worker failed: {e}");
            1
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The producer: a steady mix, the beat, and the watchdog.

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Expect {
    Success,
    Failure,
}

/// One line of `ledger.jsonl`: something the producer sent (its send returned Ok).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum Entry {
    Task {
        id: TaskId,
        key: String,
        task: String,
        expect: Expect,
    },
    Chord {
        id: TaskId,
        key: String,
        members: Vec<TaskId>,
        sum: i64,
    },
}

/// One line of `finished.jsonl`: the first final state the producer saw for an id.
#[derive(Debug, Serialize, Deserialize)]
struct Finished {
    id: TaskId,
    state: TaskState,
    #[serde(default)]
    attempts: u32,
    at: i64,
}

/// What the producer measured, in `stats.json`.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Stats {
    label: String,
    started: i64,
    sending_ended: i64,
    ended: i64,
    tasks_sent: u64,
    chords_sent: u64,
    send_errors: u64,
    chords_abandoned: u64,
    /// Tasks that reached a final state, per minute since the start.
    finished_per_minute: Vec<u64>,
    /// The longest time with work outstanding and nothing finishing while the load was sent,
    /// in seconds (the watchdog; what never finishes after the sending is `drained: false`).
    longest_stall_s: f64,
    drained: bool,
    beat_started: i64,
    beat_stopped: i64,
}

struct Ledger {
    ledger: std::fs::File,
    finished: std::fs::File,
}

impl Ledger {
    fn open(dir: &Path) -> Ledger {
        let open = |name: &str| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(dir.join(name))
                .unwrap_or_else(|e| die(&format!("{}: {e}", dir.join(name).display())))
        };
        Ledger {
            ledger: open("ledger.jsonl"),
            finished: open("finished.jsonl"),
        }
    }

    fn sent(&mut self, e: &Entry) {
        let mut s = serde_json::to_string(e).expect("a ledger entry encodes");
        s.push('\n');
        self.ledger
            .write_all(s.as_bytes())
            .expect("write the ledger");
    }

    fn finished(&mut self, f: &Finished) {
        let mut s = serde_json::to_string(f).expect("a finished line encodes");
        s.push('\n');
        self.finished
            .write_all(s.as_bytes())
            .expect("write finished.jsonl");
    }
}

/// Producer settings.
struct Load {
    seconds: f64,
    /// Plain tasks per second.
    rate: f64,
    /// Chords per second.
    chords: f64,
    /// Chord members.
    width: i64,
    sleep_ms: u64,
    drain: Duration,
}

struct Producer {
    app: App,
    label: String,
    ledger: Ledger,
    stats: Stats,
    outstanding: Vec<TaskId>,
    seq: u64,
    last_progress: Instant,
    finished_total: u64,
    start: Instant,
    /// The load is still being sent (the watchdog's window).
    sending: bool,
}

impl Producer {
    fn key(&mut self, prefix: &str) -> String {
        self.seq += 1;
        format!("{prefix}{}", self.seq)
    }

    /// Sends `n` plain tasks; retries the same envelopes until the broker takes them (a
    /// restarting Redis, a full disk), so a send that returned Ok is the only kind recorded.
    fn send_tasks(&mut self, n: usize, load: &Load, give_up: Instant) {
        if n == 0 {
            return;
        }
        let mut batch = Vec::with_capacity(n);
        let mut entries = Vec::with_capacity(n);
        for _ in 0..n {
            let r = fastrand::f64();
            let (sig, expect, key) = if r < 0.50 {
                let key = self.key("n");
                (noop::s(key.clone()).into_signature(), Expect::Success, key)
            } else if r < 0.62 {
                let key = self.key("s");
                (
                    sleep::s(key.clone(), load.sleep_ms).into_signature(),
                    Expect::Success,
                    key,
                )
            } else if r < 0.95 {
                let key = self.key("f");
                (flaky::s(key.clone()).into_signature(), Expect::Success, key)
            } else {
                let key = self.key("d");
                (
                    doomed::s(key.clone()).into_signature(),
                    Expect::Failure,
                    key,
                )
            };
            let task = sig.task.clone();
            let env = self.app.envelope(sig);
            entries.push(Entry::Task {
                id: env.id,
                key,
                task,
                expect,
            });
            batch.push(env);
        }
        loop {
            match self.app.backend().broker().enqueue(&batch) {
                Ok(()) => break,
                Err(e) => {
                    self.stats.send_errors += 1;
                    if self.stats.send_errors % 20 == 1 {
                        eprintln!(
                            "[{}] send failed (retrying the same tasks): {e}",
                            self.label
                        );
                    }
                    if Instant::now() > give_up {
                        eprintln!(
                            "[{}] giving up on a batch of {n} after retrying to the end",
                            self.label
                        );
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
        }
        for e in &entries {
            self.ledger.sent(e);
            if let Entry::Task { id, .. } = e {
                self.outstanding.push(*id);
            }
        }
        self.stats.tasks_sent += n as u64;
    }

    fn send_chord(&mut self, load: &Load) {
        let key = self.key("c");
        let members: Vec<_> = (0..load.width)
            .map(|i| member::s(format!("{key}/{i}"), i + 1))
            .collect();
        let canvas = lovage::chord(members, chord_done::partial(key.clone()));
        match lovage::flow::send(&self.app, &canvas) {
            Ok(sent) => {
                let e = Entry::Chord {
                    id: sent.id(),
                    key,
                    members: sent.member_ids().to_vec(),
                    sum: (1..=load.width).sum(),
                };
                self.ledger.sent(&e);
                self.outstanding.push(sent.id());
                self.outstanding.extend(sent.member_ids());
                self.stats.chords_sent += 1;
            }
            Err(e) => {
                // A workflow's send writes its description first: sending the same one again
                // is refused, so a failed send is abandoned (and not checked) and a new one
                // goes next time.
                self.stats.send_errors += 1;
                self.stats.chords_abandoned += 1;
                if self.stats.chords_abandoned % 20 == 1 {
                    eprintln!("[{}] chord send failed (abandoned): {e}", self.label);
                }
            }
        }
    }

    /// Reads the records of what is outstanding; moves the final ones out.
    fn poll(&mut self) {
        let mut still = Vec::with_capacity(self.outstanding.len());
        let ids = std::mem::take(&mut self.outstanding);
        let mut newly = 0u64;
        for chunk in ids.chunks(500) {
            match self.app.records(chunk) {
                Ok(recs) => {
                    for (id, rec) in chunk.iter().zip(recs) {
                        match rec {
                            Some(r) if r.state.is_final() => {
                                newly += 1;
                                self.ledger.finished(&Finished {
                                    id: *id,
                                    state: r.state,
                                    attempts: r.attempts,
                                    at: Timestamp::now().as_millis(),
                                });
                            }
                            _ => still.push(*id),
                        }
                    }
                }
                // The broker is restarting or full: read these again next time.
                Err(_) => still.extend_from_slice(chunk),
            }
        }
        self.outstanding = still;
        let now = Instant::now();
        if newly > 0 || self.outstanding.is_empty() {
            self.last_progress = now;
        }
        let stall = now.duration_since(self.last_progress).as_secs_f64();
        if self.sending && stall > self.stats.longest_stall_s {
            self.stats.longest_stall_s = stall;
        }
        self.finished_total += newly;
        let minute = (now.duration_since(self.start).as_secs() / 60) as usize;
        if self.stats.finished_per_minute.len() <= minute {
            self.stats.finished_per_minute.resize(minute + 1, 0);
        }
        self.stats.finished_per_minute[minute] += newly;
    }

    fn progress(&self, what: &str) {
        let t = self.start.elapsed().as_secs();
        println!(
            "[{}] {:>2}m{:02}s {what}: sent {} tasks + {} chords, finished {}, outstanding {}, \
             send errors {}, longest stall {:.0}s",
            self.label,
            t / 60,
            t % 60,
            self.stats.tasks_sent,
            self.stats.chords_sent,
            self.finished_total,
            self.outstanding.len(),
            self.stats.send_errors,
            self.stats.longest_stall_s
        );
    }
}

fn produce(a: &Args) -> i32 {
    init_logging();
    let dir = PathBuf::from(a.need("--dir"));
    let app = connect(a.need("--broker"));
    let load = Load {
        seconds: a.num("--seconds", 60.0),
        rate: a.num("--rate", 10.0),
        chords: a.num("--chords", 1.0),
        width: a.num("--width", 4),
        sleep_ms: a.num("--sleep-ms", 3000),
        drain: Duration::from_secs(a.num("--drain", 180)),
    };
    let label = a.get("--label").unwrap_or("soak").to_owned();
    let stats = run_producer(&app, &dir, &label, &load, Duration::from_secs(60));
    if stats.drained {
        0
    } else {
        1
    }
}

/// Sends the load for `load.seconds` with the beat running, then waits for everything to
/// finish (up to `load.drain`); writes `stats.json` and returns what it measured.
fn run_producer(app: &App, dir: &Path, label: &str, load: &Load, report_every: Duration) -> Stats {
    std::fs::create_dir_all(dir).expect("the soak directory");
    let stop_beat = Arc::new(AtomicBool::new(false));
    let beat = {
        let backend = app.backend().clone();
        let stop = stop_beat.clone();
        let holder = format!("soak-{label}-{}", std::process::id());
        std::thread::spawn(move || {
            let config = lovage::beat::BeatConfig {
                holder,
                lock_ttl: Duration::from_secs(6),
            };
            // The beat retries the broker itself; an error here means it could not go on.
            while !stop.load(Ordering::SeqCst) {
                if let Err(e) = lovage::beat::run(&backend, &beat_schedule(), &config, &|| {
                    stop.load(Ordering::SeqCst)
                }) {
                    eprintln!("soak: beat stopped on an error, restarting it: {e}");
                    std::thread::sleep(Duration::from_secs(1));
                }
            }
        })
    };
    let start = Instant::now();
    let mut p = Producer {
        app: app.clone(),
        label: label.to_owned(),
        ledger: Ledger::open(dir),
        stats: Stats {
            label: label.to_owned(),
            started: Timestamp::now().as_millis(),
            beat_started: Timestamp::now().as_millis(),
            ..Stats::default()
        },
        outstanding: Vec::new(),
        seq: 0,
        last_progress: start,
        finished_total: 0,
        start,
        sending: true,
    };
    let send_until = start + Duration::from_secs_f64(load.seconds);
    let give_up = send_until + load.drain;
    let step = Duration::from_millis(100);
    let (mut owed_tasks, mut owed_chords) = (0.0f64, 0.0f64);
    let mut next_poll = start;
    let mut next_report = start + report_every;
    while Instant::now() < send_until {
        owed_tasks += load.rate * step.as_secs_f64();
        owed_chords += load.chords * step.as_secs_f64();
        let n = owed_tasks.floor() as usize;
        owed_tasks -= n as f64;
        p.send_tasks(n, load, give_up);
        while owed_chords >= 1.0 {
            owed_chords -= 1.0;
            p.send_chord(load);
        }
        let now = Instant::now();
        if now >= next_poll {
            p.poll();
            next_poll = now + Duration::from_secs(1);
        }
        if now >= next_report {
            p.progress("sending");
            next_report += report_every;
        }
        std::thread::sleep(step.saturating_sub(now.elapsed()));
    }
    p.stats.sending_ended = Timestamp::now().as_millis();
    p.sending = false;
    stop_beat.store(true, Ordering::SeqCst);
    let _ = beat.join();
    p.stats.beat_stopped = Timestamp::now().as_millis();
    println!(
        "[{label}] sending done; draining (up to {}s)",
        load.drain.as_secs()
    );
    let drain_until = Instant::now() + load.drain;
    let mut next_report = Instant::now() + Duration::from_secs(10);
    loop {
        p.poll();
        if p.outstanding.is_empty() {
            p.stats.drained = true;
            break;
        }
        if Instant::now() >= drain_until {
            break;
        }
        if Instant::now() >= next_report {
            p.progress("draining");
            next_report += Duration::from_secs(10);
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    p.stats.ended = Timestamp::now().as_millis();
    p.progress(if p.stats.drained {
        "drained"
    } else {
        "NOT drained"
    });
    let json = serde_json::to_string_pretty(&p.stats).expect("stats encode");
    std::fs::write(dir.join("stats.json"), json).expect("write stats.json");
    p.stats
}

// ---------------------------------------------------------------------------------------------
// The check.

/// One backend's outcome, in `summary.json`; `table` prints several side by side.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Summary {
    label: String,
    tasks_sent: u64,
    chords_sent: u64,
    finished: u64,
    lost: u64,
    missing_results: u64,
    left_in_queues: u64,
    wrong_results: u64,
    stale_overwrites: u64,
    unexplained_values: u64,
    reruns: u64,
    chord_callbacks_expected: u64,
    chord_callbacks_ran: u64,
    chord_callbacks_fired_twice: u64,
    dead_letters_expected: u64,
    dead_letters_found: u64,
    dead_letters_unexpected: u64,
    beat_ticks_scheduled: u64,
    beat_ticks_done: u64,
    beat_longest_gap_s: f64,
    send_errors: u64,
    kills: u64,
    redis_restarts: String,
    net_cuts: String,
    clock_steps: String,
    disk_full: String,
    rss_first_quarter_kb: String,
    rss_last_quarter_kb: String,
    rss_change_pct: String,
    longest_stall_s: f64,
    failed: Vec<String>,
}

fn read_lines<T: serde::de::DeserializeOwned>(path: &Path) -> Vec<T> {
    let Ok(f) = std::fs::File::open(path) else {
        return Vec::new();
    };
    // A line cut short by a kill -9 mid-write is skipped.
    std::io::BufReader::new(f)
        .lines()
        .map_while(Result::ok)
        .filter_map(|l| serde_json::from_str(&l).ok())
        .collect()
}

/// Reads with retries: the check may start while the broker comes back.
fn with_retries<T>(what: &str, mut f: impl FnMut() -> Result<T, lovage::BrokerError>) -> T {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match f() {
            Ok(v) => return v,
            Err(e) if Instant::now() < deadline => {
                eprintln!("soak check: {what}: {e}; retrying");
                std::thread::sleep(Duration::from_millis(500));
            }
            Err(e) => die(&format!("{what}: {e}")),
        }
    }
}

fn records(app: &App, ids: &[TaskId]) -> HashMap<TaskId, lovage::ResultRecord> {
    let mut out = HashMap::with_capacity(ids.len());
    for chunk in ids.chunks(500) {
        let recs = with_retries("reading results", || app.records(chunk));
        for (id, rec) in chunk.iter().zip(recs) {
            if let Some(r) = rec {
                out.insert(*id, r);
            }
        }
    }
    out
}

/// The fault log the script writes: `<unix ms> <kind> <detail...>`; `skip <kind> <why>` for a
/// fault that cannot run here.
fn faults(dir: &Path) -> (HashMap<String, u64>, HashMap<String, String>) {
    let mut counts = HashMap::new();
    let mut skipped = HashMap::new();
    if let Ok(text) = std::fs::read_to_string(dir.join("faults.log")) {
        for line in text.lines() {
            let mut parts = line.split_whitespace().skip(1);
            match parts.next() {
                Some(how @ ("skip" | "na")) => {
                    if let Some(kind) = parts.next() {
                        let why = parts.collect::<Vec<_>>().join(" ");
                        let shown = if how == "na" {
                            format!("n/a {why}")
                        } else {
                            format!("SKIPPED: {why}")
                        };
                        skipped.insert(kind.to_owned(), shown);
                    }
                }
                Some(kind) => *counts.entry(kind.to_owned()).or_insert(0) += 1,
                None => {}
            }
        }
    }
    (counts, skipped)
}

/// RSS samples `<unix ms> <slot> <kB>`: the sum over slots per sampling round, first quarter
/// of the run against the last.
fn rss(dir: &Path) -> Option<(f64, f64)> {
    let text = std::fs::read_to_string(dir.join("rss.log")).ok()?;
    let mut rounds: BTreeMap<i64, f64> = BTreeMap::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if let [t, _slot, kb] = f[..] {
            if let (Ok(t), Ok(kb)) = (t.parse::<i64>(), kb.parse::<f64>()) {
                *rounds.entry(t).or_insert(0.0) += kb;
            }
        }
    }
    let (first, last) = (*rounds.keys().next()?, *rounds.keys().last()?);
    let span = (last - first) as f64;
    if span <= 0.0 {
        return None;
    }
    let mean = |lo: f64, hi: f64| {
        let v: Vec<f64> = rounds
            .iter()
            .filter(|(t, _)| {
                let x = (**t - first) as f64 / span;
                x >= lo && x <= hi
            })
            .map(|(_, kb)| *kb)
            .collect();
        v.iter().sum::<f64>() / v.len().max(1) as f64
    };
    Some((mean(0.0, 0.25), mean(0.75, 1.0)))
}

/// Checks a stored value against the run marks (`Err`: why it is not what a run returned).
type ValueCheck<'a> = dyn Fn(&Judge, &[u8]) -> Result<(), String> + 'a;

/// One row of the table: its name and how a summary shows it.
type Row = (&'static str, Box<dyn Fn(&Summary) -> String>);

/// What the check reads once and judges each task against.
struct Judge {
    recs: HashMap<TaskId, lovage::ResultRecord>,
    runs: HashMap<String, Vec<RunLine>>,
    /// The first final record the producer read for an id: its state and attempts.
    first_final: HashMap<TaskId, (TaskState, u32)>,
    problems: Vec<String>,
}

impl Judge {
    /// Keeps the first problems found, to print (the counts say how many there were).
    fn note(&mut self, what: String) {
        if self.problems.len() < 20 {
            self.problems.push(what);
        }
    }

    fn ok_runs(&self, key: &str) -> Vec<&RunLine> {
        self.runs
            .get(key)
            .map(|v| v.iter().filter(|r| r.ok).collect())
            .unwrap_or_default()
    }

    /// A stored `Run` value: for this key, and from a run that left its mark.
    fn run_value(&self, key: &str, bytes: &[u8]) -> Result<Run, String> {
        let run: Run =
            serde_json::from_slice(bytes).map_err(|e| format!("value does not decode: {e}"))?;
        if run.key != key {
            return Err(format!("value is for key {}", run.key));
        }
        if !self.ok_runs(key).iter().any(|r| r.nonce == run.nonce) {
            return Err(format!("run {} left no mark", run.nonce));
        }
        Ok(run)
    }

    /// One task expected to succeed: judged by its record, its runs and what the producer saw.
    fn success(&mut self, s: &mut Summary, id: TaskId, key: &str, value: &ValueCheck<'_>) {
        let ok_runs = self.ok_runs(key).len();
        let seen_success = self
            .first_final
            .get(&id)
            .is_some_and(|(state, _)| *state == TaskState::Success);
        if ok_runs > 1 {
            s.reruns += 1;
        }
        let Some(r) = self.recs.get(&id) else {
            s.missing_results += 1;
            self.note(format!("{key} ({id}): no result record at the end"));
            return;
        };
        let seen_attempts = self.first_final.get(&id).map_or(0, |(_, a)| *a);
        if r.state == TaskState::Success && r.attempts < seen_attempts {
            // A newer attempt's result was read, then an older attempt's replaced it.
            s.stale_overwrites += 1;
            s.finished += 1;
            let what = format!(
                "{key} ({id}): SUCCESS of attempt {} replaced the one of attempt {seen_attempts} read before (worker {:?})",
                r.attempts, r.worker
            );
            self.note(what);
        } else if r.state == TaskState::Success {
            s.finished += 1;
            let checked = match r.value.as_deref() {
                Some(b) => value(self, b),
                None => Err("no value".into()),
            };
            if let Err(why) = checked {
                s.unexplained_values += 1;
                self.note(format!("{key} ({id}): SUCCESS, but {why}"));
            }
        } else if ok_runs > 0 || seen_success {
            s.stale_overwrites += 1;
            if !r.state.is_final() {
                // Nothing will run it again: also without a final result.
                s.missing_results += 1;
            }
            let what = format!(
                "{key} ({id}): {} (attempts {}, worker {:?}, error {:?}) although {}",
                r.state,
                r.attempts,
                r.worker,
                r.error.as_ref().map(|e| &e.message),
                if seen_success {
                    "SUCCESS was read before"
                } else {
                    "a run succeeded"
                }
            );
            self.note(what);
        } else if r.state.is_final() {
            s.wrong_results += 1;
            let what = format!("{key} ({id}): ended {} (error {:?})", r.state, r.error);
            self.note(what);
        } else {
            s.missing_results += 1;
            let what = format!("{key} ({id}): still {} at the end", r.state);
            self.note(what);
        }
    }
}

fn check(a: &Args) -> i32 {
    init_logging();
    let dir = PathBuf::from(a.need("--dir"));
    let app = connect(a.need("--broker"));
    let label = a.get("--label").unwrap_or("soak").to_owned();
    let s = judge(&app, &dir, &label);
    let json = serde_json::to_string_pretty(&s).expect("summary encodes");
    std::fs::write(dir.join("summary.json"), json).expect("write summary.json");
    print_table(&[s]) as i32
}

/// Compares the ledger with the result store, the run marks and the dead letters.
fn judge(app: &App, dir: &Path, label: &str) -> Summary {
    let ledger: Vec<Entry> = read_lines(&dir.join("ledger.jsonl"));
    let stats: Stats = std::fs::read(dir.join("stats.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    let first_final: HashMap<TaskId, (TaskState, u32)> =
        read_lines::<Finished>(&dir.join("finished.jsonl"))
            .into_iter()
            .map(|f| (f.id, (f.state, f.attempts)))
            .collect();
    let mut runs: HashMap<String, Vec<RunLine>> = HashMap::new();
    for r in read_lines::<RunLine>(&marks_dir(dir).join("runs.jsonl")) {
        runs.entry(r.key.clone()).or_default().push(r);
    }
    let mut s = Summary {
        label: label.to_owned(),
        tasks_sent: stats.tasks_sent,
        chords_sent: stats.chords_sent,
        send_errors: stats.send_errors,
        longest_stall_s: stats.longest_stall_s,
        ..Summary::default()
    };
    let mut ids = Vec::new();
    for e in &ledger {
        match e {
            Entry::Task { id, .. } => ids.push(*id),
            Entry::Chord { id, members, .. } => {
                ids.push(*id);
                ids.extend(members);
            }
        }
    }
    let mut j = Judge {
        recs: records(app, &ids),
        runs,
        first_final,
        problems: Vec::new(),
    };
    let letters = with_retries("dead letters", || app.dead_letters(1_000_000));
    let lettered: HashSet<TaskId> = letters.iter().map(|l| l.envelope.id).collect();
    let mut doomed = HashSet::new();
    let mut expected_ids = HashSet::new();
    for e in &ledger {
        match e {
            Entry::Task {
                id, key, expect, ..
            } => {
                expected_ids.insert(*id);
                match expect {
                    Expect::Success => {
                        j.success(&mut s, *id, key, &|j, b| j.run_value(key, b).map(|_| ()))
                    }
                    Expect::Failure => {
                        doomed.insert(*id);
                        let problem = match j.recs.get(id) {
                            Some(r) if r.state == TaskState::Failure => {
                                s.finished += 1;
                                None
                            }
                            Some(r) if r.state.is_final() => {
                                s.wrong_results += 1;
                                Some(format!("{key} ({id}): ended {}, expected FAILURE", r.state))
                            }
                            Some(r) if lettered.contains(id) => {
                                // Dead-lettered after its FAILURE was stored: a stale RETRY
                                // replaced that FAILURE.
                                s.stale_overwrites += 1;
                                s.missing_results += 1;
                                Some(format!(
                                    "{key} ({id}): {} (attempts {}, worker {:?}) although it is in the dead letters",
                                    r.state, r.attempts, r.worker
                                ))
                            }
                            other => {
                                s.missing_results += 1;
                                Some(format!(
                                    "{key} ({id}): {} at the end, expected FAILURE",
                                    other.map_or("no record".to_owned(), |r| r.state.to_string())
                                ))
                            }
                        };
                        if let Some(p) = problem {
                            j.note(p);
                        }
                    }
                }
            }
            Entry::Chord {
                id,
                key,
                members,
                sum,
            } => {
                expected_ids.insert(*id);
                s.chord_callbacks_expected += 1;
                for (i, m) in members.iter().enumerate() {
                    expected_ids.insert(*m);
                    let mkey = format!("{key}/{i}");
                    let want = i as i64 + 1;
                    j.success(&mut s, *m, &mkey, &|_, b| {
                        let v: i64 = serde_json::from_slice(b).map_err(|e| e.to_string())?;
                        if v == want {
                            Ok(())
                        } else {
                            Err(format!("member value {v}, expected {want}"))
                        }
                    });
                }
                j.success(&mut s, *id, key, &|j, b| {
                    let run = j.run_value(key, b)?;
                    if run.sum == Some(*sum) {
                        Ok(())
                    } else {
                        Err(format!("callback summed {:?}, expected {sum}", run.sum))
                    }
                });
                let ran = j.ok_runs(key).len() as u64;
                if ran > 0 {
                    s.chord_callbacks_ran += 1;
                }
                // Each delivery may run it (at least once); more runs than deliveries means the
                // callback was sent more than once.
                // The record's attempts, or those of the first final record read if higher
                // (an older attempt's record can replace a newer one: then it is a stale
                // overwrite as well).
                let seen = j.first_final.get(id).map_or(0, |(_, a)| u64::from(*a));
                let delivered = j
                    .recs
                    .get(id)
                    .map_or(0, |r| u64::from(r.attempts))
                    .max(seen);
                if ran > delivered.max(1) {
                    s.chord_callbacks_fired_twice += 1;
                    j.note(format!(
                        "chord {key} ({id}): callback ran {ran} times in {delivered} deliveries"
                    ));
                }
            }
        }
    }
    // Dead letters: exactly the doomed ones (each once).
    s.dead_letters_expected = doomed.len() as u64;
    let mut found = HashSet::new();
    for l in &letters {
        let id = l.envelope.id;
        if doomed.contains(&id) {
            found.insert(id);
        } else if expected_ids.contains(&id) {
            s.dead_letters_unexpected += 1;
            j.note(format!(
                "unexpected dead letter {} ({id}): {}",
                l.envelope.task, l.error.message
            ));
        }
    }
    s.dead_letters_found = found.len() as u64;
    // Lost: no final record, and nothing left in any queue to give it one.
    let stats_now = with_retries("queue stats", || app.queues());
    s.left_in_queues = stats_now
        .iter()
        .map(|q| q.ready + q.scheduled + q.reserved)
        .sum();
    if s.left_in_queues == 0 {
        s.lost = s.missing_results;
    }
    // The beat: each tick of the window scheduled, done, gaps only as long as an outage.
    let entry = &beat_schedule().entries[0];
    let from = (stats.beat_started / BEAT_EVERY_MS + 2) * BEAT_EVERY_MS;
    let to = stats.beat_stopped - BEAT_EVERY_MS;
    let ticks: Vec<i64> = (0..)
        .map(|i| from + i * BEAT_EVERY_MS)
        .take_while(|t| *t <= to)
        .collect();
    let tick_ids: Vec<TaskId> = ticks
        .iter()
        .map(|t| entry.tick_id(Timestamp::from_millis(*t)))
        .collect();
    let tick_recs = records(app, &tick_ids);
    s.beat_ticks_scheduled = ticks.len() as u64;
    let mut last_done = from - BEAT_EVERY_MS;
    for (t, id) in ticks.iter().zip(&tick_ids) {
        match tick_recs.get(id) {
            Some(r) if r.state == TaskState::Success => {
                s.beat_ticks_done += 1;
                s.beat_longest_gap_s = s.beat_longest_gap_s.max((t - last_done) as f64 / 1000.0);
                last_done = *t;
            }
            Some(r) => j.note(format!("beat tick at {t} ({id}): {}", r.state)),
            None => {}
        }
    }
    if !ticks.is_empty() {
        s.beat_longest_gap_s = s.beat_longest_gap_s.max((to - last_done) as f64 / 1000.0);
    }
    // What the script injected.
    let (counts, skipped) = faults(dir);
    let injected = dir.join("faults.log").exists();
    let count = |kind: &str| -> String {
        match skipped.get(kind) {
            Some(shown) => shown.clone(),
            None if injected => counts.get(kind).copied().unwrap_or(0).to_string(),
            None => "n/a".into(),
        }
    };
    s.kills = counts.get("kill").copied().unwrap_or(0);
    s.redis_restarts = count("redis_restart");
    s.net_cuts = count("net_cut");
    s.clock_steps = count("clock_step");
    s.disk_full = count("disk_full");
    let mut failed = Vec::new();
    match rss(dir) {
        Some((first, last)) => {
            let change = (last - first) / first.max(1.0) * 100.0;
            s.rss_first_quarter_kb = format!("{first:.0}");
            s.rss_last_quarter_kb = format!("{last:.0}");
            s.rss_change_pct = format!("{change:+.1}");
            // Growth is what a leak looks like; a restarted worker makes the sum drop.
            if change > 10.0 {
                failed.push(format!("worker RSS grew {change:.1}% (more than 10%)"));
            }
        }
        None => {
            s.rss_first_quarter_kb = "n/a".into();
            s.rss_last_quarter_kb = "n/a".into();
            s.rss_change_pct = "n/a".into();
        }
    }
    let mut fail = |cond: bool, what: String| {
        if cond {
            failed.push(what);
        }
    };
    fail(ledger.is_empty(), "nothing was sent".into());
    fail(
        !stats.drained,
        "the producer did not see every task finish".into(),
    );
    fail(s.lost > 0, format!("{} tasks lost", s.lost));
    fail(
        s.missing_results > 0,
        format!("{} tasks without a final result", s.missing_results),
    );
    fail(
        s.left_in_queues > 0,
        format!("{} tasks still in the queues", s.left_in_queues),
    );
    fail(
        s.wrong_results > 0,
        format!("{} tasks ended in the wrong state", s.wrong_results),
    );
    fail(
        s.stale_overwrites > 0,
        format!("{} results overwritten by a stale run", s.stale_overwrites),
    );
    fail(
        s.unexplained_values > 0,
        format!("{} values from no known run", s.unexplained_values),
    );
    fail(
        s.chord_callbacks_ran != s.chord_callbacks_expected,
        format!(
            "chord callbacks ran for {} of {}",
            s.chord_callbacks_ran, s.chord_callbacks_expected
        ),
    );
    fail(
        s.chord_callbacks_fired_twice > 0,
        format!(
            "{} chord callbacks ran more often than they were delivered",
            s.chord_callbacks_fired_twice
        ),
    );
    fail(
        s.dead_letters_found != s.dead_letters_expected,
        format!(
            "{} of {} expected dead letters found",
            s.dead_letters_found, s.dead_letters_expected
        ),
    );
    fail(
        s.dead_letters_unexpected > 0,
        format!("{} unexpected dead letters", s.dead_letters_unexpected),
    );
    fail(
        s.beat_ticks_scheduled > 0 && s.beat_ticks_done == 0,
        "no beat tick ran".into(),
    );
    fail(
        s.beat_longest_gap_s > 30.0,
        format!("beat ticks missing for {:.0}s", s.beat_longest_gap_s),
    );
    fail(
        s.longest_stall_s >= 60.0,
        format!("no progress for {:.0}s", s.longest_stall_s),
    );
    for p in &j.problems {
        println!("[{label}] {p}");
    }
    s.failed = failed;
    s
}

fn marks_dir(dir: &Path) -> PathBuf {
    dir.join("marks")
}

fn table(paths: &[String]) -> i32 {
    let sums: Vec<Summary> = paths
        .iter()
        .map(|p| {
            std::fs::read(p)
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok())
                .unwrap_or_else(|| Summary {
                    label: p.clone(),
                    failed: vec!["no summary (the check did not run)".into()],
                    ..Summary::default()
                })
        })
        .collect();
    print_table(&sums) as i32
}

/// Prints the summaries side by side; true when any failed.
fn print_table(sums: &[Summary]) -> bool {
    let rows: Vec<Row> = vec![
        (
            "tasks sent (+ chords)",
            Box::new(|s| format!("{} + {}", s.tasks_sent, s.chords_sent)),
        ),
        ("finished as expected", Box::new(|s| s.finished.to_string())),
        ("lost", Box::new(|s| s.lost.to_string())),
        (
            "missing results",
            Box::new(|s| s.missing_results.to_string()),
        ),
        ("left in queues", Box::new(|s| s.left_in_queues.to_string())),
        (
            "wrong final state",
            Box::new(|s| s.wrong_results.to_string()),
        ),
        (
            "stale overwrites",
            Box::new(|s| s.stale_overwrites.to_string()),
        ),
        (
            "values from no run",
            Box::new(|s| s.unexplained_values.to_string()),
        ),
        (
            "ran more than once (ok)",
            Box::new(|s| s.reruns.to_string()),
        ),
        (
            "chord callbacks exp/ran",
            Box::new(|s| format!("{}/{}", s.chord_callbacks_expected, s.chord_callbacks_ran)),
        ),
        (
            "chord callbacks ran > delivered",
            Box::new(|s| s.chord_callbacks_fired_twice.to_string()),
        ),
        (
            "dead letters exp/found",
            Box::new(|s| format!("{}/{}", s.dead_letters_expected, s.dead_letters_found)),
        ),
        (
            "dead letters unexpected",
            Box::new(|s| s.dead_letters_unexpected.to_string()),
        ),
        (
            "beat ticks sched/done",
            Box::new(|s| format!("{}/{}", s.beat_ticks_scheduled, s.beat_ticks_done)),
        ),
        (
            "beat longest gap (s)",
            Box::new(|s| format!("{:.0}", s.beat_longest_gap_s)),
        ),
        (
            "send errors (retried)",
            Box::new(|s| s.send_errors.to_string()),
        ),
        ("worker kills (-9)", Box::new(|s| s.kills.to_string())),
        (
            "Redis restarts (-9)",
            Box::new(|s| s.redis_restarts.clone()),
        ),
        ("network cuts", Box::new(|s| s.net_cuts.clone())),
        ("clock steps", Box::new(|s| s.clock_steps.clone())),
        ("disk-full episodes", Box::new(|s| s.disk_full.clone())),
        (
            "RSS first quarter (kB)",
            Box::new(|s| s.rss_first_quarter_kb.clone()),
        ),
        (
            "RSS last quarter (kB)",
            Box::new(|s| s.rss_last_quarter_kb.clone()),
        ),
        ("RSS change (%)", Box::new(|s| s.rss_change_pct.clone())),
        (
            "longest stall (s)",
            Box::new(|s| format!("{:.0}", s.longest_stall_s)),
        ),
        (
            "verdict",
            Box::new(|s| {
                if s.failed.is_empty() {
                    "PASS".into()
                } else {
                    "FAIL".into()
                }
            }),
        ),
    ];
    let width = 32;
    let col = sums
        .iter()
        .flat_map(|s| rows.iter().map(move |(_, f)| f(s).len()))
        .chain(sums.iter().map(|s| s.label.len()))
        .max()
        .unwrap_or(8)
        .max(8);
    print!("{:<width$}", "");
    for s in sums {
        print!(" | {:<col$}", s.label);
    }
    println!();
    println!("{}", "-".repeat(width + sums.len() * (col + 3)));
    for (name, f) in &rows {
        print!("{name:<width$}");
        for s in sums {
            print!(" | {:<col$}", f(s));
        }
        println!();
    }
    let mut any = false;
    for s in sums {
        for why in &s.failed {
            println!("FAILED [{}]: {why}", s.label);
            any = true;
        }
    }
    any
}

// ---------------------------------------------------------------------------------------------
// The quick run (CI): every part in one process on a temporary SQLite broker, no faults.

fn quick() -> i32 {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let marks = marks_dir(dir.path());
    std::fs::create_dir_all(marks.join("flaky")).expect("the marks directory");
    let _ = MARKS.set(marks);
    let url = format!("sqlite://{}", dir.path().join("soak.db").display());
    let app = App::connect(&url).expect("open the broker");
    // A longer lease than the soak's: with no faults injected, a renewal late on a busy CI
    // machine should not make a task run twice.
    let a = Args(vec![
        "--concurrency".into(),
        "4".into(),
        "--lease".into(),
        "4s".into(),
    ]);
    let mut workers = Vec::new();
    for _ in 0..2 {
        let w = Worker::new(app.backend().clone(), worker_config(&a)).expect("start a worker");
        let stop = w.shutdown_handle();
        workers.push((stop, std::thread::spawn(move || w.run())));
    }
    let load = Load {
        seconds: 6.0,
        rate: 25.0,
        chords: 4.0,
        width: 3,
        sleep_ms: 4500,
        drain: Duration::from_secs(60),
    };
    run_producer(&app, dir.path(), "quick", &load, Duration::from_secs(1));
    for (stop, _) in &workers {
        stop.graceful();
    }
    for (_, t) in workers {
        let _ = t.join();
    }
    let s = judge(&app, dir.path(), "sqlite (quick)");
    let failed = print_table(&[s]);
    // The check must be able to fail: a stale RETRY written over a stored SUCCESS, and a task
    // in the ledger that was never sent, are each caught.
    let ledger: Vec<Entry> = read_lines(&dir.path().join("ledger.jsonl"));
    let victim = ledger
        .iter()
        .find_map(|e| match e {
            Entry::Task {
                id,
                expect: Expect::Success,
                ..
            } => Some(*id),
            _ => None,
        })
        .expect("a task expected to succeed");
    let mut stale = app
        .record(victim)
        .expect("read")
        .expect("the victim's record");
    stale.state = TaskState::Retry;
    stale.value = None;
    // The store itself refuses it (an unfinished record never replaces a finished one)...
    app.backend().results().store(&[stale]).expect("store");
    let refused = app
        .record(victim)
        .expect("read")
        .is_some_and(|r| r.state == TaskState::Success);
    println!(
        "self-check: the store {} a stale RETRY over a SUCCESS",
        if refused { "refused" } else { "TOOK" }
    );
    // ...so it is written past the store, straight into the file, as a backend without that
    // rule would have left it.
    let file = rusqlite::Connection::open(dir.path().join("soak.db")).expect("open the file");
    file.busy_timeout(Duration::from_secs(10))
        .expect("busy timeout");
    file.execute(
        "UPDATE results SET state = 'RETRY', value = NULL WHERE id = ?1",
        [victim.to_string()],
    )
    .expect("write the stale record");
    drop(file);
    let mut never_sent = Ledger::open(dir.path());
    never_sent.sent(&Entry::Task {
        id: TaskId::new(),
        key: "never-sent".into(),
        task: noop::NAME.into(),
        expect: Expect::Success,
    });
    drop(never_sent);
    let tampered = judge(&app, dir.path(), "tampered");
    // The RETRY leaves the victim without a final result too.
    let caught = tampered.stale_overwrites == 1 && tampered.missing_results == 2;
    println!(
        "self-check: a stale RETRY over a SUCCESS and a task never sent are {}",
        if caught { "caught" } else { "NOT caught" }
    );
    i32::from(failed || !caught || !refused)
}
