//! What becomes of a delivered task once it ended: one pure decision, [`decide`], from how it
//! ended and its options, that the finisher carries out (store, continue, then settle in the
//! broker; see PROTOCOL.md).

use std::time::Duration;

use lovage_core::{kinds, RetryPolicy, TaskError, TaskOptions};

/// How many times `reject_on_worker_lost` runs a task again after its process died, before
/// it fails with `WorkerLost` after all (a task that kills its process every time would
/// otherwise loop for ever).
pub(crate) const MAX_RUNS_ON_WORKER_LOST: u32 = 5;

/// How a delivered task ended.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Ran {
    /// It returned this encoded value.
    Succeeded(Vec<u8>),
    /// It returned an error, panicked, or its process died.
    Failed(TaskError),
    /// It was revoked or had expired, before it started or while it ran.
    Revoked(TaskError),
}

/// What the finisher does with a task that ended.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Settle {
    /// Record SUCCESS (unless `store` is false: the task ignores its result), continue its
    /// workflow, complete it in the broker.
    Succeed { store: bool },
    /// Record REVOKED, fail the rest of its workflow, complete it.
    Revoke,
    /// Record RETRY and run it again after `delay` (plus jitter up to it, when `jitter`):
    /// through the broker's retry, or sent anew when `resend` (it was acknowledged when it
    /// started, so the broker no longer holds it).
    Retry {
        delay: Duration,
        jitter: bool,
        resend: bool,
    },
    /// Record FAILURE, fail the rest of its workflow, discard it to the dead letters.
    Fail,
}

/// Decides what becomes of a task that ended as `ran` on delivery number `attempts`, under its
/// options (the call's merged over the registered task's, once, when it was reserved).
pub(crate) fn decide(ran: &Ran, attempts: u32, options: &TaskOptions) -> Settle {
    match ran {
        Ran::Succeeded(_) => Settle::Succeed {
            store: !options.ignore_result.unwrap_or(false),
        },
        Ran::Revoked(_) => Settle::Revoke,
        Ran::Failed(err) => {
            let resend = options.acks_late == Some(false);
            let lost_again = err.is(kinds::WORKER_LOST)
                && options.reject_on_worker_lost == Some(true)
                && attempts < MAX_RUNS_ON_WORKER_LOST;
            if lost_again {
                return Settle::Retry {
                    delay: Duration::ZERO,
                    jitter: false,
                    resend,
                };
            }
            let no_retries = RetryPolicy::retries(0);
            let policy = options.retry.as_ref().unwrap_or(&no_retries);
            if policy.should_retry(attempts, err) {
                Settle::Retry {
                    delay: policy.backoff(attempts),
                    jitter: policy.jitter,
                    resend,
                }
            } else {
                Settle::Fail
            }
        }
    }
}

impl Settle {
    /// The delay to wait before a retry, jitter applied (0 for anything else).
    pub(crate) fn retry_delay(&self) -> Duration {
        match *self {
            Settle::Retry { delay, jitter, .. } if jitter => delay.mul_f64(fastrand::f64()),
            Settle::Retry { delay, .. } => delay,
            _ => Duration::ZERO,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failed(kind: &str) -> Ran {
        Ran::Failed(TaskError::new(kind, "boom"))
    }

    fn retrying(n: u32) -> TaskOptions {
        TaskOptions {
            retry: Some(RetryPolicy {
                jitter: false,
                ..RetryPolicy::retries(n)
            }),
            ..TaskOptions::default()
        }
    }

    #[test]
    fn a_success_is_stored_unless_the_task_ignores_its_result() {
        let ok = Ran::Succeeded(b"1".to_vec());
        assert_eq!(
            decide(&ok, 1, &TaskOptions::default()),
            Settle::Succeed { store: true }
        );
        let ignoring = TaskOptions {
            ignore_result: Some(true),
            ..TaskOptions::default()
        };
        assert_eq!(decide(&ok, 1, &ignoring), Settle::Succeed { store: false });
    }

    #[test]
    fn a_revoked_task_is_revoked_whatever_its_retries() {
        let revoked = Ran::Revoked(TaskError::new(kinds::REVOKED, "revoked"));
        assert_eq!(decide(&revoked, 1, &retrying(5)), Settle::Revoke);
    }

    #[test]
    fn a_failure_without_retries_fails() {
        assert_eq!(
            decide(&failed("Boom"), 1, &TaskOptions::default()),
            Settle::Fail
        );
    }

    #[test]
    fn a_failure_retries_with_backoff_until_retries_run_out() {
        let o = retrying(2);
        let backoff = o.retry.as_ref().map(|p| p.backoff(1)).unwrap();
        assert_eq!(
            decide(&failed("Boom"), 1, &o),
            Settle::Retry {
                delay: backoff,
                jitter: false,
                resend: false
            }
        );
        assert!(matches!(
            decide(&failed("Boom"), 2, &o),
            Settle::Retry { .. }
        ));
        assert_eq!(decide(&failed("Boom"), 3, &o), Settle::Fail);
    }

    #[test]
    fn retry_on_limits_which_errors_retry() {
        let mut o = retrying(3);
        if let Some(p) = o.retry.as_mut() {
            p.retry_on = vec!["Flaky".into()];
        }
        assert!(matches!(
            decide(&failed("Flaky"), 1, &o),
            Settle::Retry { .. }
        ));
        assert_eq!(decide(&failed("Boom"), 1, &o), Settle::Fail);
    }

    #[test]
    fn errors_that_never_retry_fail_at_once() {
        for kind in RetryPolicy::never_retried() {
            assert_eq!(
                decide(&failed(kind), 1, &retrying(3)),
                Settle::Fail,
                "{kind}"
            );
        }
    }

    #[test]
    fn a_task_acknowledged_at_start_is_sent_anew_to_retry() {
        let o = TaskOptions {
            acks_late: Some(false),
            ..retrying(1)
        };
        assert!(matches!(
            decide(&failed("Boom"), 1, &o),
            Settle::Retry { resend: true, .. }
        ));
    }

    #[test]
    fn a_lost_worker_reruns_the_task_at_once_a_bounded_number_of_times() {
        let o = TaskOptions {
            reject_on_worker_lost: Some(true),
            ..TaskOptions::default()
        };
        let lost = failed(kinds::WORKER_LOST);
        for attempt in 1..MAX_RUNS_ON_WORKER_LOST {
            assert_eq!(
                decide(&lost, attempt, &o),
                Settle::Retry {
                    delay: Duration::ZERO,
                    jitter: false,
                    resend: false
                }
            );
        }
        assert_eq!(decide(&lost, MAX_RUNS_ON_WORKER_LOST, &o), Settle::Fail);
        // Without the option a lost worker is an ordinary failure.
        assert_eq!(decide(&lost, 1, &TaskOptions::default()), Settle::Fail);
    }

    #[test]
    fn jitter_stays_within_the_backoff() {
        let s = Settle::Retry {
            delay: Duration::from_secs(2),
            jitter: true,
            resend: false,
        };
        for _ in 0..100 {
            assert!(s.retry_delay() <= Duration::from_secs(2));
        }
        assert_eq!(Settle::Fail.retry_delay(), Duration::ZERO);
    }
}
