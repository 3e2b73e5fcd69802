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
    let base = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/0".into());
    let prefix = format!("lovage-test-{}", lovage::TaskId::new());
    let _cleanup = common::RedisPrefix(base.clone(), prefix.clone());
    two_beats(&dir, &format!("{base}?prefix={prefix}"));
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
        .broker
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
