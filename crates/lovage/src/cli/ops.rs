//! `lovage inspect`, `lovage control` and `lovage events`: commands to live workers through
//! their mailboxes in the broker, and the broker's event stream.

use std::time::Duration;

use clap::builder::PossibleValuesParser;
use lovage::parse_duration;
use lovage_broker::ops::{
    broadcast, ControlRequest, EventKind, CONTROL_COMMANDS, INSPECT_COMMANDS,
};
use serde_json::{json, Value};

use super::output;
use super::{BrokerArgs, Exit};

/// Where a command goes and how long its replies are waited for.
#[derive(Debug, clap::Args)]
pub struct Reach {
    /// Worker ids to ask, comma-separated (default: every worker heard from in the last 30 s).
    #[arg(long, short = 'd', value_delimiter = ',')]
    destination: Vec<String>,
    /// How long to wait for replies; workers that did not answer by then are listed as missing.
    #[arg(long, short = 't', default_value = "1s", value_parser = parse_duration)]
    timeout: Duration,
    /// Print one JSON document: {"replies": {worker: {"ok": ...} or {"error": ...}}, "missing": [...]}.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    broker: BrokerArgs,
}

#[derive(Debug, clap::Args)]
pub struct InspectArgs {
    /// What to ask: ping, stats, active, reserved, scheduled, registered, revoked or conf.
    #[arg(value_parser = PossibleValuesParser::new(INSPECT_COMMANDS.iter().copied()))]
    what: String,
    #[command(flatten)]
    reach: Reach,
}

#[derive(Debug, clap::Args)]
pub struct ControlArgs {
    /// The command, then its arguments:
    ///   revoke ID [ID...] [--terminate]   rate_limit TASK RATE ("" removes it)
    ///   time_limit TASK SOFT_S [HARD_S]   pool_grow N | pool_shrink N | autoscale MAX,MIN
    ///   add_consumer QUEUE | cancel_consumer QUEUE
    ///   enable_events | disable_events | shutdown (warm)
    #[arg(
        verbatim_doc_comment,
        value_parser = PossibleValuesParser::new(CONTROL_COMMANDS.iter().copied())
    )]
    command: String,
    /// The command's arguments.
    args: Vec<String>,
    /// For revoke: also stop the task if a worker is running it now.
    #[arg(long)]
    terminate: bool,
    #[command(flatten)]
    reach: Reach,
}

#[derive(Debug, clap::Args)]
pub struct EventsArgs {
    /// Keep printing new events as they come (until interrupted).
    #[arg(long, short)]
    follow: bool,
    /// How many of the newest events to print first.
    #[arg(long, short = 'n', default_value_t = 20)]
    last: u64,
    /// Only these types, comma-separated (task-succeeded, worker-online, control-issued, ...).
    #[arg(long, value_delimiter = ',')]
    types: Vec<String>,
    /// One JSON object per line: {seq, ts, type, task_id, name, queue, worker, state, ...}.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    broker: BrokerArgs,
}

/// Who a request is from, for the audit trail: the user, on this host.
fn issuer() -> String {
    let user = std::env::var("USER").unwrap_or_else(|_| "unknown".into());
    format!("cli:{user}")
}

fn ask(reach: &Reach, command: &str, args: Value, audit: bool) -> Result<(), Exit> {
    let app = reach.broker.app()?;
    let request = ControlRequest::new(command, args, &issuer());
    let gathered = broadcast(
        app.backend(),
        &reach.destination,
        &request,
        reach.timeout,
        audit,
    )
    .map_err(|e| Exit::failed(format!("{command}: {e}")))?;
    output::select(reach.json).gathered(command, &gathered);
    if gathered.replies.is_empty() {
        return Err(Exit::failed(if gathered.missing.is_empty() {
            "no worker is live (none heard from in the last 30 s)".to_owned()
        } else {
            format!("no worker replied within {}", humantime_secs(reach.timeout))
        }));
    }
    let errors = gathered
        .replies
        .values()
        .filter(|r| r.get("error").is_some())
        .count();
    if errors > 0 {
        return Err(Exit::failed(format!(
            "{command}: {errors} of {} workers answered with an error",
            gathered.replies.len()
        )));
    }
    Ok(())
}

fn humantime_secs(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

/// `lovage inspect WHAT`.
pub fn inspect(a: InspectArgs) -> Result<(), Exit> {
    ask(&a.reach, &a.what, Value::Null, false)
}

/// `lovage control COMMAND ARGS...`.
pub fn control(a: ControlArgs) -> Result<(), Exit> {
    let args = control_args(&a.command, &a.args, a.terminate)?;
    ask(&a.reach, &a.command, args, true)
}

/// The JSON arguments a worker expects for `command`, from the words after it.
fn control_args(command: &str, words: &[String], terminate: bool) -> Result<Value, Exit> {
    let want = |n: std::ops::RangeInclusive<usize>, usage: &str| {
        if n.contains(&words.len()) {
            Ok(())
        } else {
            Err(Exit::usage(format!(
                "usage: lovage control {command} {usage}"
            )))
        }
    };
    let secs = |w: &str| -> Result<f64, Exit> {
        w.parse::<f64>()
            .ok()
            .filter(|x| x.is_finite() && *x >= 0.0)
            .ok_or_else(|| Exit::usage(format!("{command}: {w:?} is not a number of seconds")))
    };
    match command {
        "revoke" => {
            if words.is_empty() {
                return Err(Exit::usage(
                    "usage: lovage control revoke ID [ID...] [--terminate]",
                ));
            }
            Ok(json!({"task_id": words, "terminate": terminate}))
        }
        "rate_limit" => {
            want(2..=2, "TASK RATE (e.g. 10/s; \"\" removes it)")?;
            Ok(json!({"task": words[0], "rate": words[1]}))
        }
        "time_limit" => {
            want(2..=3, "TASK SOFT_S [HARD_S]")?;
            let hard = words.get(2).map(|w| secs(w)).transpose()?;
            Ok(json!({"task": words[0], "soft_s": secs(&words[1])?, "hard_s": hard}))
        }
        "pool_grow" | "pool_shrink" => {
            want(0..=1, "[N]")?;
            let n: u64 = match words.first() {
                Some(w) => w
                    .parse()
                    .map_err(|_| Exit::usage(format!("{command}: {w:?} is not a count")))?,
                None => 1,
            };
            Ok(json!({"n": n}))
        }
        "autoscale" => {
            want(1..=1, "MAX,MIN")?;
            Ok(json!({"max_min": words[0]}))
        }
        "add_consumer" | "cancel_consumer" => {
            want(1..=1, "QUEUE")?;
            Ok(json!({"queue": words[0]}))
        }
        _ => {
            want(0..=0, "(no arguments)")?;
            Ok(Value::Null)
        }
    }
}

/// `lovage events`.
pub fn events(a: EventsArgs) -> Result<(), Exit> {
    let kinds: Vec<EventKind> = a
        .types
        .iter()
        .map(|t| {
            EventKind::parse(t).ok_or_else(|| {
                let known: Vec<&str> = EventKind::ALL.iter().map(|k| k.as_str()).collect();
                Exit::usage(format!(
                    "unknown event type {t:?} (known: {})",
                    known.join(", ")
                ))
            })
        })
        .collect::<Result<_, _>>()?;
    let app = a.broker.app()?;
    let stream = app.backend().events();
    let out = output::select(a.json);
    let fail = |e: lovage_broker::BrokerError| Exit::failed(format!("reading events: {e}"));
    let last = stream.read_events(0, 1).map_err(fail)?.last_seq;
    let mut after = last.saturating_sub(a.last);
    loop {
        let batch = stream.read_events(after, 1000).map_err(fail)?;
        if batch.missed(after) {
            eprintln!(
                "lovage: events {}..{} were dropped from the stream before they were read",
                after + 1,
                batch.oldest_seq.saturating_sub(1)
            );
        }
        for e in &batch.events {
            if kinds.is_empty() || kinds.contains(&e.kind) {
                out.event(e);
            }
        }
        let read = batch.events.len();
        if let Some(e) = batch.events.last() {
            after = e.seq;
        }
        if read == 1000 {
            continue;
        }
        if !a.follow {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_words_become_the_arguments_a_worker_reads() {
        let w = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            control_args("rate_limit", &w(&["add", "10/s"]), false).unwrap(),
            json!({"task": "add", "rate": "10/s"})
        );
        assert_eq!(
            control_args("time_limit", &w(&["add", "1.5"]), false).unwrap(),
            json!({"task": "add", "soft_s": 1.5, "hard_s": null})
        );
        assert_eq!(
            control_args("revoke", &w(&["a", "b"]), true).unwrap(),
            json!({"task_id": ["a", "b"], "terminate": true})
        );
        let e = control_args("time_limit", &w(&["add", "soon"]), false).unwrap_err();
        assert!(e.message.contains("\"soon\""), "{}", e.message);
        let e = control_args("shutdown", &w(&["now"]), false).unwrap_err();
        assert!(e.message.contains("usage"), "{}", e.message);
    }
}
