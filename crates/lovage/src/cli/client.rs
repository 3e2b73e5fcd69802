//! The client commands: submit, status, result, revoke, purge, queues, workers.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::Context;
use lovage::{parse_duration, App, Codec, ResultRecord, Signature, TaskId, Timestamp};
use serde_json::{json, Value};

use super::outcome::{outcome, Outcome};
use super::output::{self, Output, Submitted};
use super::{BrokerArgs, Exit};

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
    #[arg(long, value_parser = parse_duration)]
    countdown: Option<Duration>,
    /// Run no sooner than this time (RFC 3339 UTC, e.g. 2026-11-24T18:00:00Z).
    #[arg(long, conflicts_with = "countdown")]
    eta: Option<String>,
    /// Drop the task if it has not started this long after sending.
    #[arg(long, value_parser = parse_duration)]
    expires: Option<Duration>,
    /// Retry up to N times on failure (exponential backoff with jitter).
    #[arg(long)]
    retries: Option<u32>,
    /// Kill the task after this long (process pool workers).
    #[arg(long, value_parser = parse_duration)]
    time_limit: Option<Duration>,
    /// Send a workflow instead of one task: a JSON description (chain, group, chord,
    /// on_error; see the docs), as text, as @FILE, or - for standard input.
    #[arg(long, conflicts_with_all = ["task", "args", "kwargs"])]
    workflow: Option<String>,
    /// Wait for the result and print it (exit codes as for `lovage result`).
    #[arg(long, short)]
    wait: bool,
    /// How long --wait waits.
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    timeout: Duration,
    /// Print JSON: {"id", "task", "workflow"}, or with --wait the result as `result --json`.
    #[arg(long)]
    json: bool,
    /// Also publish a `task-sent` event to the broker's event stream (Celery's
    /// task_send_sent_event; off by default: one more write per send).
    #[arg(long, env = "LOVAGE_SEND_SENT_EVENT")]
    sent_event: bool,
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
    let out = output::select(a.json);
    if !a.wait {
        out.submitted(&Submitted { id, task: None });
        return Ok(());
    }
    eprintln!("sent a workflow; its result is {id}; waiting");
    print_result(out, &app, id, Some(a.timeout))
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
        .map_err(|e| Exit::usage(e.to_string()))?;
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
    let app = a.broker.app()?.sent_events(a.sent_event);
    let id = app.send_signature(sig).context("sending the task")?;
    let out = output::select(a.json);
    if !a.wait {
        out.submitted(&Submitted {
            id,
            task: Some(&task),
        });
        return Ok(());
    }
    eprintln!("sent {task} as {id}; waiting");
    print_result(out, &app, id, Some(a.timeout))
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

pub fn status(a: IdArgs) -> Result<(), Exit> {
    let id = parse_id(&a.id)?;
    let app = a.broker.app()?;
    let out = output::select(a.json);
    if let Some(canvas) = lovage::flow::load(&app, id).context("reading the workflow")? {
        let records = app
            .records(&canvas.task_ids())
            .context("reading the result store")?;
        let records: HashMap<TaskId, ResultRecord> =
            records.into_iter().flatten().map(|r| (r.id, r)).collect();
        out.workflow(&canvas, &records);
        return Ok(());
    }
    let rec = app.record(id).context("reading the result store")?;
    out.status(id, rec.as_ref());
    Ok(())
}

#[derive(Debug, clap::Args)]
pub struct ResultArgs {
    /// The task id printed by `lovage submit`.
    id: String,
    /// Wait for the task to finish.
    #[arg(long, short)]
    wait: bool,
    /// How long --wait waits.
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    timeout: Duration,
    /// Print one JSON object: {"id", "state", "finished", "result", "error"} (same exit codes).
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    broker: BrokerArgs,
}

pub fn result(a: ResultArgs) -> Result<(), Exit> {
    let id = parse_id(&a.id)?;
    let app = a.broker.app()?;
    print_result(
        output::select(a.json),
        &app,
        id,
        a.wait.then_some(a.timeout),
    )
}

/// Prints a result (waiting up to `wait` for it) and ends as `lovage result` does: exit 0 with
/// its value, 1 if it failed (the error on stderr), 3 if it has not finished.
fn print_result(
    out: &dyn Output,
    app: &App,
    id: TaskId,
    wait: Option<Duration>,
) -> Result<(), Exit> {
    let rec = match wait {
        Some(t) => app.wait_record(id, t),
        None => app.record(id),
    }
    .context("reading the result store")?;
    let o = outcome::<Value>(rec.as_ref());
    out.result(id, &o);
    match o {
        Outcome::Done(_) => Ok(()),
        Outcome::Failed { state, error } => {
            Err(Exit::failed(format!("task {id} {state}: {error}")))
        }
        Outcome::Unfinished(state) => Err(Exit::code(
            3,
            format!(
                "task {id} is {state}, not finished{}",
                if wait.is_some() {
                    " (timed out)"
                } else {
                    "; use --wait"
                }
            ),
        )),
    }
}

pub fn revoke(a: IdArgs) -> Result<(), Exit> {
    let id = parse_id(&a.id)?;
    let found = a.broker.app()?.revoke(id).context("revoking")?;
    output::select(a.json).revoked(id, found);
    Ok(())
}

#[derive(Debug, clap::Args)]
pub struct PurgeArgs {
    /// The queue to empty (waiting tasks only; running ones finish).
    queue: String,
    /// Print JSON: {"queue", "purged"}.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    broker: BrokerArgs,
}

pub fn purge(a: PurgeArgs) -> Result<(), Exit> {
    let n = a.broker.app()?.purge(&a.queue).context("purging")?;
    output::select(a.json).purged(&a.queue, n);
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
    output::select(a.json).queues(&stats);
    Ok(())
}

pub fn workers(a: ListArgs) -> Result<(), Exit> {
    let ws = a
        .broker
        .app()?
        .workers(Duration::from_secs(30))
        .context("reading workers")?;
    output::select(a.json).workers(&ws);
    Ok(())
}
