//! `lovage beat`: schedules, `--list`, and two beat processes sharing one broker.

mod common;

use common::{output_text, Killed};

use std::process::Command;
use std::time::{Duration, Instant};

use lovage::{App, Timestamp};

const BIN: &str = env!("CARGO_BIN_EXE_lovage");

fn lovage(url: &str, args: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.args(args)
        .env("LOVAGE_BROKER", url)
        .env("LOVAGE_LOG", "warn");
    c
}

#[test]
fn list_shows_each_entry_and_its_next_run() {
    let dir = tempfile::tempdir().unwrap();
    let schedule = dir.path().join("beat.toml");
    std::fs::write(
        &schedule,
        r#"
timezone = "Europe/Paris"

[[entry]]
name = "heartbeat"
task = "lovage.noop"
every = "10s"

[[entry]]
name = "report"
task = "lovage.echo"
args = ["daily"]
cron = "30 8 * * mon-fri"
queue = "reports"
resources = "gpu=0.5, mem=2"
"#,
    )
    .unwrap();
    let url = format!("sqlite://{}", dir.path().join("b.db").display());
    let out = lovage(
        &url,
        &["beat", "--schedule", schedule.to_str().unwrap(), "--list"],
    )
    .output()
    .unwrap();
    assert!(out.status.success(), "{}", output_text(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("heartbeat") && text.contains("every 10s"),
        "{text}"
    );
    assert!(
        text.contains("cron 30 8 * * mon-fri (Europe/Paris)"),
        "{text}"
    );
    assert!(text.contains("gpu=0.5,mem=2"), "{text}");
    let out = lovage(
        &url,
        &[
            "beat",
            "--schedule",
            schedule.to_str().unwrap(),
            "--list",
            "--json",
        ],
    )
    .output()
    .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v[1]["queue"], "reports");
    assert_eq!(v[1]["resources"], "gpu=0.5,mem=2");
    assert_eq!(v[0]["resources"], "");
    let next = Timestamp::parse_rfc3339(v[0]["next_run"].as_str().unwrap()).unwrap();
    assert_eq!(
        next.as_millis() % 10_000,
        0,
        "an interval ticks on its multiples"
    );

    std::fs::write(
        &schedule,
        "[[entry]]\nname = \"x\"\ntask = \"t\"\ncron = \"61 * * * *\"\n",
    )
    .unwrap();
    let out = lovage(
        &url,
        &["beat", "--schedule", schedule.to_str().unwrap(), "--list"],
    )
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", output_text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("entry \"x\"") && err.contains("minute"),
        "{err}"
    );
}

/// Two beats: each tick is sent once; the leader (the one that says so in its log) is killed
/// with -9 and the follower takes over within the lock's TTL.
#[test]
fn two_beats_send_each_tick_once_and_survive_a_kill() {
    let dir = tempfile::tempdir().unwrap();
    two_beats(
        &dir,
        &format!("sqlite://{}", dir.path().join("b.db").display()),
    );
}

#[test]
fn two_beats_send_each_tick_once_and_survive_a_kill_on_redis() {
    let dir = tempfile::tempdir().unwrap();
    let redis = common::RedisPrefix::new();
    two_beats(&dir, &redis.url());
}

/// What a beat logs when it becomes the leader.
const LEADING: &str = "leading: sending the schedule's ticks";

/// How many times the log at `path` says its beat became the leader.
fn times_led(path: &std::path::Path) -> usize {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .matches(LEADING)
        .count()
}

fn two_beats(dir: &tempfile::TempDir, url: &str) {
    let schedule = dir.path().join("beat.toml");
    std::fs::write(
        &schedule,
        "[[entry]]\nname = \"tick\"\ntask = \"lovage.noop\"\nevery = \"500ms\"\nqueue = \"ticks\"\n",
    )
    .unwrap();
    // Each beat logs (info) to a file of its own: the one that says it leads is the leader.
    let beat = |log: &std::path::Path| {
        let mut c = lovage(
            url,
            &[
                "beat",
                "--schedule",
                schedule.to_str().unwrap(),
                "--lock-ttl",
                "1s",
            ],
        );
        c.env("LOVAGE_LOG", "info")
            .stderr(std::fs::File::create(log).unwrap());
        Killed(c.spawn().unwrap())
    };
    let logs = [dir.path().join("beat-0.log"), dir.path().join("beat-1.log")];
    let started = Instant::now();
    let mut beats = [beat(&logs[0]), beat(&logs[1])];
    std::thread::sleep(Duration::from_secs(3));
    let led: Vec<usize> = logs.iter().map(|l| times_led(l)).collect();
    assert_eq!(
        led.iter().sum::<usize>(),
        1,
        "exactly one beat leads: {led:?}"
    );
    let leader = led.iter().position(|n| *n == 1).unwrap();
    let follower = 1 - leader;
    let killed_at = Timestamp::now();
    beats[leader].kill().unwrap(); // -9: no unlock, the lock has to lapse
    beats[leader].wait().unwrap();
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(
        times_led(&logs[follower]),
        1,
        "the follower took over: {}",
        std::fs::read_to_string(&logs[follower]).unwrap_or_default()
    );
    let b = &mut beats[follower];
    unsafe { libc::kill(b.id() as i32, libc::SIGTERM) };
    let status = b.wait().unwrap();
    assert!(status.success(), "beat exits cleanly on SIGTERM: {status}");
    let elapsed = started.elapsed();

    let app = App::connect(url).unwrap();
    let got = app
        .backend()
        .broker()
        .reserve(
            &["ticks".to_owned()],
            1000,
            Duration::from_secs(60),
            Duration::ZERO,
        )
        .unwrap();
    let mut ticks: Vec<i64> = got.iter().map(|d| d.envelope.created.as_millis()).collect();
    ticks.sort();
    let sent = ticks.len();
    ticks.dedup();
    assert_eq!(ticks.len(), sent, "a tick was sent twice: {ticks:?}");
    assert!(ticks.iter().all(|t| t % 500 == 0), "{ticks:?}");
    // Never more ticks than time allows (two beats did not both send), and some from after
    // the kill (the follower took over).
    let most = (elapsed.as_millis() / 500) as usize + 1;
    assert!(sent <= most, "{sent} ticks in {elapsed:?}: {ticks:?}");
    let after_kill = ticks.iter().filter(|t| **t > killed_at.as_millis()).count();
    assert!(after_kill >= 3, "ticks went on after the kill: {ticks:?}");
    // The longest silence is bounded by the lock's TTL plus a tick or two (generous bound).
    let gap = ticks.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(0);
    assert!(gap <= 3_000, "a gap of {gap} ms: {ticks:?}");
}

/// A beat stopped for a while and started again: an entry with `missed = "once"` sends the
/// latest tick it missed, once; one with `missed = "skip"` sends none. Each entry's last tick
/// is kept in the broker, so the second beat process knows what the first one sent.
#[test]
fn a_restarted_beat_catches_up_once_or_skips() {
    let dir = tempfile::tempdir().unwrap();
    catch_up_after_downtime(
        &dir,
        &format!("sqlite://{}", dir.path().join("b.db").display()),
    );
}

#[test]
fn a_restarted_beat_catches_up_once_or_skips_on_redis() {
    let dir = tempfile::tempdir().unwrap();
    let redis = common::RedisPrefix::new();
    catch_up_after_downtime(&dir, &redis.url());
}

/// The ticks waiting in `queue`, as their times (ms), sorted.
fn ticks_in(app: &App, queue: &str) -> Vec<i64> {
    let got = app
        .backend()
        .broker()
        .reserve(
            &[queue.to_owned()],
            1000,
            Duration::from_secs(60),
            Duration::ZERO,
        )
        .unwrap();
    let mut ticks: Vec<i64> = got.iter().map(|d| d.envelope.created.as_millis()).collect();
    ticks.sort();
    ticks
}

fn sleep_until(t: Timestamp) {
    let ms = t.as_millis() - Timestamp::now().as_millis();
    if ms > 0 {
        std::thread::sleep(Duration::from_millis(ms as u64));
    }
}

fn catch_up_after_downtime(dir: &tempfile::TempDir, url: &str) {
    const EVERY: i64 = 2_000;
    let schedule = dir.path().join("beat.toml");
    std::fs::write(
        &schedule,
        "[[entry]]\nname = \"caught\"\ntask = \"lovage.noop\"\nevery = \"2s\"\nqueue = \"caught\"\nmissed = \"once\"\n\
         [[entry]]\nname = \"skipped\"\ntask = \"lovage.noop\"\nevery = \"2s\"\nqueue = \"skipped\"\nmissed = \"skip\"\n",
    )
    .unwrap();
    let beat = |log: &std::path::Path| {
        let mut c = lovage(url, &["beat", "--schedule", schedule.to_str().unwrap()]);
        c.env("LOVAGE_LOG", "info")
            .stderr(std::fs::File::create(log).unwrap());
        Killed(c.spawn().unwrap())
    };
    let stop = |b: &mut Killed| {
        unsafe { libc::kill(b.id() as i32, libc::SIGTERM) };
        let status = b.wait().unwrap();
        assert!(status.success(), "beat exits cleanly on SIGTERM: {status}");
    };
    let app = App::connect(url).unwrap();

    // The first beat runs until each entry has ticked.
    let mut first = beat(&dir.path().join("beat-1.log"));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let stats = app.backend().admin().stats().unwrap();
        let ticked = |q: &str| stats.iter().any(|s| s.queue == q && s.ready > 0);
        if ticked("caught") && ticked("skipped") {
            break;
        }
        assert!(Instant::now() < deadline, "the first beat never ticked");
        std::thread::sleep(Duration::from_millis(20));
    }
    stop(&mut first);
    let stopped = Timestamp::now();
    let before = [ticks_in(&app, "caught"), ticks_in(&app, "skipped")];

    // Down for at least two ticks; the second beat starts just after a tick it missed, so it
    // leads long before the next one (a start is well under 1.9 s).
    let missed = (stopped.as_millis() + 5_000).div_euclid(EVERY) * EVERY + EVERY;
    let started = Timestamp::from_millis(missed + 100);
    sleep_until(started);
    let log = dir.path().join("beat-2.log");
    let mut second = beat(&log);
    let deadline = Instant::now() + Duration::from_secs(30);
    while times_led(&log) == 0 {
        assert!(Instant::now() < deadline, "the second beat never led");
        std::thread::sleep(Duration::from_millis(10));
    }
    let led_by = Timestamp::now();
    assert!(
        led_by.as_millis() < missed + EVERY,
        "the second beat took until {led_by} to lead, past the next tick at {}: the test \
         cannot tell a caught-up tick from a regular one",
        Timestamp::from_millis(missed + EVERY)
    );
    // Then it follows the schedule for a tick or two.
    sleep_until(Timestamp::from_millis(missed + 2 * EVERY + 500));
    stop(&mut second);

    for (queue, before) in ["caught", "skipped"].into_iter().zip(before) {
        let last = *before.last().unwrap();
        assert!(
            last <= stopped.as_millis() && missed - last >= 2 * EVERY,
            "{queue}: the first beat's last tick {last}: at least two ticks were missed"
        );
        let after = ticks_in(&app, queue);
        let caught_up: Vec<i64> = after
            .iter()
            .copied()
            .filter(|t| *t < started.as_millis())
            .collect();
        let followed: Vec<i64> = after
            .iter()
            .copied()
            .filter(|t| *t >= started.as_millis())
            .collect();
        if queue == "caught" {
            assert_eq!(
                caught_up,
                [missed],
                "missed = once: the latest missed tick only (last before the stop: {last})"
            );
        } else {
            assert_eq!(
                caught_up,
                Vec::<i64>::new(),
                "missed = skip: no missed tick (last before the stop: {last})"
            );
        }
        assert!(
            followed.first() == Some(&(missed + EVERY))
                && followed.windows(2).all(|w| w[1] - w[0] == EVERY),
            "{queue}: then every tick on schedule: {followed:?}"
        );
    }
}
