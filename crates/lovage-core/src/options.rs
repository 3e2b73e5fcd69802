//! Per-task options: what the `#[task(...)]` attribute sets and a call may override.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::codec::Codec;
use crate::retry::RetryPolicy;

pub use crate::resources::{
    check_resource_name, check_resources, parse_resources, resource_queue, ResourceUnits,
    Resources, MAX_WORKER_RESOURCES,
};

/// Options of a task or of one call to it. `None` means "not set here": a call's options are
/// laid over the task's with [`TaskOptions::merged_over`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TaskOptions {
    /// Queue the task is sent to (default `"default"`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue: Option<String>,
    /// 0–9, higher runs first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub priority: Option<u8>,
    /// Hard time limit: the task is killed after this long (process pool) and fails with
    /// `TimeLimitExceeded`.
    #[serde(skip_serializing_if = "Option::is_none", with = "opt_secs")]
    pub time_limit: Option<Duration>,
    /// Soft time limit: the task's cancel token fires after this long.
    #[serde(skip_serializing_if = "Option::is_none", with = "opt_secs")]
    pub soft_time_limit: Option<Duration>,
    /// Retry policy after a failure.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetryPolicy>,
    /// Rate limit such as `"100/s"`, enforced by the queue.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<String>,
    /// Do not store the result.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ignore_result: Option<bool>,
    /// Record a STARTED state when a worker starts the task (default: no, as in Celery).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub track_started: Option<bool>,
    /// Acknowledge after the task finished (default: yes: a worker dying mid-task hands it
    /// back). `false` acknowledges when it starts: a task then runs at most once and is lost
    /// with its worker.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub acks_late: Option<bool>,
    /// When the process running the task dies (process pool), run it again instead of failing
    /// it with `WorkerLost` (default: no).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reject_on_worker_lost: Option<bool>,
    /// Codec for arguments and result.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub codec: Option<Codec>,
    /// Run no sooner than this long after sending.
    #[serde(skip_serializing_if = "Option::is_none", with = "opt_secs")]
    pub countdown: Option<Duration>,
    /// Run no sooner than this instant, in milliseconds since the Unix epoch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eta: Option<i64>,
    /// Do not run later than this long after sending (the task is then REVOKED as expired).
    #[serde(skip_serializing_if = "Option::is_none", with = "opt_secs")]
    pub expires: Option<Duration>,
    /// Abstract resources the task holds while it runs, name → units (Dask's
    /// `resources={'GPU': 1}`): it runs only on a worker started with at least that many
    /// units of each (`lovage worker --resources gpu=2`), and a worker runs at most as many
    /// such tasks at once as its units allow. See [`resource_queue`] for how it is routed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,
}

impl TaskOptions {
    /// The resources this call holds while it runs (entries of 0 units left out).
    pub fn resources_needed(&self) -> impl Iterator<Item = (&str, ResourceUnits)> + '_ {
        self.resources
            .iter()
            .flatten()
            .filter(|(_, u)| !u.is_zero())
            .map(|(n, u)| (n.as_str(), *u))
    }

    /// These options with every unset field taken from `base`.
    pub fn merged_over(&self, base: &TaskOptions) -> TaskOptions {
        TaskOptions {
            queue: self.queue.clone().or_else(|| base.queue.clone()),
            priority: self.priority.or(base.priority),
            time_limit: self.time_limit.or(base.time_limit),
            soft_time_limit: self.soft_time_limit.or(base.soft_time_limit),
            retry: self.retry.clone().or_else(|| base.retry.clone()),
            rate_limit: self.rate_limit.clone().or_else(|| base.rate_limit.clone()),
            ignore_result: self.ignore_result.or(base.ignore_result),
            track_started: self.track_started.or(base.track_started),
            acks_late: self.acks_late.or(base.acks_late),
            reject_on_worker_lost: self.reject_on_worker_lost.or(base.reject_on_worker_lost),
            codec: self.codec.or(base.codec),
            countdown: self.countdown.or(base.countdown),
            eta: self.eta.or(base.eta),
            expires: self.expires.or(base.expires),
            resources: self.resources.clone().or_else(|| base.resources.clone()),
        }
    }
}

/// A rate limit or a duration that does not parse: what was written, and what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// The count of a rate limit is not a positive number (or so small that the interval
    /// between two runs is past what a `Duration` holds).
    #[error("not a rate limit: {0:?} (expected e.g. 100/s, 30/m, 5/h)")]
    NotARate(String),
    /// The period of a rate limit is not s, m or h.
    #[error("unknown period {period:?} in rate limit {text:?} (expected s, m or h)")]
    UnknownPeriod {
        /// The whole rate limit.
        text: String,
        /// What stood after the `/`.
        period: String,
    },
    /// The number of a duration does not parse.
    #[error("not a duration: {0:?} (expected e.g. 250ms, 30s, 5m, 2h)")]
    NotADuration(String),
    /// The unit of a duration is not one of ms, s, m, h, d.
    #[error("unknown unit {unit:?} in duration {text:?} (expected ms, s, m, h or d)")]
    UnknownUnit {
        /// The whole duration.
        text: String,
        /// What followed the number.
        unit: String,
    },
    /// The duration is negative, not finite, or too long to represent.
    #[error("duration {0:?} is out of range")]
    OutOfRange(String),
}

/// Parses a rate limit, `"100/s"`, `"30/m"`, `"5/h"` (a bare number is per second, as in
/// Celery), into the time between two runs.
pub fn parse_rate(text: &str) -> Result<Duration, ParseError> {
    let t = text.trim();
    let (count, per) = t.split_once('/').unwrap_or((t, "s"));
    let count: f64 = count
        .trim()
        .parse()
        .ok()
        .filter(|c: &f64| *c > 0.0 && c.is_finite())
        .ok_or_else(|| ParseError::NotARate(text.to_owned()))?;
    let period = match per.trim() {
        "s" | "sec" => 1.0,
        "m" | "min" => 60.0,
        "h" | "hour" => 3600.0,
        other => {
            return Err(ParseError::UnknownPeriod {
                text: text.to_owned(),
                period: other.to_owned(),
            })
        }
    };
    // A count small enough makes the interval longer than a Duration holds.
    Duration::try_from_secs_f64(period / count).map_err(|_| ParseError::NotARate(text.to_owned()))
}

/// Parses a duration written as a number of seconds (`"2.5"`) or with a unit:
/// `"250ms"`, `"30s"`, `"5m"`, `"2h"`, `"1d"`.
pub fn parse_duration(text: &str) -> Result<Duration, ParseError> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let value: f64 = num
        .parse()
        .map_err(|_| ParseError::NotADuration(text.to_owned()))?;
    let scale = match unit.trim() {
        "" | "s" | "sec" | "secs" => 1.0,
        "ms" => 1e-3,
        "us" | "µs" => 1e-6,
        "m" | "min" | "mins" => 60.0,
        "h" | "hr" | "hours" => 3600.0,
        "d" | "days" => 86400.0,
        other => {
            return Err(ParseError::UnknownUnit {
                text: text.to_owned(),
                unit: other.to_owned(),
            })
        }
    };
    Duration::try_from_secs_f64(value * scale).map_err(|_| ParseError::OutOfRange(text.to_owned()))
}

/// Serialises `Option<Duration>` as fractional seconds, readable in JSON.
pub(crate) mod opt_secs {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&d.as_secs_f64()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let secs: Option<f64> = Option::deserialize(d)?;
        secs.map(|s| Duration::try_from_secs_f64(s).map_err(serde::de::Error::custom))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limits_parse_to_intervals() {
        assert_eq!(parse_rate("100/s").unwrap(), Duration::from_millis(10));
        assert_eq!(parse_rate("30/m").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_rate("2/h").unwrap(), Duration::from_secs(1800));
        assert_eq!(parse_rate("4").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_rate("0/s"), Err(ParseError::NotARate("0/s".into())));
        let e = parse_rate("10/d").unwrap_err();
        assert_eq!(
            e,
            ParseError::UnknownPeriod {
                text: "10/d".into(),
                period: "d".into()
            }
        );
        assert!(e.to_string().contains("period"), "{e}");
        assert!(parse_rate("fast").is_err());
    }

    /// A count so small that the interval is past `Duration`'s range panicked
    /// (`Duration::from_secs_f64` of infinity).
    #[test]
    fn rates_too_slow_to_represent_are_refused() {
        assert_eq!(
            parse_rate("1e-320/s"),
            Err(ParseError::NotARate("1e-320/s".into()))
        );
        assert!(parse_rate("1e-300/h").is_err());
    }

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("2.5").unwrap(), Duration::from_millis(2500));
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration(" 1h ").unwrap(), Duration::from_secs(3600));
        let e = parse_duration("5 parsecs").unwrap_err();
        assert!(
            matches!(&e, ParseError::UnknownUnit { unit, .. } if unit == "parsecs"),
            "{e:?}"
        );
        assert!(e.to_string().contains("unknown unit"), "{e}");
        assert_eq!(
            parse_duration("soon"),
            Err(ParseError::NotADuration("soon".into()))
        );
        let huge = "9".repeat(400);
        assert_eq!(
            parse_duration(&huge),
            Err(ParseError::OutOfRange(huge.clone()))
        );
    }

    #[test]
    fn call_resources_fill_in_for_the_task() {
        let call = TaskOptions {
            resources: Some(parse_resources("gpu=0.5").unwrap()),
            ..Default::default()
        };
        let m = TaskOptions::default().merged_over(&call);
        assert_eq!(
            m.resources_needed().collect::<Vec<_>>(),
            vec![("gpu", ResourceUnits::from_milli(500))]
        );
    }

    #[test]
    fn call_options_override_task_options() {
        let task = TaskOptions {
            queue: Some("cpu".into()),
            priority: Some(3),
            ..Default::default()
        };
        let call = TaskOptions {
            priority: Some(9),
            time_limit: Some(Duration::from_secs(1)),
            ..Default::default()
        };
        let m = call.merged_over(&task);
        assert_eq!(m.queue.as_deref(), Some("cpu"));
        assert_eq!(m.priority, Some(9));
        assert_eq!(m.time_limit, Some(Duration::from_secs(1)));
        let json = serde_json::to_string(&m).unwrap();
        assert_eq!(serde_json::from_str::<TaskOptions>(&json).unwrap(), m);
    }
}
