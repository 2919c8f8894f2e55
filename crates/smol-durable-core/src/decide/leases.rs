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
}
