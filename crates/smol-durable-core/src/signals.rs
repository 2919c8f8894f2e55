//! Waits and signals as the host and scripts see them: what a `waitFor` call asks
//! ([`WaitSpec`], checked here once for every script engine), what [`Engine::signal`] answers
//! ([`SignalReceipt`]) and what [`Engine::waits`] lists ([`OpenWait`]).
//!
//! [`Engine::signal`]: crate::Engine::signal
//! [`Engine::waits`]: crate::Engine::waits

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::store::StepRecord;

/// The longest signal name, in bytes.
pub const MAX_SIGNAL_NAME_BYTES: usize = 128;

/// Most names one `waitForAny` may wait for.
pub const MAX_WAIT_NAMES: usize = 64;

/// The options a wait knows.
const WAIT_OPTIONS: [&str; 5] = ["timeoutMs", "deadline", "schema", "description", "default"];

/// A bad argument to `waitFor`, `waitForAny` or `signal`: the script sees it thrown at the
/// call (a `RangeError` when `out_of_range`, else a `TypeError`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ArgumentError {
    /// What is wrong, naming the function and the argument.
    pub message: String,
    /// A number beyond what is allowed (rather than of the wrong type or form).
    pub out_of_range: bool,
}

impl ArgumentError {
    fn new(message: String) -> Self {
        Self {
            message,
            out_of_range: false,
        }
    }
}

/// Checks a signal name: 1 to [`MAX_SIGNAL_NAME_BYTES`] ASCII letters, digits and `_ - . : /`.
pub fn check_signal_name(name: &str) -> Result<(), String> {
    let valid = !name.is_empty()
        && name.len() <= MAX_SIGNAL_NAME_BYTES
        && name
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || b"_-.:/".contains(&byte));
    if valid {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not a signal name: use 1 to {MAX_SIGNAL_NAME_BYTES} ASCII letters, \
             digits and _ - . : /"
        ))
    }
}

/// What a `waitFor` / `waitForAny` call asks for, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct WaitSpec {
    /// The names, as given (without repeats).
    pub names: Vec<String>,
    /// `waitForAny`: answer `{name, value}`.
    pub any: bool,
    /// `timeoutMs`, rounded up to whole milliseconds.
    pub timeout_ms: Option<u64>,
    /// `deadline` (epoch ms), rounded up.
    pub deadline: Option<i64>,
    /// `schema`: a JSON Schema the payload must match.
    pub schema: Option<Value>,
    /// `description`: for the humans who answer.
    pub description: Option<String>,
    /// `default`: the answer on timeout (`Some(null)` for an own `default: null` or
    /// `default: undefined`).
    pub default: Option<Value>,
}

impl WaitSpec {
    /// Checks the arguments of `waitFor(name, options)` (`names` is `[name]`) or
    /// `waitForAny(names, options)`. `options` is an object or null; `max_timeout_ms` is
    /// [`Limits::max_sleep_ms`](crate::Limits::max_sleep_ms).
    pub fn parse(
        names: &[Value],
        options: &Value,
        any: bool,
        max_timeout_ms: u64,
    ) -> Result<Self, ArgumentError> {
        let call = if any { "waitForAny" } else { "waitFor" };
        if any && names.is_empty() {
            return Err(ArgumentError::new(format!(
                "{call}(names, options) needs a non-empty array of signal names"
            )));
        }
        if names.len() > MAX_WAIT_NAMES {
            return Err(ArgumentError::new(format!(
                "{call}(names, options) takes at most {MAX_WAIT_NAMES} names, got {}",
                names.len()
            )));
        }
        let mut checked: Vec<String> = Vec::with_capacity(names.len());
        for name in names {
            let Value::String(name) = name else {
                return Err(ArgumentError::new(format!(
                    "{call}() needs signal names as strings, got {}",
                    type_name(name)
                )));
            };
            check_signal_name(name)
                .map_err(|problem| ArgumentError::new(format!("{call}(): {problem}")))?;
            if !checked.contains(name) {
                checked.push(name.clone());
            }
        }
        let options = match options {
            Value::Null => Map::new(),
            Value::Object(map) => map.clone(),
            other => {
                return Err(ArgumentError::new(format!(
                    "{call}() options must be an object, got {}",
                    type_name(other)
                )))
            }
        };
        if let Some(unknown) = options
            .keys()
            .find(|key| !WAIT_OPTIONS.contains(&key.as_str()))
        {
            return Err(ArgumentError::new(format!(
                "{call}() options: unknown option {unknown:?} (known: {})",
                WAIT_OPTIONS.join(", ")
            )));
        }
        let timeout_ms = match options.get("timeoutMs") {
            None | Some(Value::Null) => None,
            Some(value) => Some(milliseconds(value).ok_or_else(|| {
                ArgumentError::new(format!(
                    "{call}() options: timeoutMs must be a finite non-negative number of \
                     milliseconds"
                ))
            })?),
        };
        if let Some(timeout) = timeout_ms.filter(|timeout| *timeout > max_timeout_ms) {
            return Err(ArgumentError {
                message: format!(
                    "{call}() options: timeoutMs {timeout} exceeds the maximum allowed delay \
                     ({max_timeout_ms} ms)"
                ),
                out_of_range: true,
            });
        }
        let deadline = match options.get("deadline") {
            None | Some(Value::Null) => None,
            Some(value) => Some(
                milliseconds(value)
                    .and_then(|ms| i64::try_from(ms).ok())
                    .ok_or_else(|| {
                        ArgumentError::new(format!(
                            "{call}() options: deadline must be a finite non-negative number \
                             of epoch milliseconds"
                        ))
                    })?,
            ),
        };
        let schema = match options.get("schema") {
            None | Some(Value::Null) => None,
            Some(schema) => {
                crate::schema::OutputSchema::compile(schema).map_err(|problem| {
                    ArgumentError::new(format!("{call}() options: {problem}"))
                })?;
                Some(schema.clone())
            }
        };
        let description = match options.get("description") {
            None | Some(Value::Null) => None,
            Some(Value::String(text)) => Some(text.clone()),
            Some(other) => {
                return Err(ArgumentError::new(format!(
                    "{call}() options: description must be a string, got {}",
                    type_name(other)
                )))
            }
        };
        Ok(Self {
            names: checked,
            any,
            timeout_ms,
            deadline,
            schema,
            description,
            default: options.get("default").cloned(),
        })
    }
}

/// A finite non-negative number as whole milliseconds, rounded up.
fn milliseconds(value: &Value) -> Option<u64> {
    let number = value.as_f64()?;
    if !number.is_finite() || number < 0.0 || number > u64::MAX as f64 {
        return None;
    }
    Some(number.ceil() as u64)
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// How [`Engine::signal`](crate::Engine::signal) sends.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SignalOptions {
    /// With a key, sending again with the same key (to the same run) stores nothing and
    /// answers the first signal's receipt with `duplicate: true`: a send may be retried safely.
    pub idempotency_key: Option<String>,
}

impl SignalOptions {
    /// Sets [`SignalOptions::idempotency_key`].
    pub fn idempotency_key(mut self, key: impl Into<String>) -> Self {
        self.idempotency_key = Some(key.into());
        self
    }
}

/// What [`Engine::signal`](crate::Engine::signal) answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct SignalReceipt {
    /// The stored signal (the first one, for a duplicate).
    pub signal_id: String,
    /// The idempotency key matched an earlier signal; nothing new was stored.
    pub duplicate: bool,
    /// A wait of the run was waiting for this name when it was sent (or, for a duplicate, the
    /// signal has been consumed): the run continues with it. Otherwise it waits in the
    /// mailbox for the run's next wait on its name.
    pub delivered: bool,
}

/// A wait that has not ended, as [`Engine::waits`](crate::Engine::waits) lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct OpenWait {
    /// The waiting run (a root run or a child).
    pub run_id: String,
    /// Its root run.
    pub root_run_id: String,
    /// The wait's step.
    pub step_id: String,
    /// The names it waits for.
    pub names: Vec<String>,
    /// Its `description`, as first registered.
    pub description: Option<String>,
    /// Its `schema`, as first registered.
    pub schema: Option<Value>,
    /// When it times out (epoch ms), fixed when it was first registered; `None`: never.
    pub deadline: Option<i64>,
    /// When it was first registered (epoch ms).
    pub since: i64,
}

impl OpenWait {
    /// The open wait a `wait` step row stands for.
    pub fn from_step(step: &StepRecord) -> Result<Self, crate::Error> {
        Ok(Self {
            run_id: step.run_id.clone(),
            root_run_id: step.root_run_id.clone(),
            step_id: step.step_id.clone(),
            names: crate::decide::stored_names(step)?,
            description: step
                .input
                .get("description")
                .and_then(Value::as_str)
                .map(str::to_owned),
            schema: step.input.get("schema").filter(|s| !s.is_null()).cloned(),
            deadline: crate::decide::stored_deadline(step)?,
            since: step.created_at,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(names: Value, options: Value) -> Result<WaitSpec, ArgumentError> {
        let names = match names {
            Value::Array(names) => names,
            one => vec![one],
        };
        WaitSpec::parse(&names, &options, false, 1_000)
    }

    #[test]
    fn names_are_checked() {
        assert!(check_signal_name("approval").is_ok());
        assert!(check_signal_name("review/plan:v2.final-1_x").is_ok());
        for bad in ["", "has space", "ünï", &"x".repeat(129)] {
            assert!(check_signal_name(bad).is_err(), "{bad:?}");
        }
        let error = parse(json!(5), json!(null)).err().map(|e| e.message);
        assert_eq!(
            error.as_deref(),
            Some("waitFor() needs signal names as strings, got a number")
        );
        let none = WaitSpec::parse(&[], &Value::Null, true, 1_000).err();
        assert!(none.is_some_and(|e| e.message.contains("non-empty array")));
    }

    #[test]
    fn options_are_checked_with_clear_messages() {
        let message = |options: Value| parse(json!("a"), options).err().map(|e| e.message);
        assert_eq!(
            message(json!({"timeout": 5})).as_deref(),
            Some(
                "waitFor() options: unknown option \"timeout\" (known: timeoutMs, deadline, \
                 schema, description, default)"
            )
        );
        assert!(message(json!({"timeoutMs": -1})).is_some_and(|m| m.contains("non-negative")));
        assert!(message(json!({"timeoutMs": "5"})).is_some_and(|m| m.contains("finite")));
        let over = parse(json!("a"), json!({"timeoutMs": 1_001})).err();
        assert!(over.as_ref().is_some_and(|e| e.out_of_range), "{over:?}");
        assert!(message(json!({"deadline": -5})).is_some_and(|m| m.contains("deadline")));
        assert!(message(json!({"schema": {"type": 5}})).is_some_and(|m| m.contains("schema")));
        assert!(message(json!({"description": 1})).is_some_and(|m| m.contains("description")));
        assert!(message(json!([1])).is_some_and(|m| m.contains("must be an object")));
    }

    #[test]
    fn a_valid_call_keeps_what_it_asked() {
        let spec = parse(
            json!(["b", "a", "b"]),
            json!({"timeoutMs": 1.2, "deadline": 99, "description": "d", "default": null}),
        )
        .ok();
        assert_eq!(
            spec,
            Some(WaitSpec {
                names: vec!["b".into(), "a".into()],
                any: false,
                timeout_ms: Some(2),
                deadline: Some(99),
                schema: None,
                description: Some("d".into()),
                default: Some(Value::Null),
            })
        );
        let without = parse(json!("a"), json!({}))
            .ok()
            .and_then(|spec| spec.default);
        assert_eq!(without, None, "no own default, no default");
    }
}
