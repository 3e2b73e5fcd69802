//! Cron expressions: five fields (minute, hour, day of month, month, day of week) in a time
//! zone, with `*`, lists, ranges, steps and names, plus `@hourly`, `@daily`, `@weekly`,
//! `@monthly`, `@yearly`.

use std::fmt;

use jiff::tz::TimeZone;
use jiff::Timestamp;

/// A parsed cron expression.
#[derive(Clone, PartialEq, Eq)]
pub struct Cron {
    text: String,
    minutes: u64,
    hours: u64,
    days: u64,
    months: u64,
    weekdays: u64,
    /// Day of month and day of week both restricted: either may match (as in Vixie cron).
    either_day: bool,
}

impl fmt::Debug for Cron {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Cron({:?})", self.text)
    }
}

impl fmt::Display for Cron {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const WEEKDAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

/// Looked at for the next match, minute by minute: a little over four years, so `29 2 *`
/// (leap days) is found.
const SEARCH_MINUTES: i64 = 4 * 366 * 24 * 60 + 60;

impl Cron {
    /// Parses `minute hour day-of-month month day-of-week` (or an `@` shorthand).
    pub fn parse(text: &str) -> Result<Cron, CronError> {
        let expanded = match text.trim() {
            "@yearly" | "@annually" => "0 0 1 1 *",
            "@monthly" => "0 0 1 * *",
            "@weekly" => "0 0 * * 0",
            "@daily" | "@midnight" => "0 0 * * *",
            "@hourly" => "0 * * * *",
            other => other,
        };
        let fields: Vec<&str> = expanded.split_whitespace().collect();
        let [min, hour, dom, month, dow] = fields[..] else {
            return Err(CronError::FieldCount {
                text: text.to_owned(),
                got: fields.len(),
            });
        };
        let field = |f: &str, field: &'static str, lo: u32, hi: u32, names: &[&str]| {
            parse_field(f, lo, hi, names).map_err(|reason| CronError::Field {
                text: text.to_owned(),
                field,
                reason,
            })
        };
        let mut weekdays = field(dow, "day of week", 0, 7, &WEEKDAYS)?;
        if weekdays & (1 << 7) != 0 {
            weekdays |= 1; // 7 is Sunday too
        }
        Ok(Cron {
            text: text.trim().to_owned(),
            minutes: field(min, "minute", 0, 59, &[])?,
            hours: field(hour, "hour", 0, 23, &[])?,
            days: field(dom, "day of month", 1, 31, &[])?,
            months: field(month, "month", 1, 12, &MONTHS)?,
            weekdays,
            either_day: dom != "*" && dow != "*",
        })
    }

    /// Whether the civil minute of `t` in `tz` matches.
    fn matches(&self, t: Timestamp, tz: &TimeZone) -> bool {
        let z = t.to_zoned(tz.clone());
        let bit = |mask: u64, v: i64| mask & (1u64 << v) != 0;
        if !bit(self.minutes, z.minute().into())
            || !bit(self.hours, z.hour().into())
            || !bit(self.months, z.month().into())
        {
            return false;
        }
        let dom = bit(self.days, z.day().into());
        let dow = bit(self.weekdays, z.weekday().to_sunday_zero_offset().into());
        if self.either_day {
            dom || dow
        } else {
            dom && dow
        }
    }

    /// The first matching minute strictly after `after`, in `tz` (real minutes: a local time
    /// skipped by a daylight-saving change does not occur, one repeated occurs twice).
    pub fn next_after(&self, after: Timestamp, tz: &TimeZone) -> Option<Timestamp> {
        let start = (after.as_second().div_euclid(60) + 1) * 60;
        (0..SEARCH_MINUTES)
            .map(|i| Timestamp::from_second(start + i * 60).ok())
            .take_while(Option::is_some)
            .flatten()
            .find(|t| self.matches(*t, tz))
    }
}

/// A cron expression that does not parse, and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CronError {
    /// Not five fields (after expanding an `@` shorthand).
    #[error(
        "cron {text:?}: expected 5 fields (minute hour day-of-month month day-of-week), got {got}"
    )]
    FieldCount {
        /// The expression.
        text: String,
        /// How many fields it has.
        got: usize,
    },
    /// One field is wrong.
    #[error("cron {text:?}, {field}: {reason}")]
    Field {
        /// The expression.
        text: String,
        /// Which field: minute, hour, day of month, month, day of week.
        field: &'static str,
        /// What is wrong with it.
        reason: FieldError,
    },
}

/// What is wrong with one field of a cron expression.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FieldError {
    /// A value is neither a number nor one of the field's names.
    #[error("{value:?} is not a number{hint}")]
    NotANumber {
        /// The value.
        value: String,
        /// The names the field takes, if any (e.g. " or a name (jan, feb, ...)").
        hint: String,
    },
    /// A number outside the field's range.
    #[error("{value} is outside {lo}-{hi}")]
    OutOfRange { value: u32, lo: u32, hi: u32 },
    /// A step (`*/n`) that is not a positive number.
    #[error("step {0:?} must be a positive number")]
    BadStep(String),
    /// A range whose start is after its end.
    #[error("range {0:?} runs backwards")]
    Backwards(String),
}

fn parse_field(text: &str, lo: u32, hi: u32, names: &[&str]) -> Result<u64, FieldError> {
    let value = |v: &str| -> Result<u32, FieldError> {
        if let Some(i) = names.iter().position(|n| n.eq_ignore_ascii_case(v)) {
            // Months are named from 1, weekdays from 0.
            return Ok(i as u32 + u32::from(names.len() == 12));
        }
        let n: u32 = v.parse().map_err(|_| FieldError::NotANumber {
            value: v.to_owned(),
            hint: name_hint(names),
        })?;
        if n < lo || n > hi {
            return Err(FieldError::OutOfRange { value: n, lo, hi });
        }
        Ok(n)
    };
    let mut mask = 0u64;
    for part in text.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => {
                let step: u32 = s
                    .parse()
                    .ok()
                    .filter(|s| *s > 0)
                    .ok_or_else(|| FieldError::BadStep(s.to_owned()))?;
                (r, step)
            }
            None => (part, 1),
        };
        let (from, to) = match range {
            "*" => (lo, hi),
            r => match r.split_once('-') {
                Some((a, b)) => (value(a)?, value(b)?),
                None if step > 1 => (value(r)?, hi),
                None => {
                    let v = value(r)?;
                    (v, v)
                }
            },
        };
        if from > to {
            return Err(FieldError::Backwards(range.to_owned()));
        }
        for v in (from..=to).step_by(step as usize) {
            mask |= 1 << v;
        }
    }
    Ok(mask)
}

fn name_hint(names: &[&str]) -> String {
    if names.is_empty() {
        String::new()
    } else {
        format!(" or a name ({})", names.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    #[test]
    fn fields_and_shorthands_parse() {
        let c = Cron::parse("*/15 9-17 * * mon-fri").unwrap();
        let utc = TimeZone::UTC;
        // 2026-11-24 is a Tuesday.
        assert_eq!(
            c.next_after(at("2026-11-24T09:07:00Z"), &utc),
            Some(at("2026-11-24T09:15:00Z"))
        );
        assert_eq!(
            c.next_after(at("2026-11-27T17:50:00Z"), &utc),
            Some(at("2026-11-30T09:00:00Z")),
            "Friday evening to Monday morning"
        );
        let daily = Cron::parse("@daily").unwrap();
        assert_eq!(
            daily.next_after(at("2026-11-24T00:00:00Z"), &utc),
            Some(at("2026-11-25T00:00:00Z")),
            "strictly after"
        );
        let months = Cron::parse("0 12 1 jan,jul *").unwrap();
        assert_eq!(
            months.next_after(at("2026-02-01T00:00:00Z"), &utc),
            Some(at("2026-07-01T12:00:00Z"))
        );
        let sunday7 = Cron::parse("0 0 * * 7").unwrap();
        assert_eq!(
            sunday7.next_after(at("2026-11-24T00:00:00Z"), &utc),
            Some(at("2026-11-29T00:00:00Z"))
        );
    }

    #[test]
    fn day_of_month_or_day_of_week_when_both_are_given() {
        // The 1st, or any Monday.
        let c = Cron::parse("0 0 1 * mon").unwrap();
        assert_eq!(
            c.next_after(at("2026-11-24T00:00:00Z"), &TimeZone::UTC),
            Some(at("2026-11-30T00:00:00Z"))
        );
        assert_eq!(
            c.next_after(at("2026-11-30T00:00:00Z"), &TimeZone::UTC),
            Some(at("2026-12-01T00:00:00Z"))
        );
    }

    #[test]
    fn time_zones_and_daylight_saving_are_honoured() {
        let paris = TimeZone::get("Europe/Paris").unwrap();
        let c = Cron::parse("30 8 * * *").unwrap();
        // Winter: Paris is UTC+1.
        assert_eq!(
            c.next_after(at("2026-11-24T00:00:00Z"), &paris),
            Some(at("2026-11-24T07:30:00Z"))
        );
        // Summer: UTC+2.
        assert_eq!(
            c.next_after(at("2026-07-01T00:00:00Z"), &paris),
            Some(at("2026-07-01T06:30:00Z"))
        );
        // 02:30 does not exist on 2026-03-29 in Paris: the next one is the day after.
        let skipped = Cron::parse("30 2 * * *").unwrap();
        assert_eq!(
            skipped.next_after(at("2026-03-28T12:00:00Z"), &paris),
            Some(at("2026-03-30T00:30:00Z"))
        );
    }

    #[test]
    fn mistakes_say_which_field() {
        let e = Cron::parse("61 * * * *").unwrap_err();
        assert!(
            matches!(
                &e,
                CronError::Field {
                    field: "minute",
                    reason: FieldError::OutOfRange { value: 61, .. },
                    ..
                }
            ),
            "{e:?}"
        );
        let e = e.to_string();
        assert!(e.contains("minute") && e.contains("outside 0-59"), "{e}");
        let e = Cron::parse("* * * *").unwrap_err().to_string();
        assert!(e.contains("5 fields"), "{e}");
        let e = Cron::parse("* * * foo *").unwrap_err().to_string();
        assert!(e.contains("month") && e.contains("jan"), "{e}");
        let e = Cron::parse("*/0 * * * *").unwrap_err().to_string();
        assert!(e.contains("step"), "{e}");
        assert!(matches!(
            Cron::parse("5-1 * * * *"),
            Err(CronError::Field {
                reason: FieldError::Backwards(_),
                ..
            })
        ));
    }
}
