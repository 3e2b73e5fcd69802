//! Wall-clock instants as brokers store them: milliseconds since the Unix epoch.

use std::fmt;
use std::ops::{Add, Sub};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// Milliseconds since 1970-01-01T00:00:00Z. Shared by processes and hosts, unlike `Instant`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Timestamp(i64);

/// Text that is not an RFC 3339 UTC time (the text as given).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not an RFC 3339 UTC time: {0:?} (expected e.g. 2026-11-24T10:00:00Z)")]
pub struct NotRfc3339(pub String);

impl Timestamp {
    /// Now, by the system clock.
    pub fn now() -> Self {
        let d = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO);
        Timestamp(d.as_millis() as i64)
    }

    /// From milliseconds since the epoch.
    pub fn from_millis(ms: i64) -> Self {
        Timestamp(ms)
    }

    /// Milliseconds since the epoch.
    pub fn as_millis(self) -> i64 {
        self.0
    }

    /// How long until `self` from now (zero if past).
    pub fn until(self) -> Duration {
        // Saturating: a stored time can be anything a row or a value says.
        Duration::from_millis(self.0.saturating_sub(Timestamp::now().0).max(0) as u64)
    }

    /// Parses RFC 3339 UTC text (`2026-11-24T10:00:00Z`, optional fraction, `+00:00` too).
    pub fn parse_rfc3339(text: &str) -> Result<Self, NotRfc3339> {
        let bad = || NotRfc3339(text.to_owned());
        let t = text.trim();
        let t = t
            .strip_suffix('Z')
            .or_else(|| t.strip_suffix("+00:00"))
            .ok_or_else(bad)?;
        let (date, time) = t.split_once(['T', ' ']).ok_or_else(bad)?;
        // Digits only (no sign), and few enough that no field can overflow.
        let num = |s: &str| {
            if s.is_empty() || s.len() > 4 || !s.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad());
            }
            s.parse::<i64>().map_err(|_| bad())
        };
        let d: Vec<&str> = date.split('-').collect();
        let (time, frac) = time.split_once('.').unwrap_or((time, ""));
        let h: Vec<&str> = time.split(':').collect();
        if d.len() != 3 || h.len() != 3 {
            return Err(bad());
        }
        let (y, mo, da) = (num(d[0])?, num(d[1])?, num(d[2])?);
        let (hh, mm, ss) = (num(h[0])?, num(h[1])?, num(h[2])?);
        if !(1..=12).contains(&mo) || !(1..=31).contains(&da) || hh > 23 || mm > 59 || ss > 60 {
            return Err(bad());
        }
        let ms = if frac.is_empty() {
            0
        } else {
            let f: String = frac.chars().chain(std::iter::repeat('0')).take(3).collect();
            num(&f)?
        };
        let days = days_from_civil(y, mo, da);
        Ok(Timestamp(
            (days * 86_400 + hh * 3600 + mm * 60 + ss) * 1000 + ms,
        ))
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day number since 1970-01-01.
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

impl fmt::Display for Timestamp {
    /// RFC 3339 UTC with milliseconds.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.rem_euclid(1000);
        let secs = self.0.div_euclid(1000);
        let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
        let s = secs.rem_euclid(86_400);
        write!(
            f,
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{ms:03}Z",
            s / 3600,
            s / 60 % 60,
            s % 60
        )
    }
}

impl Add<Duration> for Timestamp {
    type Output = Timestamp;
    fn add(self, d: Duration) -> Timestamp {
        Timestamp(
            self.0
                .saturating_add(d.as_millis().min(i64::MAX as u128) as i64),
        )
    }
}

impl Sub for Timestamp {
    type Output = Duration;
    /// The time from `other` to `self`, zero if `other` is later.
    fn sub(self, other: Timestamp) -> Duration {
        Duration::from_millis(self.0.saturating_sub(other.0).max(0) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_round_trip() {
        let t = Timestamp::parse_rfc3339("2026-11-24T10:15:30.250Z").unwrap();
        assert_eq!(t.to_string(), "2026-11-24T10:15:30.250Z");
        assert_eq!(
            Timestamp::parse_rfc3339("1970-01-01T00:00:00Z")
                .unwrap()
                .as_millis(),
            0
        );
        assert_eq!(
            Timestamp::parse_rfc3339("2000-03-01 00:00:00+00:00")
                .unwrap()
                .to_string(),
            "2000-03-01T00:00:00.000Z"
        );
        assert!(Timestamp::parse_rfc3339("tomorrow").is_err());
        // Out of range, not an overflow: years past 9999, signs inside fields.
        assert!(Timestamp::parse_rfc3339("99999999999999999-01-01T00:00:00Z").is_err());
        assert!(Timestamp::parse_rfc3339("10000-01-01T00:00:00Z").is_err());
        assert!(Timestamp::parse_rfc3339("2026-01-01T-1:00:00Z").is_err());
        assert!(Timestamp::parse_rfc3339("2026-01-01T00:+5:00Z").is_err());
        assert!(Timestamp::parse_rfc3339("2026-13-01T00:00:00Z").is_err());
        let now = Timestamp::now();
        assert_eq!(Timestamp::parse_rfc3339(&now.to_string()).unwrap(), now);
    }

    #[test]
    fn arithmetic() {
        let t = Timestamp::from_millis(1000);
        assert_eq!((t + Duration::from_secs(2)).as_millis(), 3000);
        assert_eq!(Timestamp::from_millis(3000) - t, Duration::from_secs(2));
        assert_eq!(t - Timestamp::from_millis(3000), Duration::ZERO);
    }

    /// Found by the fuzz target `time`: a stored time is whatever a row or a value says, and
    /// the far ends of the range overflowed (a panic in debug builds, a wrong wait in release).
    #[test]
    fn arithmetic_at_the_ends_of_the_range_saturates() {
        let (min, max) = (
            Timestamp::from_millis(i64::MIN),
            Timestamp::from_millis(i64::MAX),
        );
        assert_eq!(min.until(), Duration::ZERO);
        assert!(max.until() > Duration::from_secs(1 << 40));
        assert_eq!(max - min, Duration::from_millis(i64::MAX as u64));
        assert_eq!(min - max, Duration::ZERO);
        assert_eq!(min - Timestamp::from_millis(1), Duration::ZERO);
    }
}
