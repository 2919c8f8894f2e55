//! Rules the providers of HTTP model APIs share (`smol-durable-openai`,
//! `smol-durable-anthropic`): what an error status means, how long a `Retry-After` asks to
//! wait, and how a provider repeats its tries. The HTTP client is theirs; the rules are said
//! once, here.

use std::future::Future;
use std::time::Duration;

use crate::{ProviderError, ProviderErrorKind};

/// The longest `Retry-After` honoured, in seconds: a server cannot park a run for longer than a
/// minute per retry.
pub const MAX_RETRY_AFTER_SECS: f64 = 60.0;

/// A `Retry-After` header's seconds as milliseconds, at most [`MAX_RETRY_AFTER_SECS`]; `None`
/// when it is not a number (an HTTP date is not honoured).
pub fn retry_after_ms(header: &str) -> Option<u64> {
    header
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|seconds| seconds.is_finite())
        .map(|seconds| (seconds.clamp(0.0, MAX_RETRY_AFTER_SECS) * 1000.0) as u64)
}

/// The error for an answer with a non-success `status`: 429 is rate limited (with the
/// server's wait), any 5xx (Anthropic's 529 "overloaded" too) transient, anything else
/// terminal.
pub fn status_error(status: u16, message: String, retry_after_ms: Option<u64>) -> ProviderError {
    match status {
        429 => ProviderError::new(ProviderErrorKind::RateLimited { retry_after_ms }, message),
        500..=599 => ProviderError::transient(message),
        _ => ProviderError::terminal(message),
    }
}

/// Runs `attempt` until it succeeds, fails in a way another try cannot help, or
/// `max_retries` retries were made. Between tries it waits what the server asked for (the
/// `Option<u64>` beside the error, in milliseconds), else `backoff`, doubled after each retry.
pub async fn with_retries<T, F, Fut>(
    max_retries: u32,
    backoff: Duration,
    mut attempt: F,
) -> Result<T, ProviderError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, (ProviderError, Option<u64>)>>,
{
    let mut wait = backoff;
    let mut retries = 0;
    loop {
        match attempt().await {
            Ok(answer) => return Ok(answer),
            Err((error, retry_after_ms)) => {
                if retries >= max_retries || !error.is_retryable() {
                    return Err(error);
                }
                retries += 1;
                let pause = retry_after_ms.map_or(wait, Duration::from_millis);
                tokio::time::sleep(pause).await;
                wait = wait.saturating_mul(2);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_is_seconds_capped_at_a_minute() {
        assert_eq!(retry_after_ms("2"), Some(2_000));
        assert_eq!(retry_after_ms(" 0.5 "), Some(500));
        assert_eq!(retry_after_ms("3600"), Some(60_000));
        assert_eq!(retry_after_ms("-4"), Some(0));
        assert_eq!(retry_after_ms("Wed, 21 Oct 2026 07:28:00 GMT"), None);
        assert_eq!(retry_after_ms("NaN"), None);
    }

    #[test]
    fn statuses_say_whether_to_retry() {
        let error = status_error(429, "slow down".into(), Some(7));
        assert_eq!(error.retry_after_ms(), Some(7));
        assert!(error.is_retryable());
        assert_eq!(
            status_error(529, "x".into(), None).kind(),
            ProviderErrorKind::Transient
        );
        assert_eq!(
            status_error(503, "x".into(), None).kind(),
            ProviderErrorKind::Transient
        );
        assert_eq!(
            status_error(400, "x".into(), None).kind(),
            ProviderErrorKind::Terminal
        );
    }

    #[tokio::test]
    async fn tries_stop_at_success_at_a_terminal_error_or_after_the_retries() {
        let mut tries = 0;
        let answer: Result<u32, _> = with_retries(3, Duration::ZERO, || {
            tries += 1;
            let attempt = tries;
            async move {
                if attempt < 3 {
                    Err((ProviderError::transient("busy"), Some(0)))
                } else {
                    Ok(attempt)
                }
            }
        })
        .await;
        assert_eq!(answer.ok(), Some(3));
        let mut tries = 0;
        let failed: Result<(), _> = with_retries(3, Duration::ZERO, || {
            tries += 1;
            async { Err((ProviderError::terminal("no"), None)) }
        })
        .await;
        assert!(failed.is_err());
        assert_eq!(tries, 1, "a terminal error is not retried");
        let mut tries = 0;
        let exhausted: Result<(), _> = with_retries(2, Duration::ZERO, || {
            tries += 1;
            async { Err((ProviderError::transient("busy"), Some(0))) }
        })
        .await;
        assert!(exhausted.is_err());
        assert_eq!(tries, 3, "one try and two retries");
    }
}
