//! The rendering for people: tables with aligned columns, one line per fact, a workflow as a
//! tree. What a command prints without `--json`.

use std::collections::HashMap;
use std::fmt::Write as _;

use lovage::flow::Node;
use lovage::{Canvas, ResultRecord, Revoked, TaskId, Timestamp};
use lovage_broker::ops::{Event, Gathered};
use lovage_broker::{QueueStats, WorkerInfo};
use serde_json::Value;

use super::{
    secs, si, state_of, BenchReport, DemoReport, GraphReport, MapItem, Output, ScheduleEntry,
    Submitted, Table,
};
use crate::cli::outcome::Outcome;

/// Renders for a terminal.
pub struct Human;

impl Output for Human {
    fn gathered(&self, _command: &str, gathered: &Gathered) {
        for (worker, reply) in &gathered.replies {
            match (reply.get("ok"), reply.get("error")) {
                (Some(ok), _) => {
                    println!("-> {worker}: OK");
                    print!("{}", indented(ok));
                }
                (None, Some(err)) => {
                    println!(
                        "-> {worker}: ERROR {}",
                        err.as_str().unwrap_or(&err.to_string())
                    );
                }
                _ => println!("-> {worker}: {reply}"),
            }
        }
        for worker in &gathered.missing {
            println!("-> {worker}: no reply");
        }
        println!(
            "{} repl{}, {} missing",
            gathered.replies.len(),
            if gathered.replies.len() == 1 {
                "y"
            } else {
                "ies"
            },
            gathered.missing.len()
        );
    }

    fn event(&self, e: &Event) {
        let mut line = format!("{:>8}  {}  {:<16}", e.seq, e.ts, e.kind.as_str());
        for part in [
            e.task_id.map(|t| t.to_string()),
            e.name.clone(),
            e.queue.as_ref().map(|q| format!("queue={q}")),
            e.worker.as_ref().map(|w| format!("worker={w}")),
            e.runtime_ms.map(|ms| format!("{ms}ms")),
            e.retries.filter(|r| *r > 0).map(|r| format!("retries={r}")),
            e.error.clone(),
        ]
        .into_iter()
        .flatten()
        {
            line.push_str("  ");
            line.push_str(&part);
        }
        println!("{line}");
    }

    fn submitted(&self, sent: &Submitted<'_>) {
        println!("{}", sent.id);
    }

    fn result(&self, _id: TaskId, outcome: &Outcome<Value>) {
        if let Outcome::Done(v) = outcome {
            println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
        }
    }

    fn status(&self, id: TaskId, record: Option<&ResultRecord>) {
        let Some(r) = record else {
            println!("{id}  PENDING  (no record: waiting in a queue, or unknown)");
            return;
        };
        println!("{}  {}  {}", r.id, r.state, r.task);
        println!("  attempts  {}", r.attempts);
        if let Some(w) = &r.worker {
            println!("  worker    {w}");
        }
        if let Some(s) = r.started {
            println!("  started   {s}");
        }
        println!("  updated   {}", r.updated);
        if let Some(e) = &r.error {
            println!("  error     {e}");
        }
    }

    fn workflow(&self, canvas: &Canvas, records: &HashMap<TaskId, ResultRecord>) {
        let mut out = String::new();
        tree_lines(canvas, records, "", "", &mut out);
        print!("{out}");
    }

    fn revoked(&self, id: TaskId, found: Revoked) {
        let text = match found {
            Revoked::Pending => "revoked: it was waiting and will not run",
            Revoked::Running => "revoked: a worker is running it; its result will be discarded",
            Revoked::NotFound => {
                "revoked: not in the broker (finished or unknown); it will not run if sent later"
            }
        };
        println!("{id}  {text}");
    }

    fn purged(&self, queue: &str, removed: u64) {
        println!("purged {removed} waiting task(s) from queue {queue}");
    }

    fn queues(&self, stats: &[QueueStats]) {
        let mut t = Table::new(&[
            ("queue", false),
            ("ready", true),
            ("scheduled", true),
            ("reserved", true),
        ]);
        for s in stats {
            t.row(vec![
                s.queue.clone(),
                s.ready.to_string(),
                s.scheduled.to_string(),
                s.reserved.to_string(),
            ]);
        }
        print!("{}", t.render());
    }

    fn workers(&self, workers: &[WorkerInfo]) {
        let mut t = Table::new(&[
            ("worker", false),
            ("queues", false),
            ("pool", false),
            ("resources", false),
            ("started", false),
            ("last beat", false),
            ("done", true),
            ("active", true),
        ]);
        let now = Timestamp::now();
        for w in workers {
            t.row(vec![
                w.id.clone(),
                w.queues.join(","),
                w.pool.clone(),
                if w.resources.is_empty() {
                    "-".to_owned()
                } else {
                    w.resources
                        .iter()
                        .map(|(name, units)| format!("{name}={units}"))
                        .collect::<Vec<_>>()
                        .join(",")
                },
                w.started.to_string(),
                format!("{:.1}s ago", (now - w.heartbeat).as_secs_f64()),
                w.tasks_done.to_string(),
                w.active.to_string(),
            ]);
        }
        print!("{}", t.render());
    }

    fn map_item(&self, item: &MapItem) {
        if let Outcome::Done(out) = &item.outcome {
            print!("{}", out.stdout);
        }
    }

    fn map_summary(&self, items: &[MapItem]) {
        let failed: Vec<&MapItem> = items
            .iter()
            .filter(|i| !matches!(i.outcome, Outcome::Done(_)))
            .collect();
        eprintln!(
            "{} command(s): {} succeeded, {} failed",
            items.len(),
            items.len() - failed.len(),
            failed.len()
        );
        for i in failed {
            let err = match &i.outcome {
                Outcome::Failed { error, .. } => error.to_string(),
                Outcome::Unfinished(state) => format!("no result ({state})"),
                Outcome::Done(_) => continue,
            };
            eprintln!("  line {}: {}\n    {err}", i.line, i.command);
        }
    }

    fn demo_started(&self, broker: &str, pids: &[u32]) {
        println!(
            "lovage demo: broker {broker}, {} worker processes",
            pids.len()
        );
        println!("workers up: pids {pids:?}\n");
    }

    fn demo(&self, report: &DemoReport) {
        let mut t = Table::new(&[
            ("phase", false),
            ("tasks", true),
            ("wall", true),
            ("tasks/s", true),
            ("serial", true),
            ("speed-up", true),
            ("what", false),
        ]);
        for p in &report.phases {
            let wall = p.wall.as_secs_f64();
            t.row(vec![
                p.name.into(),
                p.tasks.to_string(),
                secs(wall),
                si(p.tasks as f64 / wall),
                p.serial.map_or("-".into(), |s| secs(s.as_secs_f64())),
                p.serial
                    .map_or("-".into(), |s| format!("{:.2}x", s.as_secs_f64() / wall)),
                p.what.clone(),
            ]);
        }
        print!("{}", t.render());
        println!("\nserial = the same work in this process on one core; speed-up = serial / wall through the queue.");
    }

    fn tasks(&self, names: &[&str]) {
        for n in names {
            println!("{n}");
        }
    }

    fn schedule(&self, entries: &[ScheduleEntry]) {
        let mut t = Table::new(&[
            ("entry", false),
            ("task", false),
            ("when", false),
            ("queue", false),
            ("resources", false),
            ("next run (UTC)", false),
        ]);
        for e in entries {
            t.row(vec![
                e.name.clone(),
                e.task.clone(),
                e.when.clone(),
                e.queue.clone(),
                if e.resources.is_empty() {
                    "-".to_owned()
                } else {
                    e.resources.clone()
                },
                e.next_run.clone(),
            ]);
        }
        print!("{}", t.render());
    }

    fn bench(&self, report: &BenchReport) {
        print!("{}", bench_text(report));
    }

    fn graph(&self, report: &GraphReport) {
        println!("graph {}: {} nodes", report.id, report.nodes.len());
        let mut t = Table::new(&[("task", false), ("nodes", true), ("states", false)]);
        for (name, states) in report.by_task() {
            let total: usize = states.iter().map(|(_, c)| c).sum();
            let states: Vec<String> = states.iter().map(|(s, c)| format!("{s} {c}")).collect();
            t.row(vec![name, total.to_string(), states.join(", ")]);
        }
        print!("{}", t.render());
    }
}

/// A benchmark's title and tables as text (the JSON rendering prints them too).
pub fn bench_text(report: &BenchReport) -> String {
    let mut out = format!("{}\n", report.title);
    for t in &report.tables {
        if report.spaced {
            out.push('\n');
        }
        out.push_str(&t.render());
    }
    out
}

/// One line per node: `head` prefixes this node's line, `rest` its children's.
fn tree_lines(
    c: &Canvas,
    records: &HashMap<TaskId, ResultRecord>,
    head: &str,
    rest: &str,
    out: &mut String,
) {
    let (label, children): (String, Vec<(&str, &Canvas)>) = match &c.node {
        Node::Task(step) => {
            let error = records
                .get(&step.id)
                .and_then(|r| r.error.as_ref())
                .map(|e| format!("  ({e})"))
                .unwrap_or_default();
            (
                format!(
                    "{}  {}  {}{error}",
                    step.task,
                    step.id,
                    state_of(step.id, records)
                ),
                step.link.iter().map(|l| ("link", l)).collect(),
            )
        }
        Node::Chain(items) => ("chain".into(), items.iter().map(|i| ("", i)).collect()),
        Node::Group { id, members } => (
            format!("group  {id}  {}", state_of(*id, records)),
            members.iter().map(|m| ("", m)).collect(),
        ),
        Node::Chord { id, header, body } => (
            format!("chord  {id}  {}", state_of(*id, records)),
            header
                .iter()
                .map(|m| ("", m))
                .chain(std::iter::once(("body", &**body)))
                .collect(),
        ),
    };
    let _ = writeln!(out, "{head}{label}");
    let children: Vec<(&str, &Canvas)> = children
        .into_iter()
        .chain(c.on_error.iter().map(|e| ("on_error", e)))
        .collect();
    for (i, (tag, child)) in children.iter().enumerate() {
        let last = i + 1 == children.len();
        let tag = if tag.is_empty() {
            String::new()
        } else {
            format!("{tag}: ")
        };
        let (branch, indent) = if last {
            ("└─ ", "   ")
        } else {
            ("├─ ", "│  ")
        };
        tree_lines(
            child,
            records,
            &format!("{rest}{branch}{tag}"),
            &format!("{rest}{indent}"),
            out,
        );
    }
}

/// A reply's value for people: a string as it is, a list a line per item, an object a line per
/// field; each line indented under its worker.
fn indented(v: &Value) -> String {
    let line = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Object(m) => m
            .iter()
            .map(|(k, v)| match v {
                Value::String(s) => format!("{k}={s}"),
                other => format!("{k}={other}"),
            })
            .collect::<Vec<_>>()
            .join("  "),
        other => other.to_string(),
    };
    let mut out = String::new();
    match v {
        Value::Array(items) if items.is_empty() => out.push_str("    (none)\n"),
        Value::Array(items) => {
            for i in items {
                let _ = writeln!(out, "    {}", line(i));
            }
        }
        Value::Object(m) => {
            for (k, v) in m {
                let _ = writeln!(out, "    {k}: {}", line(v));
            }
        }
        other => {
            let _ = writeln!(out, "    {}", line(other));
        }
    }
    out
}
