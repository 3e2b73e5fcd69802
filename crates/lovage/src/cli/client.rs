//! The client commands: submit, status, result, revoke, purge, queues, workers.

use std::time::Duration;

use anyhow::Context;
use lovage::{parse_duration, App, Codec, ResultRecord, Signature, TaskId, TaskState, Timestamp};
use serde_json::{json, Value};

use super::output::Table;
use super::{BrokerArgs, Exit};

fn duration(text: &str) -> Result<Duration, String> {
    parse_duration(text)
}

#[derive(Debug, clap::Args)]
pub struct SubmitArgs {
    /// Registered task name, e.g. lovage.shell (see `lovage tasks`).
    #[arg(required_unless_present = "workflow")]
    task: Option<String>,
    /// Positional arguments as a JSON array, e.g. '[2, 3]' or '[["echo", "hi"]]'.
    args: Option<String>,
    /// Arguments by name as a JSON object, e.g. '{"argv": ["ls"], "cwd": "/tmp"}'.
    #[arg(long)]
    kwargs: Option<String>,
    /// Queue to send to.
    #[arg(long, short)]
    queue: Option<String>,
    /// Priority 0-9, higher first.
    #[arg(long, short, value_parser = clap::value_parser!(u8).range(0..=9))]
    priority: Option<u8>,
    /// Run no sooner than this long from now (e.g. 30s, 5m).
    #[arg(long, value_parser = duration)]
    countdown: Option<Duration>,
    /// Run no sooner than this time (RFC 3339 UTC, e.g. 2026-11-24T18:00:00Z).
    #[arg(long, conflicts_with = "countdown")]
    eta: Option<String>,
    /// Drop the task if it has not started this long after sending.
    #[arg(long, value_parser = duration)]
    expires: Option<Duration>,
    /// Retry up to N times on failure (exponential backoff with jitter).
    #[arg(long)]
    retries: Option<u32>,
    /// Kill the task after this long (process pool workers).
    #[arg(long, value_parser = duration)]
    time_limit: Option<Duration>,
    /// Send a workflow instead of one task: a JSON description (chain, group, chord,
    /// on_error; see the docs), as text, as @FILE, or - for standard input.
    #[arg(long, conflicts_with_all = ["task", "args", "kwargs"])]
    workflow: Option<String>,
    /// Wait for the result and print it.
    #[arg(long, short)]
    wait: bool,
    /// How long --wait waits.
    #[arg(long, default_value = "1h", value_parser = duration)]
    timeout: Duration,
    #[command(flatten)]
    broker: BrokerArgs,
}

/// Parses a JSON argument, pointing at the problem when it is not JSON of the right shape.
fn parse_json(what: &str, text: &str, want_array: bool) -> Result<Value, Exit> {
    let v: Value = serde_json::from_str(text).map_err(|e| {
        Exit::usage(format!(
            "{what} is not valid JSON: {e}\n  {text}\n  {}^",
            " ".repeat(e.column().saturating_sub(1))
        ))
    })?;
    match (&v, want_array) {
        (Value::Array(_), true) | (Value::Object(_), false) => Ok(v),
        _ => Err(Exit::usage(format!(
            "{what} must be a JSON {}, got {text}",
            if want_array {
                "array, e.g. '[2, 3]'"
            } else {
                "object, e.g. '{\"x\": 1}'"
            }
        ))),
    }
}

/// Sends a workflow description; prints its result id (the one `status` shows as a tree).
fn submit_workflow(a: &SubmitArgs, text: &str) -> Result<(), Exit> {
    let text = match text {
        "-" => std::io::read_to_string(std::io::stdin()).context("reading standard input")?,
        t if t.starts_with('@') => std::fs::read_to_string(&t[1..])
            .with_context(|| format!("reading the workflow file {}", &t[1..]))?,
        t => t.to_owned(),
    };
    let canvas = lovage::flow::description::parse(&text).map_err(|e| Exit::usage(e.to_string()))?;
    let app = a.broker.app()?;
    let sent = lovage::flow::send(&app, &canvas).map_err(|e| match e {
        lovage::flow::FlowError::Invalid(_) => Exit::usage(e.to_string()),
        other => Exit::from(anyhow::Error::new(other).context("sending the workflow")),
    })?;
    let id = sent.id();
    if !a.wait {
        println!("{id}");
        return Ok(());
    }
    eprintln!("sent a workflow; its result is {id}; waiting");
    print_result(&app, id, Some(a.timeout))
}

pub fn submit(a: SubmitArgs) -> Result<(), Exit> {
    if let Some(text) = &a.workflow {
        return submit_workflow(&a, text);
    }
    let task = a
        .task
        .clone()
        .expect("clap requires a task without --workflow");
    let args = match (&a.args, &a.kwargs) {
        (Some(_), Some(_)) => {
            return Err(Exit::usage("give positional ARGS or --kwargs, not both"))
        }
        (Some(t), None) => parse_json("ARGS", t, true)?,
        (None, Some(t)) => parse_json("--kwargs", t, false)?,
        (None, None) => json!([]),
    };
    let eta = a
        .eta
        .as_deref()
        .map(Timestamp::parse_rfc3339)
        .transpose()
        .map_err(Exit::usage)?;
    let mut sig =
        Signature::new(task.clone(), &args, Codec::Json).map_err(|e| Exit::usage(e.to_string()))?;
    let o = &mut sig.options;
    o.queue = a.queue.clone();
    o.priority = a.priority;
    o.countdown = a.countdown;
    o.eta = eta.map(Timestamp::as_millis);
    o.expires = a.expires;
    o.time_limit = a.time_limit;
    o.retry = a.retries.map(lovage::RetryPolicy::retries);
    let app = a.broker.app()?;
    let id = app.send_signature(sig).context("sending the task")?;
    if !a.wait {
        println!("{id}");
        return Ok(());
    }
    eprintln!("sent {task} as {id}; waiting");
    print_result(&app, id, Some(a.timeout))
}

#[derive(Debug, clap::Args)]
pub struct IdArgs {
    /// The task id printed by `lovage submit`.
    id: String,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    broker: BrokerArgs,
}

fn parse_id(text: &str) -> Result<TaskId, Exit> {
    text.parse::<TaskId>()
        .map_err(|e| Exit::usage(e.to_string()))
}

fn record_json(rec: &ResultRecord) -> Value {
    json!({
        "id": rec.id.to_string(),
        "task": rec.task,
        "state": rec.state.as_str(),
        "result": rec.value.as_ref().map(|v| value_json(rec.codec, v)),
        "error": rec.error,
        "attempts": rec.attempts,
        "worker": rec.worker,
        "started": rec.started.map(|t| t.to_string()),
        "updated": rec.updated.to_string(),
    })
}

/// A stored value as JSON, whatever codec it was stored with.
fn value_json(codec: Codec, bytes: &[u8]) -> Value {
    codec
        .decode::<Value>(bytes, "result")
        .unwrap_or_else(|e| json!({ "undecodable": e.to_string() }))
}

pub fn status(a: IdArgs) -> Result<(), Exit> {
    let id = parse_id(&a.id)?;
    let app = a.broker.app()?;
    if let Some(canvas) = lovage::flow::load(&app, id).context("reading the workflow")? {
        return workflow_status(&app, &canvas, a.json);
    }
    let rec = app
        .result::<Value>(id)
        .record()
        .context("reading the result store")?;
    match (rec, a.json) {
        (None, true) => println!("{}", json!({"id": id.to_string(), "state": "PENDING"})),
        (None, false) => println!("{id}  PENDING  (no record: waiting in a queue, or unknown)"),
        (Some(r), true) => println!("{}", record_json(&r)),
        (Some(r), false) => {
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
    }
    Ok(())
}

/// A workflow as a tree, each node with its state (`--json`: the same as nested objects).
fn workflow_status(app: &App, canvas: &lovage::Canvas, as_json: bool) -> Result<(), Exit> {
    let ids = canvas.task_ids();
    let records = app.records(&ids).context("reading the result store")?;
    let states: std::collections::HashMap<TaskId, ResultRecord> =
        records.into_iter().flatten().map(|r| (r.id, r)).collect();
    if as_json {
        println!("{}", tree_json(canvas, &states));
    } else {
        let mut out = String::new();
        tree_lines(canvas, &states, "", "", &mut out);
        print!("{out}");
    }
    Ok(())
}

fn state_of(id: TaskId, states: &std::collections::HashMap<TaskId, ResultRecord>) -> &'static str {
    states.get(&id).map_or("PENDING", |r| r.state.as_str())
}

fn tree_json(
    c: &lovage::Canvas,
    states: &std::collections::HashMap<TaskId, ResultRecord>,
) -> Value {
    use lovage::flow::Node;
    let list = |items: &[lovage::Canvas]| -> Vec<Value> {
        items.iter().map(|i| tree_json(i, states)).collect()
    };
    let mut v = match &c.node {
        Node::Task(step) => json!({
            "task": step.task,
            "id": step.id.to_string(),
            "state": state_of(step.id, states),
            "error": states.get(&step.id).and_then(|r| r.error.as_ref()).map(|e| e.to_string()),
            "link": list(&step.link),
        }),
        Node::Chain(items) => json!({"chain": list(items)}),
        Node::Group { id, members } => json!({
            "group": list(members), "id": id.to_string(), "state": state_of(*id, states),
        }),
        Node::Chord { id, header, body } => json!({
            "chord": list(header), "id": id.to_string(), "state": state_of(*id, states),
            "body": tree_json(body, states),
        }),
    };
    if !c.on_error.is_empty() {
        v["on_error"] = Value::Array(list(&c.on_error));
    }
    v
}

/// One line per node: `head` prefixes this node's line, `rest` its children's.
fn tree_lines(
    c: &lovage::Canvas,
    states: &std::collections::HashMap<TaskId, ResultRecord>,
    head: &str,
    rest: &str,
    out: &mut String,
) {
    use lovage::flow::Node;
    use std::fmt::Write;
    let (label, children): (String, Vec<(&str, &lovage::Canvas)>) = match &c.node {
        Node::Task(step) => {
            let error = states
                .get(&step.id)
                .and_then(|r| r.error.as_ref())
                .map(|e| format!("  ({e})"))
                .unwrap_or_default();
            (
                format!(
                    "{}  {}  {}{error}",
                    step.task,
                    step.id,
                    state_of(step.id, states)
                ),
                step.link.iter().map(|l| ("link", l)).collect(),
            )
        }
        Node::Chain(items) => ("chain".into(), items.iter().map(|i| ("", i)).collect()),
        Node::Group { id, members } => (
            format!("group  {id}  {}", state_of(*id, states)),
            members.iter().map(|m| ("", m)).collect(),
        ),
        Node::Chord { id, header, body } => (
            format!("chord  {id}  {}", state_of(*id, states)),
            header
                .iter()
                .map(|m| ("", m))
                .chain(std::iter::once(("body", &**body)))
                .collect(),
        ),
    };
    let _ = writeln!(out, "{head}{label}");
    let children: Vec<(&str, &lovage::Canvas)> = children
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
            states,
            &format!("{rest}{branch}{tag}"),
            &format!("{rest}{indent}"),
            out,
        );
    }
}

#[derive(Debug, clap::Args)]
pub struct ResultArgs {
    /// The task id printed by `lovage submit`.
    id: String,
    /// Wait for the task to finish.
    #[arg(long, short)]
    wait: bool,
    /// How long --wait waits.
    #[arg(long, default_value = "1h", value_parser = duration)]
    timeout: Duration,
    #[command(flatten)]
    broker: BrokerArgs,
}

pub fn result(a: ResultArgs) -> Result<(), Exit> {
    let id = parse_id(&a.id)?;
    let app = a.broker.app()?;
    print_result(&app, id, a.wait.then_some(a.timeout))
}

/// Prints a result's value as JSON (exit 0), its error on stderr (exit 1), or that it is not
/// finished (exit 3).
fn print_result(app: &App, id: TaskId, wait: Option<Duration>) -> Result<(), Exit> {
    let handle = app.result::<Value>(id);
    let rec = match wait {
        Some(t) => app.wait_record(id, t),
        None => handle.record(),
    }
    .context("reading the result store")?;
    match rec {
        Some(r) if r.state == TaskState::Success => {
            let v = r
                .value
                .as_ref()
                .map_or(Value::Null, |v| value_json(r.codec, v));
            println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
            Ok(())
        }
        Some(r) if r.state.is_final() => {
            let err = r.error.map(|e| e.to_string()).unwrap_or_default();
            Err(Exit::failed(format!("task {id} {}: {err}", r.state)))
        }
        other => {
            let state = other.map_or(TaskState::Pending, |r| r.state);
            Err(Exit::code(
                3,
                format!(
                    "task {id} is {state}, not finished{}",
                    if wait.is_some() {
                        " (timed out)"
                    } else {
                        "; use --wait"
                    }
                ),
            ))
        }
    }
}

pub fn revoke(a: IdArgs) -> Result<(), Exit> {
    let id = parse_id(&a.id)?;
    let found = a.broker.app()?.revoke(id).context("revoking")?;
    let text = match found {
        lovage::Revoked::Pending => "revoked: it was waiting and will not run",
        lovage::Revoked::Running => "revoked: a worker is running it; its result will be discarded",
        lovage::Revoked::NotFound => {
            "revoked: not in the broker (finished or unknown); it will not run if sent later"
        }
    };
    println!("{id}  {text}");
    Ok(())
}

#[derive(Debug, clap::Args)]
pub struct PurgeArgs {
    /// The queue to empty (waiting tasks only; running ones finish).
    queue: String,
    #[command(flatten)]
    broker: BrokerArgs,
}

pub fn purge(a: PurgeArgs) -> Result<(), Exit> {
    let n = a.broker.app()?.purge(&a.queue).context("purging")?;
    println!("purged {n} waiting task(s) from queue {}", a.queue);
    Ok(())
}

#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// Print JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    broker: BrokerArgs,
}

pub fn queues(a: ListArgs) -> Result<(), Exit> {
    let stats = a.broker.app()?.queues().context("reading queue lengths")?;
    if a.json {
        println!("{}", serde_json::to_string(&stats).unwrap_or_default());
        return Ok(());
    }
    let mut t = Table::new(&[
        ("queue", false),
        ("ready", true),
        ("scheduled", true),
        ("reserved", true),
    ]);
    for s in stats {
        t.row(vec![
            s.queue,
            s.ready.to_string(),
            s.scheduled.to_string(),
            s.reserved.to_string(),
        ]);
    }
    print!("{}", t.render());
    Ok(())
}

pub fn workers(a: ListArgs) -> Result<(), Exit> {
    let ws = a
        .broker
        .app()?
        .workers(Duration::from_secs(30))
        .context("reading workers")?;
    if a.json {
        println!("{}", serde_json::to_string(&ws).unwrap_or_default());
        return Ok(());
    }
    let mut t = Table::new(&[
        ("worker", false),
        ("queues", false),
        ("pool", false),
        ("started", false),
        ("last beat", false),
        ("done", true),
        ("active", true),
    ]);
    for w in ws {
        t.row(vec![
            w.id,
            w.queues.join(","),
            w.pool,
            w.started.to_string(),
            format!("{:.1}s ago", (Timestamp::now() - w.heartbeat).as_secs_f64()),
            w.tasks_done.to_string(),
            w.active.to_string(),
        ]);
    }
    print!("{}", t.render());
    Ok(())
}
