//! When and how soon a failed task runs again.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{kinds, TaskError};

/// A retry policy: how many times, how long to wait (exponential backoff with an upper bound and
/// optional full jitter), and which error kinds are worth retrying. The worker applies it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RetryPolicy {
    /// Retries after the first attempt; 0 means never retry.
    pub max_retries: u32,
    /// Delay before the first retry; each further retry doubles it.
    #[serde(with = "secs")]
    pub backoff_base: Duration,
    /// Upper bound on the delay.
    #[serde(with = "secs")]
    pub backoff_max: Duration,
    /// Pick the delay uniformly in `[0, computed]` (full jitter) so retries of many tasks do not
    /// arrive together.
    pub jitter: bool,
    /// Error kinds that are retried; empty means every kind except [`RetryPolicy::never_retried`].
    pub retry_on: Vec<String>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_retries: 0,
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(600),
            jitter: true,
            retry_on: Vec::new(),
        }
    }
}

impl RetryPolicy {
    /// A policy retrying up to `max_retries` times with the default backoff.
    pub fn retries(max_retries: u32) -> Self {
        RetryPolicy {
            max_retries,
            ..Default::default()
        }
    }

    /// Kinds that no policy retries unless named in `retry_on`: retrying them cannot help.
    pub fn never_retried() -> &'static [&'static str] {
        &[kinds::UNKNOWN_TASK, kinds::CODEC, kinds::CANCELLED]
    }

    /// Whether a task that failed with `err` on attempt `attempt` (1 = first run) runs again.
    pub fn should_retry(&self, attempt: u32, err: &TaskError) -> bool {
        if attempt > self.max_retries {
            return false;
        }
        if self.retry_on.is_empty() {
            !Self::never_retried().contains(&err.kind.as_str())
        } else {
            self.retry_on.contains(&err.kind)
        }
    }

    /// The delay before retry number `retry` (1 = first retry), before jitter.
    pub fn backoff(&self, retry: u32) -> Duration {
        let factor = 2u32.saturating_pow(retry.saturating_sub(1));
        self.backoff_base
            .checked_mul(factor)
            .unwrap_or(self.backoff_max)
            .min(self.backoff_max)
    }

    /// The delay before retry number `retry`, with jitter applied when enabled.
    pub fn delay(&self, retry: u32) -> Duration {
        let d = self.backoff(retry);
        if self.jitter {
            d.mul_f64(fastrand::f64())
        } else {
            d
        }
    }
}

mod secs {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Duration::try_from_secs_f64(f64::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let p = RetryPolicy {
            max_retries: 10,
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(10),
            jitter: false,
            retry_on: vec![],
        };
        let delays: Vec<u64> = (1..=6).map(|r| p.delay(r).as_secs()).collect();
        assert_eq!(delays, vec![1, 2, 4, 8, 10, 10]);
        assert_eq!(p.backoff(200), Duration::from_secs(10));
    }

    #[test]
    fn which_errors_retry() {
        let p = RetryPolicy::retries(2);
        let io = TaskError::new("Error", "x");
        assert!(p.should_retry(1, &io) && p.should_retry(2, &io) && !p.should_retry(3, &io));
        assert!(!p.should_retry(1, &TaskError::new(kinds::UNKNOWN_TASK, "x")));
        let only = RetryPolicy {
            retry_on: vec!["Timeout".into()],
            ..RetryPolicy::retries(5)
        };
        assert!(only.should_retry(1, &TaskError::new("Timeout", "")));
        assert!(!only.should_retry(1, &io));
    }

    proptest! {
        #[test]
        fn jittered_delay_never_exceeds_backoff(retry in 1u32..40, base_ms in 1u64..5000, max_ms in 1u64..100_000) {
            let p = RetryPolicy {
                backoff_base: Duration::from_millis(base_ms),
                backoff_max: Duration::from_millis(max_ms),
                ..RetryPolicy::retries(50)
            };
            prop_assert!(p.delay(retry) <= p.backoff(retry));
            prop_assert!(p.backoff(retry) <= p.backoff_max);
        }
    }
}
