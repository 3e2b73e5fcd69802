//! Periodic tasks (Celery's beat): a schedule of interval and cron entries, sent by whichever
//! `lovage beat` process holds the leader lock in the broker.
//!
//! Several beats can run for safety; one leads (a lock with a TTL, renewed a few times per TTL)
//! and the others wait to take over when it stops renewing. A tick's task id is derived from
//! the entry's name and the tick's time, and ticks are sent with `enqueue_once`, so even two
//! leaders for a moment (a paused process whose lock lapsed) send each tick once.
//!
//! **Missed ticks.** Each entry's last tick is kept in the broker. A leader that starts (or
//! takes over) after ticks were missed sends the most recent missed tick once (`missed =
//! "once"`, the default), or none (`missed = "skip"`), then follows the schedule. A leader
//! that falls behind (a long pause) does the same.
//!
//! ```toml
//! timezone = "Europe/Paris"          # default for cron entries; UTC when left out
//!
//! [[entry]]
//! name = "heartbeat"
//! task = "lovage.noop"
//! every = "10s"                      # ticks at multiples of 10 s since the Unix epoch
//!
//! [[entry]]
//! name = "nightly-report"
//! task = "lovage.shell"
//! args = [["sh", "-c", "make report"]]
//! cron = "30 2 * * *"
//! queue = "reports"
//! priority = 5
//! expires = "1h"
//! missed = "skip"
//!
//! [[entry]]
//! name = "retrain"
//! task = "ml.retrain"
//! every = "1h"
//! resources = "gpu=1,mem=0.5"        # runs only on workers started with --resources gpu=…
//! ```

pub mod cron;

use std::path::Path;
use std::time::Duration;

use jiff::tz::TimeZone;
use lovage_broker::{Backend, BrokerError, Envelope, Timestamp};
use lovage_core::{parse_duration, Codec, Signature, TaskId};
use serde::Deserialize;

pub use cron::{Cron, CronError, FieldError};

/// Why a schedule cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum BeatError {
    /// The schedule file cannot be read.
    #[error("schedule {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The schedule file is wrong; the message says where.
    #[error("schedule {path}: {source}")]
    Schedule {
        /// The file.
        path: String,
        /// What is wrong, and in which entry (boxed: the broker's errors are the common case).
        #[source]
        source: Box<ScheduleError>,
    },
    /// The broker failed.
    #[error(transparent)]
    Broker(#[from] BrokerError),
}

/// A schedule that does not parse, and where.
#[derive(Debug, thiserror::Error)]
pub enum ScheduleError {
    /// Not valid TOML, or a key the schedule does not know.
    #[error(transparent)]
    Toml(#[from] toml::de::Error),
    /// The schedule's default time zone is unknown.
    #[error("time zone {name:?}: {source}")]
    TimeZone {
        /// The zone's name.
        name: String,
        /// Why it is unknown.
        #[source]
        source: jiff::Error,
    },
    /// One entry is wrong.
    #[error("entry {entry:?}: {problem}")]
    Entry {
        /// The entry's name.
        entry: String,
        /// What is wrong with it.
        problem: EntryProblem,
    },
}

/// What is wrong with one entry of a schedule.
#[derive(Debug, thiserror::Error)]
pub enum EntryProblem {
    /// Two entries have this name.
    #[error("the name is used twice")]
    DuplicateName,
    /// Neither or both of `every` and `cron`.
    #[error("give exactly one of every or cron")]
    EveryOrCron,
    /// `every` is not a duration.
    #[error("every: {0}")]
    Every(#[source] lovage_core::ParseError),
    /// `every` is below 10 ms.
    #[error("every must be at least 10ms")]
    EveryTooShort,
    /// `cron` does not parse.
    #[error(transparent)]
    Cron(#[from] CronError),
    /// The entry's time zone is unknown.
    #[error("time zone {name:?}: {source}")]
    TimeZone {
        /// The zone's name.
        name: String,
        /// Why it is unknown.
        #[source]
        source: jiff::Error,
    },
    /// `args` cannot be encoded.
    #[error("args: {0}")]
    Args(String),
    /// `args` is neither an array nor a table.
    #[error("args must be an array or a table")]
    ArgsShape,
    /// `priority` is above 9.
    #[error("priority must be 0-9")]
    Priority,
    /// `expires` is not a duration.
    #[error("expires: {0}")]
    Expires(#[source] lovage_core::ParseError),
    /// `resources` does not parse (`gpu=1,mem=0.5`).
    #[error("{0}")]
    Resources(String),
}

/// What to do with ticks missed while no beat was leading.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Missed {
    /// Send the most recent missed tick once.
    #[default]
    Once,
    /// Send none.
    Skip,
}

/// When an entry fires.
#[derive(Debug, Clone)]
pub enum When {
    /// At every multiple of this interval since the Unix epoch.
    Every(Duration),
    /// At the minutes a cron expression names, in a time zone.
    Cron(Cron, TimeZone),
}

/// One periodic task.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Unique within the schedule; names the tick ids and the entry's state in the broker.
    pub name: String,
    /// The call to send.
    pub signature: Signature,
    /// When.
    pub when: When,
    /// Missed-tick policy.
    pub missed: Missed,
}

impl Entry {
    /// The first tick strictly after `after`.
    pub fn next_after(&self, after: Timestamp) -> Option<Timestamp> {
        match &self.when {
            When::Every(every) => {
                let step = step_ms(*every);
                let ms = after.as_millis();
                // None past the end of time, not an overflow.
                let next = ms.div_euclid(step).checked_add(1)?.checked_mul(step)?;
                Some(Timestamp::from_millis(next))
            }
            When::Cron(cron, tz) => {
                let after = jiff::Timestamp::from_millisecond(after.as_millis()).ok()?;
                cron.next_after(after, tz)
                    .map(|t| Timestamp::from_millis(t.as_millisecond()))
            }
        }
    }

    /// The latest tick at or before `at`, if one is after `after`.
    fn latest_between(&self, after: Timestamp, at: Timestamp) -> Option<Timestamp> {
        let mut tick = self.next_after(after)?;
        if tick > at {
            return None;
        }
        // Intervals jump straight there; cron steps (bounded: a missed day is 1,440 minutes).
        if let When::Every(every) = &self.when {
            let step = step_ms(*every);
            return Some(Timestamp::from_millis(
                at.as_millis().div_euclid(step) * step,
            ));
        }
        while let Some(next) = self.next_after(tick).filter(|n| *n <= at) {
            tick = next;
        }
        Some(tick)
    }

    /// A short description of when it fires.
    pub fn describe(&self) -> String {
        match &self.when {
            When::Every(d) => format!("every {}", humanize(*d)),
            When::Cron(c, tz) => format!("cron {c} ({})", tz.iana_name().unwrap_or("UTC")),
        }
    }

    /// The id of this entry's tick at `tick`: the same in every beat process.
    pub fn tick_id(&self, tick: Timestamp) -> TaskId {
        let name = format!("lovage-beat\0{}\0{}", self.name, tick.as_millis());
        TaskId::from_uuid(uuid::Uuid::new_v5(
            &uuid::Uuid::NAMESPACE_OID,
            name.as_bytes(),
        ))
    }

    /// Where the entry's last tick is kept.
    fn state_key(&self) -> TaskId {
        let name = format!("lovage-beat-state\0{}", self.name);
        TaskId::from_uuid(uuid::Uuid::new_v5(
            &uuid::Uuid::NAMESPACE_OID,
            name.as_bytes(),
        ))
    }

    /// The envelope of the tick at `tick`.
    pub fn envelope(&self, tick: Timestamp) -> Envelope {
        let mut env = Envelope::from_signature(self.signature.clone());
        env.id = self.tick_id(tick);
        env.created = tick;
        env
    }
}

/// An interval in whole milliseconds, at least one; one longer than an `i64` holds is as long
/// as one can be (a bare `as` cast wrapped, down to zero for 2^61 s).
fn step_ms(every: Duration) -> i64 {
    i64::try_from(every.as_millis()).unwrap_or(i64::MAX).max(1)
}

fn humanize(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s >= 3600.0 && s % 3600.0 == 0.0 {
        format!("{}h", s / 3600.0)
    } else if s >= 60.0 && s % 60.0 == 0.0 {
        format!("{}m", s / 60.0)
    } else {
        format!("{s}s")
    }
}

/// A parsed schedule.
#[derive(Debug, Clone)]
pub struct Schedule {
    /// Its entries, in file order.
    pub entries: Vec<Entry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSchedule {
    timezone: Option<String>,
    #[serde(default)]
    entry: Vec<FileEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileEntry {
    name: String,
    task: String,
    args: Option<toml::Value>,
    every: Option<String>,
    cron: Option<String>,
    timezone: Option<String>,
    queue: Option<String>,
    priority: Option<u8>,
    expires: Option<String>,
    resources: Option<String>,
    #[serde(default)]
    missed: Missed,
}

impl Schedule {
    /// Reads and checks a schedule file (TOML; see the crate docs).
    pub fn load(path: &Path) -> Result<Schedule, BeatError> {
        let text = std::fs::read_to_string(path).map_err(|source| BeatError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Schedule::parse(&text).map_err(|source| BeatError::Schedule {
            path: path.display().to_string(),
            source: Box::new(source),
        })
    }

    /// Parses a schedule's text.
    pub fn parse(text: &str) -> Result<Schedule, ScheduleError> {
        let file: FileSchedule = toml::from_str(text)?;
        let zone = |name: Option<&str>| -> Result<TimeZone, (String, jiff::Error)> {
            match name {
                None | Some("UTC") => Ok(TimeZone::UTC),
                Some(n) => TimeZone::get(n).map_err(|e| (n.to_owned(), e)),
            }
        };
        let default_tz = file.timezone.as_deref();
        zone(default_tz).map_err(|(name, source)| ScheduleError::TimeZone { name, source })?;
        let mut entries: Vec<Entry> = Vec::new();
        for e in file.entry {
            let at = |problem: EntryProblem| ScheduleError::Entry {
                entry: e.name.clone(),
                problem,
            };
            if entries.iter().any(|x| x.name == e.name) {
                return Err(at(EntryProblem::DuplicateName));
            }
            let when = match (&e.every, &e.cron) {
                (Some(every), None) => {
                    let d = parse_duration(every).map_err(|p| at(EntryProblem::Every(p)))?;
                    if d < Duration::from_millis(10) {
                        return Err(at(EntryProblem::EveryTooShort));
                    }
                    When::Every(d)
                }
                (None, Some(c)) => When::Cron(
                    Cron::parse(c).map_err(|p| at(EntryProblem::Cron(p)))?,
                    zone(e.timezone.as_deref().or(default_tz))
                        .map_err(|(name, source)| at(EntryProblem::TimeZone { name, source }))?,
                ),
                _ => return Err(at(EntryProblem::EveryOrCron)),
            };
            let args = match e.args {
                None => serde_json::Value::Array(Vec::new()),
                Some(v) => {
                    serde_json::to_value(v).map_err(|m| at(EntryProblem::Args(m.to_string())))?
                }
            };
            if !(args.is_array() || args.is_object()) {
                return Err(at(EntryProblem::ArgsShape));
            }
            let mut signature = Signature::new(e.task.clone(), &args, Codec::Json)
                .map_err(|m| at(EntryProblem::Args(m.to_string())))?;
            signature.options.queue = e.queue;
            signature.options.priority = match e.priority {
                Some(p) if p > 9 => return Err(at(EntryProblem::Priority)),
                p => p,
            };
            signature.options.expires = e
                .expires
                .as_deref()
                .map(parse_duration)
                .transpose()
                .map_err(|p| at(EntryProblem::Expires(p)))?;
            // As a client call's resources: the tick waits in the resource queue
            // (`Envelope::from_signature`) and only a worker that has them takes it.
            signature.options.resources = e
                .resources
                .as_deref()
                .map(lovage_core::parse_resources)
                .transpose()
                .map_err(|m| at(EntryProblem::Resources(m)))?
                .filter(|r| !r.is_empty());
            entries.push(Entry {
                name: e.name,
                signature,
                when,
                missed: e.missed,
            });
        }
        Ok(Schedule { entries })
    }
}

/// How a beat process runs.
#[derive(Debug, Clone)]
pub struct BeatConfig {
    /// This process's name in the lock.
    pub holder: String,
    /// How long the leader's lock lasts without renewal; a follower takes over within about
    /// this long after the leader stops.
    pub lock_ttl: Duration,
}

/// How often a leader re-remembers the entries' last ticks (the broker keeps them 7 days).
const STATE_REFRESH: Duration = Duration::from_secs(24 * 3600);

/// The lock beats compete for.
pub const LOCK_NAME: &str = "lovage-beat";

/// Runs the schedule until `stop` returns true: leads when it can, sends due ticks.
pub fn run(
    backend: &Backend,
    schedule: &Schedule,
    config: &BeatConfig,
    stop: &dyn Fn() -> bool,
) -> Result<(), BeatError> {
    let mut leading = false;
    let mut next: Vec<Option<Timestamp>> = vec![None; schedule.entries.len()];
    let mut last: Vec<Option<Timestamp>> = vec![None; schedule.entries.len()];
    let mut outage_logged = false;
    let mut last_refresh = std::time::Instant::now();
    while !stop() {
        let held = match backend
            .locks()
            .lock(LOCK_NAME, &config.holder, config.lock_ttl)
        {
            Ok(held) => {
                if outage_logged {
                    tracing::info!("broker reachable again");
                    outage_logged = false;
                }
                held
            }
            Err(e) => {
                if !outage_logged {
                    tracing::warn!(error = %e, "broker unreachable; retrying");
                    outage_logged = true;
                }
                false
            }
        };
        if !held {
            if leading {
                tracing::warn!("lost the leader lock; following");
            }
            leading = false;
            sleep_until_stopped(config.lock_ttl / 10, stop);
            continue;
        }
        let now = Timestamp::now();
        if !leading {
            tracing::info!(holder = %config.holder, "leading: sending the schedule's ticks");
            let caught_up: Result<Vec<_>, BeatError> = schedule
                .entries
                .iter()
                .map(|entry| catch_up(backend, entry, now))
                .collect();
            match caught_up {
                Ok(due) => {
                    (next, last) = due.into_iter().unzip();
                    leading = true;
                    if let Err(e) = prune_published(backend) {
                        tracing::warn!(error = %e, "could not prune old published schedules");
                    }
                }
                Err(e) => {
                    // Still holding the lock: try again next round (the sends are idempotent).
                    tracing::warn!(error = %e, "could not catch up with the schedule; retrying");
                    sleep_until_stopped(config.lock_ttl / 10, stop);
                    continue;
                }
            }
        }
        for (i, entry) in schedule.entries.iter().enumerate() {
            let Some(due) = next[i] else { continue };
            if due > now {
                continue;
            }
            // Behind by more than one tick (a pause): the latest one only, like a restart.
            let tick = entry.latest_between(Timestamp::from_millis(due.as_millis() - 1), now);
            if let Some(tick) = tick {
                if let Err(e) = fire(backend, entry, tick) {
                    tracing::warn!(entry = %entry.name, error = %e, "could not send a tick; retrying");
                    continue; // `next` unchanged: tried again next round
                }
                last[i] = Some(tick);
            }
            next[i] = entry.next_after(now);
        }
        if last_refresh.elapsed() >= STATE_REFRESH {
            // Re-remember each entry's last tick, so a sparse entry's survives the broker's
            // 7-day expiry while a beat leads.
            last_refresh = std::time::Instant::now();
            for entry in &schedule.entries {
                if let Ok(Some(b)) = backend.results().get_blob(entry.state_key()) {
                    let _ = backend.results().put_blob(entry.state_key(), &b);
                }
            }
        }
        // Each round, so a reader sees the next runs and this leader within a lock TTL.
        if let Err(e) = publish(backend, &published(schedule, config, &next, &last)) {
            tracing::warn!(error = %e, "could not publish the schedule; retrying");
        }
        let renew = Timestamp::now() + config.lock_ttl / 3;
        let wake = next.iter().flatten().copied().fold(renew, |a, b| a.min(b));
        sleep_until_stopped(wake.until(), stop);
    }
    if leading {
        let _ = backend.locks().unlock(LOCK_NAME, &config.holder);
    }
    Ok(())
}

/// On becoming leader: the entry's missed tick (per its policy), then its next tick and its
/// last tick sent.
fn catch_up(
    backend: &Backend,
    entry: &Entry,
    now: Timestamp,
) -> Result<(Option<Timestamp>, Option<Timestamp>), BeatError> {
    let last = backend
        .results()
        .get_blob(entry.state_key())?
        .and_then(|b| <[u8; 8]>::try_from(b.as_slice()).ok())
        .map(|b| Timestamp::from_millis(i64::from_le_bytes(b)));
    let sent = match (last, entry.missed) {
        (Some(last), Missed::Once) => match entry.latest_between(last, now) {
            Some(missed) => {
                tracing::info!(entry = %entry.name, tick = %missed, "sending a tick missed while no beat led");
                fire(backend, entry, missed)?;
                Some(missed)
            }
            None => {
                remember(backend, entry, last)?;
                Some(last)
            }
        },
        (Some(last), Missed::Skip) => {
            remember(backend, entry, last)?;
            Some(last)
        }
        (None, _) => None,
    };
    Ok((entry.next_after(now), sent))
}

/// Keeps `tick` as the entry's last (again: the broker forgets it after 7 days, and an entry
/// that fires less often than weekly must still know it).
fn remember(backend: &Backend, entry: &Entry, tick: Timestamp) -> Result<(), BeatError> {
    backend
        .results()
        .put_blob(entry.state_key(), &tick.as_millis().to_le_bytes())?;
    Ok(())
}

/// Sends the tick (once, whoever else sends it) and remembers it as the entry's last.
fn fire(backend: &Backend, entry: &Entry, tick: Timestamp) -> Result<(), BeatError> {
    let env = entry.envelope(tick);
    tracing::debug!(entry = %entry.name, task_id = %env.id, %tick, "tick");
    backend.broker().enqueue_once(&[env])?;
    remember(backend, entry, tick)
}

/// The shared dict ([`lovage_broker::shared`]) where leading beats publish their schedules:
/// one key per schedule (its [`Schedule::fingerprint`]), so beats that run the same schedule
/// write the same key and a reader sees it once.
pub const PUBLISHED_DICT: &str = "lovage:beat:schedules";

/// The most entries of one schedule that are published (the rest are counted in
/// [`Published::more`]), so a key stays small whatever the file holds.
pub const PUBLISHED_ENTRIES: usize = 500;

/// The most schedules a reader lists; past it, the oldest published are left out.
pub const PUBLISHED_SCHEDULES: usize = 50;

/// A published schedule unrefreshed for this long is removed by the next beat that leads
/// (its beats are gone; a reader also marks it stale long before).
pub const PUBLISHED_KEPT: Duration = Duration::from_secs(24 * 3600);

/// One entry as a leading beat publishes it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, Deserialize)]
pub struct PublishedEntry {
    /// The entry's name.
    pub name: String,
    /// The task it sends.
    pub task: String,
    /// The queue it sends to.
    pub queue: String,
    /// When it fires ([`Entry::describe`]).
    pub schedule: String,
    /// Its next tick, if it has one.
    pub next_run: Option<Timestamp>,
    /// The last tick sent (by this beat or one that led before), if known.
    pub last_run: Option<Timestamp>,
}

/// A schedule as the beat leading it publishes it in the broker, refreshed each round.
#[derive(Debug, Clone, PartialEq, serde::Serialize, Deserialize)]
pub struct Published {
    /// The schedule's fingerprint (its key in [`PUBLISHED_DICT`]).
    pub id: String,
    /// The leading beat's lock holder name.
    pub leader: String,
    /// When it last published.
    pub published: Timestamp,
    /// Its lock's TTL in ms: a reader counts the schedule stale once it is unrefreshed for
    /// a few of these.
    pub lock_ttl_ms: u64,
    /// The entries, in file order (at most [`PUBLISHED_ENTRIES`]).
    pub entries: Vec<PublishedEntry>,
    /// How many entries were left out past [`PUBLISHED_ENTRIES`].
    pub more: usize,
}

impl Published {
    /// Whether no beat refreshed it lately (three lock TTLs, at least 30 s): its beats stopped.
    pub fn is_stale(&self, now: Timestamp) -> bool {
        let within =
            Duration::from_millis(self.lock_ttl_ms.saturating_mul(3)).max(Duration::from_secs(30));
        now - self.published > within
    }
}

impl Schedule {
    /// A name for this schedule that every beat running the same entries computes alike.
    pub fn fingerprint(&self) -> String {
        let mut text = String::new();
        for e in &self.entries {
            let queue = e
                .signature
                .options
                .queue
                .as_deref()
                .unwrap_or(lovage_broker::DEFAULT_QUEUE);
            text.push_str(&format!(
                "{}\0{}\0{}\0{}\n",
                e.name,
                e.signature.task,
                queue,
                e.describe()
            ));
        }
        uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, text.as_bytes()).to_string()
    }
}

/// What a leading beat publishes now: each entry with its next and last tick.
fn published(
    schedule: &Schedule,
    config: &BeatConfig,
    next: &[Option<Timestamp>],
    last: &[Option<Timestamp>],
) -> Published {
    let entries = schedule
        .entries
        .iter()
        .enumerate()
        .take(PUBLISHED_ENTRIES)
        .map(|(i, e)| PublishedEntry {
            name: e.name.clone(),
            task: e.signature.task.clone(),
            queue: e
                .signature
                .options
                .queue
                .clone()
                .unwrap_or_else(|| lovage_broker::DEFAULT_QUEUE.to_owned()),
            schedule: e.describe(),
            next_run: next.get(i).copied().flatten(),
            last_run: last.get(i).copied().flatten(),
        })
        .collect();
    Published {
        id: schedule.fingerprint(),
        leader: config.holder.clone(),
        published: Timestamp::now(),
        lock_ttl_ms: u64::try_from(config.lock_ttl.as_millis()).unwrap_or(u64::MAX),
        entries,
        more: schedule.entries.len().saturating_sub(PUBLISHED_ENTRIES),
    }
}

/// Writes `p` under its key (one atomic step).
fn publish(backend: &Backend, p: &Published) -> Result<(), BeatError> {
    let value = serde_json::to_vec(p)
        .map_err(|e| BeatError::Broker(BrokerError::Corrupt(format!("published schedule: {e}"))))?;
    backend
        .shared()
        .dict_set(PUBLISHED_DICT, &[(p.id.clone().into_bytes(), value)])?;
    Ok(())
}

/// Removes published schedules nobody refreshed for [`PUBLISHED_KEPT`] (and values that do
/// not decode), so the dict holds only schedules beats still run.
fn prune_published(backend: &Backend) -> Result<(), BeatError> {
    let now = Timestamp::now();
    for (key, value) in backend.shared().dict_entries(PUBLISHED_DICT)? {
        let gone = serde_json::from_slice::<Published>(&value)
            .map_or(true, |p| now - p.published > PUBLISHED_KEPT);
        if gone {
            // Only if unchanged: a beat may have refreshed it meanwhile.
            backend
                .shared()
                .dict_compare_and_set(PUBLISHED_DICT, &key, Some(&value), None)?;
        }
    }
    Ok(())
}

/// The schedules leading beats publish, newest first (at most [`PUBLISHED_SCHEDULES`]);
/// values that do not decode are skipped.
pub fn read_published(backend: &Backend) -> Result<Vec<Published>, BrokerError> {
    let mut out: Vec<Published> = backend
        .shared()
        .dict_entries(PUBLISHED_DICT)?
        .into_iter()
        .filter_map(|(_, v)| serde_json::from_slice(&v).ok())
        .collect();
    out.sort_by_key(|p| std::cmp::Reverse(p.published));
    out.truncate(PUBLISHED_SCHEDULES);
    Ok(out)
}

fn sleep_until_stopped(d: Duration, stop: &dyn Fn() -> bool) {
    let until = std::time::Instant::now() + d;
    while !stop() {
        let left = until.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return;
        }
        std::thread::sleep(left.min(Duration::from_millis(50)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCHEDULE: &str = r#"
timezone = "Europe/Paris"

[[entry]]
name = "heartbeat"
task = "lovage.noop"
every = "10s"

[[entry]]
name = "report"
task = "lovage.shell"
args = [["sh", "-c", "echo hi"]]
cron = "30 8 * * *"
queue = "reports"
priority = 5
missed = "skip"
"#;

    #[test]
    fn a_schedule_parses_and_ticks() {
        let s = Schedule::parse(SCHEDULE).unwrap();
        assert_eq!(s.entries.len(), 2);
        let t = Timestamp::from_millis(1_700_000_003_000);
        assert_eq!(
            s.entries[0].next_after(t),
            Some(Timestamp::from_millis(1_700_000_010_000))
        );
        let report = &s.entries[1];
        assert_eq!(report.missed, Missed::Skip);
        assert_eq!(report.signature.options.queue.as_deref(), Some("reports"));
        assert!(
            report.describe().contains("Europe/Paris"),
            "{}",
            report.describe()
        );
        // 2026-11-24T00:00Z → 08:30 Paris is 07:30Z.
        let next = report
            .next_after(Timestamp::from_millis(1_795_478_400_000))
            .unwrap();
        assert_eq!(
            next.as_millis(),
            1_795_478_400_000 + 7 * 3_600_000 + 1_800_000
        );
        // Ids: the same tick, the same id; another tick, another id.
        let a = s.entries[0].tick_id(t);
        assert_eq!(a, s.entries[0].tick_id(t));
        assert_ne!(a, s.entries[0].tick_id(Timestamp::from_millis(1)));
    }

    /// A leading beat publishes its schedule under one key, which a second beat running the
    /// same schedule shares; a reader sees each entry with a next run to come.
    #[test]
    fn a_leading_beat_publishes_its_schedule_once_per_schedule() {
        let backend = lovage_broker::connect("memory://beat-publish").unwrap();
        let s = Schedule::parse(SCHEDULE).unwrap();
        let same = Schedule::parse(SCHEDULE).unwrap();
        assert_eq!(s.fingerprint(), same.fingerprint());
        let other =
            Schedule::parse("[[entry]]\nname = \"x\"\ntask = \"t\"\nevery = \"1m\"\n").unwrap();
        assert_ne!(s.fingerprint(), other.fingerprint());
        let config = |holder: &str| BeatConfig {
            holder: holder.into(),
            lock_ttl: Duration::from_millis(300),
        };
        let stop = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|scope| {
            for holder in ["beat-a", "beat-b"] {
                let (backend, s, stop) = (&backend, &s, &stop);
                scope.spawn(move || {
                    run(backend, s, &config(holder), &|| {
                        stop.load(std::sync::atomic::Ordering::SeqCst)
                    })
                    .unwrap()
                });
            }
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            let found = loop {
                let p = read_published(&backend).unwrap();
                if !p.is_empty() {
                    break p;
                }
                assert!(std::time::Instant::now() < deadline, "nothing published");
                std::thread::sleep(Duration::from_millis(20));
            };
            stop.store(true, std::sync::atomic::Ordering::SeqCst);
            assert_eq!(found.len(), 1, "one key per schedule: {found:?}");
            let p = &found[0];
            assert_eq!(p.id, s.fingerprint());
            assert!(p.leader == "beat-a" || p.leader == "beat-b", "{p:?}");
            assert!(!p.is_stale(Timestamp::now()));
            let names: Vec<&str> = p.entries.iter().map(|e| e.name.as_str()).collect();
            assert_eq!(names, ["heartbeat", "report"]);
            assert_eq!(p.entries[1].queue, "reports");
            assert_eq!(p.entries[0].schedule, "every 10s");
            assert!(p.entries.iter().all(|e| e
                .next_run
                .is_some_and(|t| t.as_millis() > p.published.as_millis() - 1_000)));
        });
        assert_eq!(
            read_published(&backend).unwrap().len(),
            1,
            "still one after both ran"
        );
    }

    #[test]
    fn the_latest_missed_tick_is_found() {
        let s = Schedule::parse(SCHEDULE).unwrap();
        let e = &s.entries[0];
        let last = Timestamp::from_millis(1_000_000);
        let now = Timestamp::from_millis(1_055_000);
        assert_eq!(
            e.latest_between(last, now),
            Some(Timestamp::from_millis(1_050_000))
        );
        assert_eq!(e.latest_between(now, now), None);
    }

    /// Found while writing the fuzz target `schedule`: an interval whose milliseconds do not fit an i64
    /// was cast to zero (2^61 s is 2^64 · 125 ms) and the next tick divided by it.
    #[test]
    fn intervals_too_long_for_the_clock_do_not_overflow() {
        let t = Timestamp::from_millis(1_795_514_400_000);
        for every in [
            "2305843009213693952",
            "18000000000000000000",
            "100000000000000d",
        ] {
            let text = format!("[[entry]]\nname = \"x\"\ntask = \"t\"\nevery = \"{every}\"\n");
            let s = Schedule::parse(&text).unwrap();
            let e = &s.entries[0];
            assert_eq!(
                e.next_after(t),
                Some(Timestamp::from_millis(i64::MAX)),
                "{every}"
            );
            assert_eq!(e.latest_between(t, t), None, "{every}");
        }
        let late = Timestamp::from_millis(i64::MAX - 1);
        let s =
            Schedule::parse("[[entry]]\nname = \"x\"\ntask = \"t\"\nevery = \"10s\"\n").unwrap();
        assert_eq!(s.entries[0].next_after(late), None);
    }

    #[test]
    fn schedule_mistakes_name_the_entry() {
        assert!(matches!(
            Schedule::parse("[[entry]]\nname = \"x\"\ntask = \"t\"\n"),
            Err(ScheduleError::Entry { ref entry, problem: EntryProblem::EveryOrCron }) if entry == "x"
        ));
        let e = Schedule::parse("[[entry]]\nname = \"x\"\ntask = \"t\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("entry \"x\"") && e.contains("every or cron"),
            "{e}"
        );
        let e = Schedule::parse("[[entry]]\nname = \"x\"\ntask = \"t\"\ncron = \"* *\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("5 fields"), "{e}");
        let e = Schedule::parse(
            "[[entry]]\nname = \"x\"\ntask = \"t\"\nevery = \"1s\"\ntimezone = \"Mars/Base\"\ncron = \"* * * * *\"\n",
        )
        .unwrap_err().to_string();
        assert!(e.contains("exactly one"), "{e}");
        let e = Schedule::parse("timezone = \"Mars/Base\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("Mars/Base"), "{e}");
        let e = Schedule::parse("[[entry]]\nname = \"x\"\ntask = \"t\"\nevry = \"1s\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("evry"), "{e}");
    }
}
