//! Lease lengths: how long a claim lasts and how often it is renewed.

/// When a step lease claimed at `now` expires: the lease ttl plus the whole backoff a retry
/// policy may spend, so retries never outlive the lease.
pub fn step_lease_expires_at(now: i64, lease_ttl_ms: u64, retry: &RetryPolicy) -> i64 {
    let backoff = retry
        .backoff_ms
        .saturating_mul(u64::from(retry.max_tries.saturating_sub(1)));
    let lease = i64::try_from(lease_ttl_ms.saturating_add(backoff)).unwrap_or(i64::MAX);
    now.saturating_add(lease)
}

/// How often leases are renewed: a third of the ttl, so two renewals may fail before expiry.
pub fn heartbeat_interval_ms(lease_ttl_ms: u64) -> u64 {
    (lease_ttl_ms / 3).max(1)
}

/// Per-call retry inside one claimed step (`retry: {maxAttempts, backoffMs}`): the provider is
/// tried again, the step is not claimed again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Tries of the provider in total, at least 1 (the script's `maxAttempts`).
    pub max_tries: u32,
    /// Wait between tries.
    pub backoff_ms: u64,
}

/// The longest a call waits between two tries. A rate-limited provider that asks for longer is
/// not tried again inside the call: the call fails as rate limited, and a worker runs the run
/// again once the wait is over ([`attempt_retry_at`](super::attempt_retry_at)).
pub const MAX_RETRY_WAIT_MS: u64 = 60_000;

/// A call's `retry` option as written (`{maxAttempts, backoffMs}`): what it leaves out comes
/// from the engine's default policy ([`RetryPolicy::overridden_by`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetryOverride {
    /// `maxAttempts`, when given.
    pub max_tries: Option<u32>,
    /// `backoffMs`, when given.
    pub backoff_ms: Option<u64>,
}

impl RetryPolicy {
    /// This policy with what a call's `retry` option sets replacing its fields.
    pub fn overridden_by(self, call: RetryOverride) -> RetryPolicy {
        RetryPolicy {
            max_tries: call.max_tries.unwrap_or(self.max_tries).max(1),
            backoff_ms: call.backoff_ms.unwrap_or(self.backoff_ms),
        }
    }

    /// How long to wait before try `tries + 1` after try `tries` failed with `error`, or `None`
    /// when there is no next try: the error is not retryable, the tries are used up, or the
    /// provider asked to wait more than [`MAX_RETRY_WAIT_MS`]. The wait is the policy's backoff,
    /// or the provider's `retry_after` when that is longer.
    pub fn next_try_in(&self, tries: u32, error: &crate::ProviderError) -> Option<u64> {
        if !error.is_retryable() || tries >= self.max_tries {
            return None;
        }
        let wait = self.backoff_ms.max(error.retry_after_ms().unwrap_or(0));
        (wait <= MAX_RETRY_WAIT_MS).then_some(wait)
    }
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_tries: 1,
            backoff_ms: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_backoff_extends_the_step_lease() {
        let none = RetryPolicy::default();
        let long = RetryPolicy {
            max_tries: 3,
            backoff_ms: 120_000,
        };
        assert_eq!(step_lease_expires_at(1_000, 60_000, &none), 61_000);
        assert_eq!(step_lease_expires_at(1_000, 60_000, &long), 301_000);
        assert_eq!(heartbeat_interval_ms(60_000), 20_000);
    }

    #[test]
    fn a_rate_limit_hint_lengthens_the_wait_up_to_a_cap() {
        use crate::{ProviderError, ProviderErrorKind};
        let policy = RetryPolicy {
            max_tries: 3,
            backoff_ms: 100,
        };
        let limited = |after: Option<u64>| {
            ProviderError::new(
                ProviderErrorKind::RateLimited {
                    retry_after_ms: after,
                },
                "429",
            )
        };
        assert_eq!(policy.next_try_in(1, &limited(None)), Some(100));
        assert_eq!(policy.next_try_in(1, &limited(Some(5))), Some(100));
        assert_eq!(policy.next_try_in(1, &limited(Some(2_000))), Some(2_000));
        assert_eq!(
            policy.next_try_in(1, &limited(Some(MAX_RETRY_WAIT_MS + 1))),
            None,
            "longer waits are left to the worker"
        );
        assert_eq!(policy.next_try_in(3, &limited(None)), None, "tries used up");
        assert_eq!(
            policy.next_try_in(1, &ProviderError::terminal("400")),
            None,
            "not retryable"
        );
        assert_eq!(
            policy.next_try_in(1, &ProviderError::transient("503")),
            Some(100)
        );
    }

    #[test]
    fn a_call_s_retry_option_replaces_only_what_it_sets() {
        let default = RetryPolicy {
            max_tries: 3,
            backoff_ms: 1_000,
        };
        let backoff_only = RetryOverride {
            max_tries: None,
            backoff_ms: Some(50),
        };
        assert_eq!(
            default.overridden_by(backoff_only),
            RetryPolicy {
                max_tries: 3,
                backoff_ms: 50
            }
        );
        assert_eq!(default.overridden_by(RetryOverride::default()), default);
        assert_eq!(
            RetryPolicy::default().overridden_by(backoff_only),
            RetryPolicy {
                max_tries: 1,
                backoff_ms: 50
            },
            "without a default, smol-wf's one try"
        );
    }
}
