//! `lovage beat`: send the schedule's periodic tasks; `--list` shows when each runs next.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use lovage::beat::{BeatConfig, Schedule};
use lovage::Timestamp;

use super::output::{self, ScheduleEntry};
use super::{BrokerArgs, Exit};

#[derive(Debug, clap::Args)]
pub struct BeatArgs {
    /// The schedule (TOML: [[entry]] tables with name, task, args, every or cron, timezone,
    /// queue, priority, expires, missed).
    #[arg(long, short, default_value = "beat.toml")]
    schedule: PathBuf,
    /// Show each entry and its next run, then exit.
    #[arg(long)]
    list: bool,
    /// With --list: print JSON.
    #[arg(long, requires = "list")]
    json: bool,
    /// How long the leader's lock lasts unrenewed: another beat takes over within this long
    /// after the leader stops.
    #[arg(long, default_value = "10s", value_parser = lovage::parse_duration)]
    lock_ttl: Duration,
    #[command(flatten)]
    broker: BrokerArgs,
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

pub fn run(a: BeatArgs) -> Result<(), Exit> {
    let schedule = Schedule::load(&a.schedule).map_err(|e| Exit::usage(e.to_string()))?;
    if a.list {
        return list(&schedule, a.json);
    }
    let app = a.broker.app()?;
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "host".into());
    let config = BeatConfig {
        holder: format!(
            "beat@{host}.{}.{}",
            std::process::id(),
            lovage::TaskId::new()
        ),
        lock_ttl: a.lock_ttl.max(Duration::from_millis(100)),
    };
    // SAFETY: the handler only stores to an atomic.
    unsafe {
        let handler = on_signal as extern "C" fn(libc::c_int) as *const () as libc::sighandler_t;
        libc::signal(libc::SIGTERM, handler);
        libc::signal(libc::SIGINT, handler);
    }
    tracing::info!(holder = %config.holder, entries = schedule.entries.len(), "beat started");
    lovage::beat::run(app.backend(), &schedule, &config, &|| {
        STOP.load(Ordering::SeqCst)
    })
    .map_err(|e| Exit::failed(e.to_string()))?;
    tracing::info!("beat stopped");
    Ok(())
}

fn list(schedule: &Schedule, as_json: bool) -> Result<(), Exit> {
    let now = Timestamp::now();
    let entries: Vec<ScheduleEntry> = schedule
        .entries
        .iter()
        .map(|e| ScheduleEntry {
            name: e.name.clone(),
            task: e.signature.task.clone(),
            when: e.describe(),
            queue: e
                .signature
                .options
                .queue
                .clone()
                .unwrap_or_else(|| lovage::DEFAULT_QUEUE.to_owned()),
            resources: e
                .signature
                .options
                .resources
                .iter()
                .flatten()
                .map(|(name, units)| format!("{name}={units}"))
                .collect::<Vec<_>>()
                .join(","),
            next_run: e
                .next_after(now)
                .map_or_else(|| "never".to_owned(), |t| t.to_string()),
        })
        .collect();
    output::select(as_json).schedule(&entries);
    Ok(())
}
