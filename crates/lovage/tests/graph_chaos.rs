//! A task graph resolved by the workers survives workers killed with -9 (issue 16, item 6):
//! two `lovage worker` processes run a 10,000-node reduction that this test only sends; one
//! worker is killed mid-run, then the other, each replaced. Every node's result must be
//! right, the broker must end empty, and some task must have been delivered again (so the
//! kills caught work in flight and the joins saw repeats).

mod common;

use common::{Killed, RedisPrefix};

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use lovage::graph::{Delayed, Graph};
use lovage::{App, TaskId, TaskState};

const BIN: &str = env!("CARGO_BIN_EXE_lovage");

// The same names as the binary's own (`lovage bench graph`), so its workers run them.
#[lovage::task(name = "lovage.graph.leaf")]
fn leaf(i: u64) -> u64 {
    i
}

#[lovage::task(name = "lovage.graph.combine")]
fn combine(a: u64, b: u64) -> u64 {
    a.wrapping_add(b)
}

fn worker(url: &str) -> Killed {
    Killed(
        Command::new(BIN)
            .args(["worker", "--concurrency", "2", "--lease", "2s"])
            .env("LOVAGE_BROKER", url)
            .env("LOVAGE_LOG", "error")
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

/// A binary reduction over `leaves` leaves: every node, and each node's expected value.
fn tree(g: &Graph, leaves: u64) -> (Vec<Delayed<u64>>, Vec<u64>) {
    let mut nodes = Vec::new();
    let mut expect = Vec::new();
    let mut level: Vec<(Delayed<u64>, u64)> =
        (0..leaves).map(|i| (leaf::delayed(g, i), i)).collect();
    for (d, v) in &level {
        nodes.push(*d);
        expect.push(*v);
    }
    while level.len() > 1 {
        let mut next = Vec::new();
        for pair in level.chunks(2) {
            match pair {
                [(a, x), (b, y)] => {
                    let d = combine::delayed(g, *a, *b);
                    nodes.push(d);
                    expect.push(x + y);
                    next.push((d, x + y));
                }
                [one] => next.push(*one),
                _ => unreachable!("chunks of two"),
            }
        }
        level = next;
    }
    (nodes, expect)
}

fn done(app: &App, ids: &[TaskId]) -> usize {
    ids.chunks(1000)
        .map(|c| {
            app.backend()
                .results()
                .get_many(c)
                .unwrap()
                .iter()
                .flatten()
                .filter(|r| r.state == TaskState::Success)
                .count()
        })
        .sum()
}

/// Runs the graph through two kills and checks it; returns how many tasks were delivered again.
fn graph_survives_kills(url: &str) -> usize {
    let app = App::connect(url).unwrap();
    let mut workers = [worker(url), worker(url)];
    let g = Graph::new();
    let (nodes, expect) = tree(&g, 5_000);
    assert_eq!(nodes.len(), 9_999);
    let client = app.client().unwrap();
    // Every node is an output, so every node's record is checked.
    let sent = g.submit(&client, nodes).unwrap();
    let ids: Vec<TaskId> = sent.futures.iter().map(|f| f.id()).collect();
    let graph_id = sent.graph;
    let deadline = Instant::now() + Duration::from_secs(240);
    for (victim, share) in [(0usize, 10usize), (1, 40)] {
        // Kill once the graph is this far along (some nodes done, more in flight).
        while done(&app, &ids) * 100 < ids.len() * share {
            assert!(Instant::now() < deadline, "the graph stalled before a kill");
            std::thread::sleep(Duration::from_millis(20));
        }
        let w = &mut workers[victim];
        w.kill().unwrap(); // SIGKILL
        w.wait().unwrap();
        workers[victim] = worker(url);
    }
    let mut redelivered = 0;
    for (i, future) in sent.futures.into_iter().enumerate() {
        let left = deadline.saturating_duration_since(Instant::now());
        let value = future
            .result_timeout(left.max(Duration::from_millis(1)))
            .unwrap_or_else(|e| panic!("node {i}: {e}"));
        assert_eq!(value, expect[i], "node {i}");
    }
    for chunk in ids.chunks(1000) {
        for rec in app
            .backend()
            .results()
            .get_many(chunk)
            .unwrap()
            .iter()
            .flatten()
        {
            if rec.attempts > 1 {
                redelivered += 1;
            }
        }
    }
    // `lovage graph ID` reads the same state from the broker.
    let out = Command::new(BIN)
        .args(["graph", &graph_id.to_string(), "--json"])
        .env("LOVAGE_BROKER", url)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", common::output_text(&out));
    let shown: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let shown_nodes = shown["nodes"].as_array().unwrap();
    assert_eq!(shown_nodes.len(), ids.len());
    assert!(
        shown_nodes.iter().all(|n| n["state"] == "SUCCESS"),
        "{shown}"
    );
    let out = Command::new(BIN)
        .args(["graph", &graph_id.to_string(), "--dot"])
        .env("LOVAGE_BROKER", url)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", common::output_text(&out));
    let dot = String::from_utf8(out.stdout).unwrap();
    assert!(dot.starts_with("digraph lovage {"), "{dot}");
    assert_eq!(dot.matches("\\nSUCCESS\"").count(), ids.len());
    assert_eq!(
        dot.matches(" -> ").count(),
        ids.len() - 1,
        "a tree: one edge per non-root"
    );
    let out = Command::new(BIN)
        .args(["graph", &graph_id.to_string(), "--format", "svg"])
        .env("LOVAGE_BROKER", url)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", common::output_text(&out));
    let svg = String::from_utf8(out.stdout).unwrap();
    assert!(svg.starts_with("<svg"), "{svg}");
    assert_eq!(svg.matches("<rect").count(), ids.len(), "a box per node");
    assert_eq!(svg.matches(">SUCCESS</tspan>").count(), ids.len());
    // An edge between neighbouring layers is a line; one over several layers bows round.
    assert_eq!(
        svg.matches("<line").count() + svg.matches("<path class=\"long\"").count(),
        ids.len() - 1
    );
    // Nothing is left behind in the broker.
    common::wait_until_drained(&app);
    redelivered
}

#[test]
fn a_graph_on_sqlite_survives_workers_killed_with_9() {
    let dir = tempfile::tempdir().unwrap();
    common::until_a_redelivery(|run| {
        let db = dir.path().join(format!("graph-{run}.db"));
        graph_survives_kills(&format!("sqlite://{}", db.display()))
    });
}

#[test]
fn a_graph_on_redis_survives_workers_killed_with_9() {
    let prefixes: Vec<RedisPrefix> = (0..3).map(|_| RedisPrefix::new()).collect();
    common::until_a_redelivery(|run| graph_survives_kills(&prefixes[run].url()));
}
