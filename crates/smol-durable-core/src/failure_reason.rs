//! The stored form of what failed a run, and the [`Error`] it reads back as.
//!
//! A failed run, attempt or task keeps `{"message": …, "kind": …}` plus what the kind needs to
//! be rebuilt: the provider's own kind and retry hint, the budget's numbers, the script error's
//! kind and location, a store error's kind and operation, a child run's own failure as `cause`.
//! So a process that only reads the store (`Engine::wait`, `status`) sees the same typed error
//! the process that ran the attempt returned, and `decide`'s retry rule can be read off it.

use serde_json::{json, Map, Value};

use crate::error::{
    Error, ErrorKind, ProviderError, ProviderErrorKind, ScriptError, ScriptErrorKind, StoreError,
    StoreErrorKind,
};

impl Error {
    /// The failure reason stored with a run this error failed: `{"message", "kind", …}`.
    pub fn failure_reason(&self) -> Value {
        let mut reason = Map::new();
        reason.insert("message".into(), json!(self.to_string()));
        reason.insert("kind".into(), json!(self.kind()));
        let details = match self {
            Error::Provider(error) => json!({ "provider": {
                "kind": error.kind().as_str(),
                "message": error.to_string(),
                "retryAfterMs": error.retry_after_ms(),
            }}),
            Error::BudgetExhausted { spent, total } => json!({ "spent": spent, "total": total }),
            Error::Script(error) => json!({ "script": {
                "kind": error.kind(),
                "message": error.message(),
                "location": error.location(),
            }}),
            Error::Store(error) => json!({ "store": {
                "kind": error.kind(),
                "operation": error.operation(),
                "message": error.message(),
                "persistent": error.status() == crate::ErrorStatus::Persistent,
            }}),
            Error::SignatureMismatch { checkpoint } => json!({ "checkpoint": checkpoint }),
            Error::Workflow {
                cause: Some(cause), ..
            } => json!({ "cause": cause.failure_reason() }),
            _ => Value::Null,
        };
        if let Value::Object(details) = details {
            reason.extend(details);
        }
        Value::Object(reason)
    }

    /// The error a stored failure reason stands for (the inverse of
    /// [`failure_reason`](Self::failure_reason)). Kinds this version does not rebuild into
    /// their own variant read as [`Error::Recorded`] with the stored kind; a reason without a
    /// kind (written by smol-wf or before kinds were stored) reads as a script error.
    pub fn from_failure_reason(reason: &Value) -> Error {
        let text = |value: &Value| value.as_str().unwrap_or_default().to_owned();
        let message = text(&reason["message"]);
        let kind = serde_json::from_value::<ErrorKind>(reason["kind"].clone()).ok();
        let rebuilt = match kind {
            None => Some(Error::Script(ScriptError::thrown(message.clone()))),
            Some(ErrorKind::Provider) => {
                let provider = &reason["provider"];
                provider_kind(&provider["kind"], provider["retryAfterMs"].as_u64()).map(|kind| {
                    Error::Provider(ProviderError::new(kind, text(&provider["message"])))
                })
            }
            Some(ErrorKind::BudgetExhausted) => {
                match (reason["spent"].as_u64(), reason["total"].as_u64()) {
                    (Some(spent), Some(total)) => Some(Error::BudgetExhausted { spent, total }),
                    _ => None,
                }
            }
            Some(ErrorKind::SchemaMismatch) => Some(Error::SchemaMismatch {
                message: message.clone(),
            }),
            Some(ErrorKind::Script | ErrorKind::Limit) => {
                let script = &reason["script"];
                serde_json::from_value::<ScriptErrorKind>(script["kind"].clone())
                    .ok()
                    .map(|kind| {
                        let error = ScriptError::new(kind, text(&script["message"]));
                        Error::Script(match script["location"].as_str() {
                            Some(location) => error.with_location(location),
                            None => error,
                        })
                    })
            }
            Some(ErrorKind::Cancelled) => Some(Error::Cancelled),
            Some(ErrorKind::Store) => {
                let store = &reason["store"];
                serde_json::from_value::<StoreErrorKind>(store["kind"].clone())
                    .ok()
                    .map(|kind| {
                        let error = StoreError::recorded(
                            kind,
                            text(&store["operation"]),
                            text(&store["message"]),
                        );
                        Error::Store(if store["persistent"] == json!(true) {
                            error.persistent()
                        } else {
                            error
                        })
                    })
            }
            Some(ErrorKind::SignatureMismatch) => {
                reason["checkpoint"]
                    .as_str()
                    .map(|checkpoint| Error::SignatureMismatch {
                        checkpoint: checkpoint.to_owned(),
                    })
            }
            Some(ErrorKind::Workflow) => Some(Error::Workflow {
                message: message.clone(),
                cause: reason
                    .get("cause")
                    .filter(|cause| cause.is_object())
                    .map(|cause| Box::new(Error::from_failure_reason(cause))),
            }),
            Some(ErrorKind::InvalidRequest) => Some(Error::InvalidRequest(message.clone())),
            Some(_) => None,
        };
        rebuilt.unwrap_or_else(|| Error::Recorded {
            kind: kind.unwrap_or(ErrorKind::Script),
            message,
        })
    }
}

fn provider_kind(name: &Value, retry_after_ms: Option<u64>) -> Option<ProviderErrorKind> {
    Some(match name.as_str()? {
        "rate_limited" => ProviderErrorKind::RateLimited { retry_after_ms },
        "transient" => ProviderErrorKind::Transient,
        "terminal" => ProviderErrorKind::Terminal,
        "invalid_response" => ProviderErrorKind::InvalidResponse,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(error: Error) -> Error {
        let reason = error.failure_reason();
        let back = Error::from_failure_reason(&reason);
        assert_eq!(back.kind(), error.kind(), "{reason}");
        assert_eq!(back.to_string(), error.to_string(), "{reason}");
        assert_eq!(back.failure_reason(), reason);
        back
    }

    #[test]
    fn typed_failures_read_back_as_the_same_variant() {
        let rate_limited = ProviderError::new(
            ProviderErrorKind::RateLimited {
                retry_after_ms: Some(1_500),
            },
            "429 slow down",
        );
        match round_trip(Error::Provider(rate_limited)) {
            Error::Provider(error) => {
                assert_eq!(error.retry_after_ms(), Some(1_500));
                assert!(error.is_retryable());
            }
            other => panic!("{other:?}"),
        }
        match round_trip(Error::Provider(ProviderError::terminal("400 bad request"))) {
            Error::Provider(error) => assert_eq!(error.kind(), ProviderErrorKind::Terminal),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            round_trip(Error::BudgetExhausted {
                spent: 12,
                total: 10
            }),
            Error::BudgetExhausted {
                spent: 12,
                total: 10
            }
        ));
        assert!(matches!(
            round_trip(Error::SchemaMismatch {
                message: "Structured output did not match JSON Schema: /a missing".into()
            }),
            Error::SchemaMismatch { .. }
        ));
        let limit = ScriptError::new(ScriptErrorKind::Limit, "too big").with_location("f.mjs:1:2");
        match round_trip(Error::Script(limit)) {
            Error::Script(error) => {
                assert_eq!(error.kind(), ScriptErrorKind::Limit);
                assert_eq!(error.location(), Some("f.mjs:1:2"));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(round_trip(Error::Cancelled), Error::Cancelled));
        let store = StoreError::new(StoreErrorKind::Unavailable, "complete_step", "locked");
        match round_trip(Error::Store(store.clone())) {
            Error::Store(error) => {
                assert_eq!(error.operation(), "complete_step");
                assert!(error.is_retryable());
            }
            other => panic!("{other:?}"),
        }
        match round_trip(Error::Store(store.persistent())) {
            Error::Store(error) => assert!(!error.is_retryable(), "its retries were used up"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_failed_child_keeps_its_own_failure_as_cause() {
        let child = Error::Workflow {
            message: "child workflow ./c.mjs failed: 400".into(),
            cause: Some(Box::new(Error::Provider(ProviderError::terminal("400")))),
        };
        match round_trip(child) {
            Error::Workflow {
                cause: Some(cause), ..
            } => assert!(matches!(*cause, Error::Provider(_))),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn reasons_without_details_keep_their_kind() {
        let reason = json!({ "message": "held by w2", "kind": "busy" });
        let error = Error::from_failure_reason(&reason);
        assert_eq!(error.kind(), ErrorKind::Busy);
        assert_eq!(error.to_string(), "held by w2");
        let legacy = Error::from_failure_reason(&json!({ "message": "Error: boom" }));
        assert_eq!(legacy.kind(), ErrorKind::Script);
        assert_eq!(legacy.to_string(), "Error: boom");
        let garbage = Error::from_failure_reason(&json!("not an object"));
        assert_eq!(garbage.kind(), ErrorKind::Script);
    }
}
