//! The rendering for scripts: one JSON document on stdout per command, with stable field names
//! (absent values are `null`, not missing). Timestamps are RFC 3339 strings, durations seconds.

use std::collections::HashMap;

use lovage::flow::Node;
use lovage::{Canvas, ResultRecord, Revoked, TaskError, TaskId};
use lovage_broker::ops::{Event, Gathered};
use lovage_broker::{QueueStats, WorkerInfo};
use serde_json::{json, Value};

use super::human::bench_text;
use super::{
    state_of, BenchReport, DemoReport, GraphReport, MapItem, Output, ScheduleEntry, Submitted,
};
use crate::cli::outcome::{outcome, Outcome};

/// Renders JSON.
pub struct Json;

fn print(v: &Value) {
    println!("{v}");
}

/// The value and error fields every result-bearing document shares.
fn outcome_fields<T: serde::Serialize>(o: &Outcome<T>) -> (Value, Value) {
    match o {
        Outcome::Done(v) => (json!(v), Value::Null),
        Outcome::Failed { error, .. } => (Value::Null, json!(error)),
        Outcome::Unfinished(_) => (Value::Null, Value::Null),
    }
}

/// A task's record: its state, value or error, and bookkeeping.
fn record_json(id: TaskId, rec: Option<&ResultRecord>) -> Value {
    let o = outcome::<Value>(rec);
    let (result, error) = outcome_fields(&o);
    // An unfinished task may carry the error of its last attempt (RETRY).
    let error = match (error, rec.and_then(|r| r.error.as_ref())) {
        (Value::Null, Some(e)) => json!(e),
        (e, _) => e,
    };
    json!({
        "id": id.to_string(),
        "task": rec.map(|r| r.task.as_str()),
        "state": o.state().as_str(),
        "result": result,
        "error": error,
        "attempts": rec.map_or(0, |r| r.attempts),
        "worker": rec.and_then(|r| r.worker.as_deref()),
        "started": rec.and_then(|r| r.started).map(|t| t.to_string()),
        "updated": rec.map(|r| r.updated.to_string()),
    })
}

impl Output for Json {
    fn gathered(&self, _command: &str, gathered: &Gathered) {
        print(&json!(gathered));
    }

    fn event(&self, event: &Event) {
        print(&json!(event));
    }

    fn submitted(&self, sent: &Submitted<'_>) {
        print(&json!({
            "id": sent.id.to_string(),
            "task": sent.task,
            "workflow": sent.task.is_none(),
        }));
    }

    fn result(&self, id: TaskId, o: &Outcome<Value>) {
        let (result, error) = outcome_fields(o);
        print(&json!({
            "id": id.to_string(),
            "state": o.state().as_str(),
            "finished": !matches!(o, Outcome::Unfinished(_)),
            "result": result,
            "error": error,
        }));
    }

    fn status(&self, id: TaskId, record: Option<&ResultRecord>) {
        print(&record_json(id, record));
    }

    fn workflow(&self, canvas: &Canvas, records: &HashMap<TaskId, ResultRecord>) {
        print(&tree_json(canvas, records));
    }

    fn revoked(&self, id: TaskId, found: Revoked) {
        print(&json!({"id": id.to_string(), "found": found}));
    }

    fn purged(&self, queue: &str, removed: u64) {
        print(&json!({"queue": queue, "purged": removed}));
    }

    fn queues(&self, stats: &[QueueStats]) {
        print(&json!(stats));
    }

    fn workers(&self, workers: &[WorkerInfo]) {
        print(&json!(workers));
    }

    fn map_item(&self, _item: &MapItem) {}

    fn map_summary(&self, items: &[MapItem]) {
        let results: Vec<Value> = items
            .iter()
            .map(|i| {
                let out = match &i.outcome {
                    Outcome::Done(o) => Some(o),
                    _ => None,
                };
                let error: Option<&TaskError> = match &i.outcome {
                    Outcome::Failed { error, .. } => Some(error),
                    _ => None,
                };
                json!({
                    "line": i.line,
                    "command": i.command,
                    "id": i.id.to_string(),
                    "state": i.outcome.state().as_str(),
                    "exit_code": out.map(|o| o.exit_code),
                    "stdout": out.map(|o| o.stdout.as_str()),
                    "stderr": out.map(|o| o.stderr.as_str()),
                    "truncated": out.map(|o| o.truncated),
                    "error": error,
                })
            })
            .collect();
        let ok = items
            .iter()
            .filter(|i| matches!(i.outcome, Outcome::Done(_)))
            .count();
        print(&json!({
            "commands": items.len(),
            "succeeded": ok,
            "failed": items.len() - ok,
            "results": results,
        }));
    }

    fn demo_started(&self, _broker: &str, _pids: &[u32]) {}

    fn demo(&self, report: &DemoReport) {
        let phases: Vec<Value> = report
            .phases
            .iter()
            .map(|p| {
                let wall = p.wall.as_secs_f64();
                json!({
                    "name": p.name,
                    "what": p.what,
                    "tasks": p.tasks,
                    "wall_s": wall,
                    "tasks_per_s": p.tasks as f64 / wall,
                    "serial_s": p.serial.map(|s| s.as_secs_f64()),
                    "speedup": p.serial.map(|s| s.as_secs_f64() / wall),
                })
            })
            .collect();
        print(&json!({
            "broker": report.broker,
            "workers": report.pids.len(),
            "pids": report.pids,
            "phases": phases,
        }));
    }

    fn tasks(&self, names: &[&str]) {
        print(&json!(names));
    }

    fn schedule(&self, entries: &[ScheduleEntry]) {
        let v: Vec<Value> = entries
            .iter()
            .map(|e| {
                json!({
                    "name": e.name, "task": e.task, "when": e.when, "queue": e.queue,
                    "resources": e.resources, "next_run": e.next_run,
                })
            })
            .collect();
        print(&Value::Array(v));
    }

    fn bench(&self, report: &BenchReport) {
        print!("{}", bench_text(report));
        print(&report.figures);
    }

    fn graph(&self, report: &GraphReport) {
        let by_task: Vec<Value> = report
            .by_task()
            .into_iter()
            .map(|(task, states)| {
                let states: serde_json::Map<String, Value> =
                    states.into_iter().map(|(s, c)| (s, json!(c))).collect();
                json!({ "task": task, "states": states })
            })
            .collect();
        let nodes: Vec<Value> = report
            .nodes
            .iter()
            .map(|n| {
                json!({
                    "key": n.key,
                    "task": n.name,
                    "id": n.id.to_string(),
                    "state": n.state,
                    "next": n.next,
                })
            })
            .collect();
        print(&json!({
            "id": report.id.to_string(),
            "by_task": by_task,
            "nodes": nodes,
        }));
    }
}

/// A workflow as nested objects, each node with its id and state.
fn tree_json(c: &Canvas, records: &HashMap<TaskId, ResultRecord>) -> Value {
    let list =
        |items: &[Canvas]| -> Vec<Value> { items.iter().map(|i| tree_json(i, records)).collect() };
    let state = |id| state_of(id, records).as_str();
    let mut v = match &c.node {
        Node::Task(step) => json!({
            "task": step.task,
            "id": step.id.to_string(),
            "state": state(step.id),
            "error": records.get(&step.id).and_then(|r| r.error.as_ref()).map(|e| e.to_string()),
            "link": list(&step.link),
        }),
        Node::Chain(items) => json!({"chain": list(items)}),
        Node::Group { id, members } => json!({
            "group": list(members), "id": id.to_string(), "state": state(*id),
        }),
        Node::Chord { id, header, body } => json!({
            "chord": list(header), "id": id.to_string(), "state": state(*id),
            "body": tree_json(body, records),
        }),
    };
    if !c.on_error.is_empty() {
        v["on_error"] = Value::Array(list(&c.on_error));
    }
    v
}
