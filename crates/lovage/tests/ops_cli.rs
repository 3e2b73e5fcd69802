//! `lovage inspect`, `lovage control` and `lovage events` against real `lovage worker`
//! processes on an SQLite broker and on Redis: replies, error replies with their exit code, a
//! worker killed -9 listed as missing, and the control audit trail in the event stream.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests panic to fail

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Killed, RedisPrefix};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_lovage");

fn lovage(broker: &str, args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .args(args)
        .env("LOVAGE_BROKER", broker)
        .env("USER", "tester")
        .output()
        .unwrap()
}

fn json_of(o: &std::process::Output) -> Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", common::output_text(o)))
}

fn worker(broker: &str, name: &str, extra: &[&str]) -> Killed {
    Killed(
        Command::new(BIN)
            .args(["worker", "-c", "1", "-n", name])
            .args(extra)
            .env("LOVAGE_BROKER", broker)
            .env("LOVAGE_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

/// Pings until `n` workers answer (they register at start).
fn wait_for_workers(broker: &str, n: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let o = lovage(broker, &["inspect", "ping", "--json", "-t", "2s"]);
        if o.status.success() {
            let v = json_of(&o);
            let ids: Vec<String> = v["replies"].as_object().unwrap().keys().cloned().collect();
            if ids.len() == n {
                return ids;
            }
        }
        assert!(
            Instant::now() < deadline,
            "workers never answered: {}",
            common::output_text(&o)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Asks `f` until it gives something (at most 30 s).
fn until<T>(what: &str, f: impl FnMut() -> Option<T>) -> T {
    until_within(Duration::from_secs(30), what, f)
}

/// Asks `f` until it gives something, for at most `bound`.
fn until_within<T>(bound: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + bound;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A fresh task id, as text.
fn fresh_id() -> String {
    lovage::TaskId::new().to_string()
}

fn scenario(broker: &str) {
    let a = worker(
        broker,
        "opsa",
        &["--autoscale", "3,2", "--autoscale-idle", "1m"],
    );
    let mut b = worker(broker, "opsb", &[]);
    let ids = wait_for_workers(broker, 2);
    let a_id = ids.iter().find(|i| i.starts_with("opsa@")).unwrap().clone();
    let b_id = ids.iter().find(|i| i.starts_with("opsb@")).unwrap().clone();

    // --autoscale starts the pool at its min and shows the bounds.
    let o = lovage(broker, &["inspect", "conf", "--json", "-d", &a_id]);
    let conf = &json_of(&o)["replies"][&a_id]["ok"];
    assert_eq!(conf["concurrency"], 2, "{conf}");
    assert_eq!(
        (
            &conf["autoscale"]["max"],
            &conf["autoscale"]["min"],
            &conf["autoscale"]["idle_s"]
        ),
        (
            &serde_json::json!(3),
            &serde_json::json!(2),
            &serde_json::json!(60.0)
        ),
        "{conf}"
    );

    // Human output: one line per worker, then a count.
    let o = lovage(broker, &["inspect", "ping"]);
    let text = common::output_text(&o);
    assert!(
        o.status.success() && text.contains("pong") && text.contains("2 replies, 0 missing"),
        "{text}"
    );

    // A command the worker refuses: an error reply, exit 1.
    let o = lovage(
        broker,
        &["control", "pool_shrink", "1000", "--json", "-d", &b_id],
    );
    assert_eq!(o.status.code(), Some(1), "{}", common::output_text(&o));
    let v = json_of(&o);
    assert!(
        v["replies"][&b_id]["error"]
            .as_str()
            .unwrap()
            .starts_with("cannot shrink"),
        "{v}"
    );
    // One it does: the pool grows, exit 0.
    let o = lovage(
        broker,
        &["control", "pool_grow", "2", "--json", "-d", &b_id],
    );
    assert_eq!(o.status.code(), Some(0), "{}", common::output_text(&o));
    let v = json_of(&o);
    assert!(
        v["replies"][&b_id]["ok"]
            .as_str()
            .unwrap()
            .starts_with("pool grown by 2"),
        "{v}"
    );
    // Bad words never reach a worker.
    let o = lovage(broker, &["control", "time_limit", "lovage.sleep", "soon"]);
    assert_eq!(o.status.code(), Some(2), "{}", common::output_text(&o));

    // `submit --sent-event` publishes task-sent (a plain submit does not).
    let sent_id = |extra: &[&str]| {
        let mut args = vec!["submit", "lovage.sleep", "[0]", "--json"];
        args.extend_from_slice(extra);
        let o = lovage(broker, &args);
        assert!(o.status.success(), "{}", common::output_text(&o));
        json_of(&o)["id"].as_str().unwrap().to_owned()
    };
    let quiet = sent_id(&[]);
    let loud = sent_id(&["--sent-event"]);
    let o = lovage(
        broker,
        &["events", "--json", "--types", "task-sent", "-n", "1000"],
    );
    let told: Vec<String> = String::from_utf8(o.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["task_id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(told, [loud], "only the send asked for it: {quiet} {told:?}");

    // `inspect revoked`: a running task revoked in the broker (not through a command to its
    // worker) is listed by the worker that was running it, once its keeper has seen it.
    let o = lovage(broker, &["submit", "lovage.sleep", "[60]", "--json"]);
    let long = json_of(&o)["id"].as_str().unwrap().to_owned();
    let runner = until(&format!("{long} runs"), || {
        let v = json_of(&lovage(broker, &["inspect", "active", "--json"]));
        v["replies"]
            .as_object()
            .unwrap()
            .iter()
            .find(|(_, r)| {
                r["ok"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|t| t["id"] == long.as_str())
            })
            .map(|(w, _)| w.clone())
    });
    let o = lovage(broker, &["revoke", &long]);
    assert!(o.status.success(), "{}", common::output_text(&o));
    // Within half the workers' 30 s lease: past it the broker would deliver the (still
    // sleeping) task again, and the worker would list it as revoked when it reserved it, not
    // because its keeper saw the revoke while it ran.
    let listed = until_within(
        Duration::from_secs(15),
        &format!("{runner} lists {long} as revoked"),
        || {
            let o = lovage(broker, &["inspect", "revoked", "--json", "-d", &runner]);
            let v = json_of(&o);
            let r = &v["replies"][&runner]["ok"];
            r["ids"]
                .as_array()
                .unwrap()
                .iter()
                .any(|i| i == long.as_str())
                .then(|| r.clone())
        },
    );
    assert_eq!(listed["truncated"], false, "{listed}");
    assert!(listed["count"].as_u64().unwrap() >= 1, "{listed}");
    // A revoke command sent to a worker is listed there too, newest first; human output works.
    let other = fresh_id();
    let o = lovage(broker, &["control", "revoke", &other, "-d", &a_id]);
    assert!(o.status.success(), "{}", common::output_text(&o));
    let o = lovage(broker, &["inspect", "revoked", "--json", "-d", &a_id]);
    let v = json_of(&o);
    assert_eq!(v["replies"][&a_id]["ok"]["ids"][0], other.as_str(), "{v}");
    let o = lovage(broker, &["inspect", "revoked", "-d", &a_id]);
    assert!(
        o.status.success() && common::output_text(&o).contains(&other),
        "{}",
        common::output_text(&o)
    );

    // A worker killed -9 is still live to the broker for a while: it is listed as missing.
    b.kill().unwrap();
    b.wait().unwrap();
    let o = lovage(broker, &["inspect", "ping", "--json", "-t", "700ms"]);
    let v = json_of(&o);
    assert_eq!(v["missing"], serde_json::json!([b_id]), "{v}");
    assert_eq!(v["replies"].as_object().unwrap().len(), 1, "{v}");

    // The audit trail: the control command is an event naming who issued it.
    let o = lovage(
        broker,
        &[
            "events",
            "--json",
            "--types",
            "control-issued",
            "-n",
            "1000",
        ],
    );
    let events: Vec<Value> = String::from_utf8(o.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        events.iter().any(|e| e["name"] == "pool_grow"
            && e["worker"] == b_id.as_str()
            && e["error"] == "cli:tester"),
        "{events:?}"
    );
    drop(a);
}

#[test]
fn a_worker_with_bad_autoscale_bounds_is_refused_with_why() {
    let o = lovage("memory://", &["worker", "--autoscale", "1,3"]);
    assert_eq!(o.status.code(), Some(2), "{}", common::output_text(&o));
    assert!(
        common::output_text(&o).contains("below min"),
        "{}",
        common::output_text(&o)
    );
}

#[test]
fn inspect_and_control_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    scenario(&format!("sqlite://{}", dir.path().join("ops.db").display()));
}

#[test]
fn inspect_and_control_on_redis() {
    let prefix = RedisPrefix::new();
    scenario(&prefix.url());
}
