//! Every command's report goes through one trait, [`Output`], with two renderings: [`human`]
//! (tables and lines for people, as the commands have always printed) and [`json`] (one JSON
//! document on stdout for scripts, with stable field names). A command does its work, builds
//! what it has to say, and calls the one method that says it; `--json` picks the renderer.
//!
//! Progress bars and "waiting" notes go to stderr and are not part of either rendering.

mod human;
mod json;
mod table;

use std::collections::HashMap;
use std::time::Duration;

use lovage::builtins::ShellOutput;
use lovage::{Canvas, ResultRecord, Revoked, TaskId, TaskState};
use lovage_broker::ops::{Event, Gathered};
use lovage_broker::{QueueStats, WorkerInfo};
use serde_json::Value;

pub use table::{secs, si, Table};

use super::outcome::Outcome;

/// The renderer for a command's `--json` flag.
pub fn select(json: bool) -> &'static dyn Output {
    if json {
        &json::Json
    } else {
        &human::Human
    }
}

/// One method per thing a command reports.
pub trait Output {
    /// `submit` without `--wait`: the id of what was sent.
    fn submitted(&self, sent: &Submitted<'_>);
    /// `result`, `submit --wait`: a task's value, its error, or that it has not finished. The
    /// command's exit code says which; the human rendering prints only a value (errors go to
    /// stderr with the exit).
    fn result(&self, id: TaskId, outcome: &Outcome<Value>);
    /// `status` of one task: its record, or none yet.
    fn status(&self, id: TaskId, record: Option<&ResultRecord>);
    /// `status` of a workflow: its tree, each node with the state its record gives.
    fn workflow(&self, canvas: &Canvas, records: &HashMap<TaskId, ResultRecord>);
    /// `revoke`: what the broker found.
    fn revoked(&self, id: TaskId, found: Revoked);
    /// `purge`: how many waiting tasks were removed.
    fn purged(&self, queue: &str, removed: u64);
    /// `queues`: lengths per queue.
    fn queues(&self, stats: &[QueueStats]);
    /// `workers`: those with a recent heartbeat.
    fn workers(&self, workers: &[WorkerInfo]);
    /// `map`: one command finished (called in input order, as results arrive).
    fn map_item(&self, item: &MapItem);
    /// `map`: every command, at the end.
    fn map_summary(&self, items: &[MapItem]);
    /// `demo`: the broker is open and the workers are up; the phases start.
    fn demo_started(&self, broker: &str, pids: &[u32]);
    /// `demo`: the phases' figures.
    fn demo(&self, report: &DemoReport);
    /// `tasks`: the registered task names.
    fn tasks(&self, names: &[&str]);
    /// `beat --list`: the schedule's entries and their next runs.
    fn schedule(&self, entries: &[ScheduleEntry]);
    /// `bench ...`: a benchmark's tables and figures.
    fn bench(&self, report: &BenchReport);
    /// `inspect` and `control`: each worker's reply, and the workers that did not answer.
    fn gathered(&self, command: &str, gathered: &Gathered);
    /// `events`: one event of the stream.
    fn event(&self, event: &Event);
    /// `graph ID`: a stored task graph's nodes and their states.
    fn graph(&self, report: &GraphReport);
    /// `graph ID --format dot|svg`: the graph as DOT or SVG text (the same in both renderings).
    fn graph_picture(&self, text: &str) {
        print!("{text}");
    }
}

/// What `lovage graph ID` found: a task graph the workers resolve, node by node.
#[derive(Debug)]
pub struct GraphReport {
    /// The graph's id (printed by `Graph::submit`'s `Submitted::graph`).
    pub id: TaskId,
    /// Every node, in the stored (topological) order.
    pub nodes: Vec<GraphNodeState>,
}

/// One node of a stored graph and the state its record gives.
#[derive(Debug)]
pub struct GraphNodeState {
    /// Its key in the graph.
    pub key: String,
    /// Its task (or operation) name.
    pub name: String,
    /// Its result id.
    pub id: TaskId,
    /// Its record's state; PENDING without a record.
    pub state: String,
    /// The nodes (indices) that read its result.
    pub next: Vec<u32>,
}

impl GraphReport {
    /// A picture of the graph, each node filled by its state and labelled with its key and
    /// state; when `grouped`, or above 10,000 nodes, one box per task name (a collection's
    /// operation: `lovage.bag.partial`, `lovage.array.matmul`, …) with its counts by state
    /// (filled by the worst) and one edge per pair of names, collects and items left out
    /// (their inputs joined to their readers).
    pub fn picture(&self, grouped: bool) -> lovage::graph::Picture {
        use lovage::graph::{Picture, PictureNode};
        let fill = |state: &str| {
            match state {
                "SUCCESS" => "#c8e6c9",
                "FAILURE" => "#ffcdd2",
                "STARTED" | "RETRY" => "#fff3c4",
                _ => "#e6e6e6",
            }
            .to_owned()
        };
        let nodes = self
            .nodes
            .iter()
            .map(|n| PictureNode {
                id: n.key.clone(),
                label: format!("{}\n{}", n.key, n.state),
                fill: fill(&n.state),
                group: n.name.clone(),
                through: matches!(
                    n.name.as_str(),
                    "lovage.graph.collect" | "lovage.graph.getitem"
                ),
            })
            .collect();
        let edges: Vec<(u32, u32)> = self
            .nodes
            .iter()
            .enumerate()
            .flat_map(|(i, n)| {
                n.next
                    .iter()
                    .filter(|&&d| (d as usize) < self.nodes.len())
                    .map(move |&d| (i as u32, d))
            })
            .collect();
        let group_box = |name: &str, members: &[usize]| {
            let mut states: std::collections::BTreeMap<&str, usize> = Default::default();
            for &m in members {
                *states.entry(self.nodes[m].state.as_str()).or_default() += 1;
            }
            let counts: Vec<String> = states.iter().map(|(s, c)| format!("{s} {c}")).collect();
            let worst = if states.contains_key("FAILURE") {
                "FAILURE"
            } else if states.keys().all(|s| *s == "SUCCESS") {
                "SUCCESS"
            } else {
                "PENDING"
            };
            (
                format!("{name} ×{}\n{}", members.len(), counts.join(", ")),
                fill(worst),
            )
        };
        if grouped {
            Picture::grouped(nodes, &edges, group_box)
        } else {
            Picture::new(nodes, &edges, group_box)
        }
    }

    /// Node counts by task name, then by state (both sorted).
    pub fn by_task(&self) -> Vec<(String, Vec<(String, usize)>)> {
        let mut map: std::collections::BTreeMap<&str, std::collections::BTreeMap<&str, usize>> =
            Default::default();
        for n in &self.nodes {
            *map.entry(&n.name).or_default().entry(&n.state).or_default() += 1;
        }
        map.into_iter()
            .map(|(k, v)| {
                (
                    k.to_owned(),
                    v.into_iter().map(|(s, c)| (s.to_owned(), c)).collect(),
                )
            })
            .collect()
    }
}

/// What `submit` sent.
#[derive(Debug)]
pub struct Submitted<'a> {
    /// The task's id, or the workflow's result id.
    pub id: TaskId,
    /// The task's name; `None` for a workflow.
    pub task: Option<&'a str>,
}

/// One line of a `map` file and what became of it.
#[derive(Debug)]
pub struct MapItem {
    /// Line number in the file (1-based).
    pub line: usize,
    /// The shell command.
    pub command: String,
    /// The task that ran it.
    pub id: TaskId,
    /// Its output, or its error.
    pub outcome: Outcome<ShellOutput>,
}

/// One phase of `lovage demo`.
#[derive(Debug)]
pub struct DemoPhase {
    pub name: &'static str,
    /// What was computed, for people.
    pub what: String,
    pub tasks: usize,
    /// From sending the first task to the last result.
    pub wall: Duration,
    /// The same work in this process on one core, when there is a serial version.
    pub serial: Option<Duration>,
}

/// What `lovage demo` measured.
#[derive(Debug)]
pub struct DemoReport {
    /// The temporary broker's URL.
    pub broker: String,
    /// Worker process ids.
    pub pids: Vec<u32>,
    pub phases: Vec<DemoPhase>,
}

/// One entry of a beat schedule.
#[derive(Debug)]
pub struct ScheduleEntry {
    pub name: String,
    pub task: String,
    /// When it runs, for people ("every 30s", a cron line).
    pub when: String,
    pub queue: String,
    /// What each run holds while it runs (`gpu=0.5,mem=2`), empty for none.
    pub resources: String,
    /// The next run (UTC), or "never".
    pub next_run: String,
}

/// A benchmark's report: a title line, tables for people, and every figure for scripts.
///
/// Its JSON rendering keeps what `bench --json` has always printed (the tables, then the
/// figures as one JSON object on the last line), because `bench/compare/compare.py` and
/// docs/benchmarks.md read both.
#[derive(Debug)]
pub struct BenchReport {
    pub title: String,
    pub tables: Vec<Table>,
    /// A blank line before each table.
    pub spaced: bool,
    /// Every figure, as one JSON object.
    pub figures: Value,
}

/// A node's state from its record; PENDING without one.
fn state_of(id: TaskId, records: &HashMap<TaskId, ResultRecord>) -> TaskState {
    records.get(&id).map_or(TaskState::Pending, |r| r.state)
}
