//! Limits that keep runs bounded, and how a stored value's size is measured against them.

use std::time::Duration;

use serde_json::Value;

use crate::store::StoreRetryPolicy;

/// The setting named in errors about oversized results.
pub(crate) const RESULT_LIMIT: &str = "Limits::max_result_bytes";

/// Limits that keep runs bounded.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Agent calls in flight per root run, children included (`None` = unlimited).
    pub max_parallel_agents: Option<usize>,
    /// Deepest child-workflow nesting (default 4).
    pub max_workflow_depth: u32,
    /// Longest `sleep()`, and longest `timeoutMs` of a wait (default one year).
    pub max_sleep_ms: u64,
    /// How long a cancelled script may take to unwind before it is dropped (default 5 s).
    pub cancel_grace: Duration,
    /// How often a step held by another worker is re-read while waiting (default 250 ms).
    pub wait_poll: Duration,
    /// How long an agent call runs before its step is claimed in the store (default 1 s). A
    /// call that ends sooner is stored with one durable write, claim and completion together
    /// ([`DurableStore::record_step`](crate::DurableStore::record_step)); a longer one is
    /// claimed when this elapses, so other processes (`status`, the inspector) see it held
    /// and a repeat after a crash keeps its step id. `Duration::ZERO` claims every call
    /// before it starts.
    pub deferred_claim: Duration,
    /// How often a running run looks for a cancellation requested by another process
    /// (default 1 s; one in this process is seen at once).
    pub cancel_poll: Duration,
    /// Largest stored step result or run result, as JSON text (default 8 MiB). A larger
    /// result fails the step (or run) with a limit error instead of reaching the database.
    pub max_result_bytes: usize,
    /// Largest prompt an `agent()` call may send, in bytes (default 1 MiB).
    pub max_prompt_bytes: usize,
    /// Largest event payload, as JSON text (default 64 KiB). Larger payloads are stored
    /// truncated, with `"truncated": true` and their original size (events are a log; the
    /// step row keeps the whole value).
    pub max_event_payload_bytes: usize,
    /// Largest signal payload, as JSON text (default 1 MiB): a larger one is refused when it
    /// is sent.
    pub max_signal_bytes: usize,
    /// How retryable store errors are retried (see [`StoreRetryPolicy`]).
    pub store_retry: StoreRetryPolicy,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_parallel_agents: None,
            max_workflow_depth: 4,
            max_sleep_ms: 365 * 24 * 60 * 60 * 1000,
            cancel_grace: Duration::from_secs(5),
            wait_poll: Duration::from_millis(250),
            cancel_poll: Duration::from_secs(1),
            deferred_claim: Duration::from_secs(1),
            max_result_bytes: 8 * 1024 * 1024,
            max_prompt_bytes: 1024 * 1024,
            max_event_payload_bytes: 64 * 1024,
            max_signal_bytes: 1024 * 1024,
            store_retry: StoreRetryPolicy::default(),
        }
    }
}

/// The length in bytes of `value`'s JSON text, counted without building the text
/// (`usize::MAX` if it cannot be serialized).
pub fn json_len(value: &impl serde::Serialize) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0 = self.0.saturating_add(bytes.len());
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    serde_json::to_writer(&mut count, value).map_or(usize::MAX, |()| count.0)
}

/// Why `value` may not be stored as `what` (e.g. "the agent result") when its JSON text is
/// longer than `max_bytes`, the setting named `limit`; `None` when it fits.
pub fn oversized(what: &str, value: &Value, max_bytes: usize, limit: &str) -> Option<String> {
    let bytes = json_len(value);
    (bytes > max_bytes).then(|| {
        format!(
            "{what} is {bytes} bytes of JSON, more than the {max_bytes}-byte limit \
             ({limit}); store large data elsewhere and return a reference"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn results_larger_than_the_limit_are_refused_by_their_json_size() {
        let limit = "Limits::max_result_bytes";
        assert_eq!(oversized("the result", &json!("abc"), 5, limit), None);
        let message = oversized("the result", &json!("abcd"), 5, limit).unwrap_or_default();
        assert!(
            message.starts_with("the result is 6 bytes of JSON"),
            "{message}"
        );
        assert!(message.contains("(Limits::max_result_bytes)"), "{message}");
        let nested = json!({ "a": [1, "é\"", null], "b": { "c": 2.5 } });
        assert_eq!(json_len(&nested), nested.to_string().len());
    }
}
