//! How an `agent(prompt, options)` call's options become the options its provider sees and its
//! step signature hashes. (Long, but one thing: smol-wf's rules, kept together so they can be
//! read against its source; half of the file is their tests.)
//!
//! smol-wf 0.3.4 hashes the *rewritten* options, so a run it left behind resumes (replaying its
//! completed calls instead of paying for them again) only if these rules give the same options
//! byte for byte. In order:
//!
//! 1. **Phase inheritance**: the phase current in the calling branch is inserted as
//!    `options.phase` when the options have no `phase` key; options left empty become `null`.
//! 2. **Phase defaults**: when `options.phase` names a phase of `meta.phases`, its `model` and
//!    `provider` are inserted, each only when the key is absent.
//! 3. **Provider**: `options.provider` when it is a string, else the run's default provider.
//!    The key stays in the options.
//! 4. **Model selector**, when `options.model` is a string: the model map replaces an alias
//!    once, the selector `model-id[?provider=…&thinking=…]` or `provider/model-id[?…]` is parsed
//!    ([`ModelSelector::parse`]), checked against the effective provider
//!    ([`ModelSelector::validate_for`]) and written back as `model`, `requestedModel`,
//!    `modelSelector`, `modelProvider` and `thinking`.
//! 5. **Retry**: `options.retry` (`{maxAttempts, backoffMs}`) is checked, not rewritten.
//!
//! ```
//! use std::collections::BTreeMap;
//! use serde_json::json;
//! use smol_durable_core::agent_options::{effective_options, OptionDefaults};
//!
//! let model_map = BTreeMap::from([("smart".to_owned(), "claude-x?thinking=low".to_owned())]);
//! let defaults = OptionDefaults { phases: &[], provider: "debug", model_map: &model_map };
//! let effective = effective_options(json!({ "model": "smart" }), Some("Plan"), &defaults)?;
//! assert_eq!(effective.provider, "debug");
//! assert_eq!(effective.phase.as_deref(), Some("Plan"));
//! assert_eq!(
//!     effective.options,
//!     json!({
//!         "model": "claude-x",
//!         "modelSelector": "claude-x?thinking=low",
//!         "phase": "Plan",
//!         "requestedModel": "smart",
//!         "thinking": "low"
//!     })
//! );
//! # Ok::<(), smol_durable_core::agent_options::OptionsError>(())
//! ```

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::decide::RetryOverride;
use crate::{PhaseMeta, StepSignature};

/// Provider names whose model selectors have rules of their own (smol-wf's CLI providers).
mod provider_names {
    pub const CODEX: &str = "codex";
    pub const CLAUDE_CODE: &str = "claude-code";
    pub const OPENCODE: &str = "opencode";
}

/// What an `agent()` call's options are completed from.
#[derive(Debug, Clone, Copy)]
pub struct OptionDefaults<'a> {
    /// `meta.phases` of the calling workflow.
    pub phases: &'a [PhaseMeta],
    /// The run's default provider.
    pub provider: &'a str,
    /// Model aliases (`--model-map alias:selector`).
    pub model_map: &'a BTreeMap<String, String>,
}

/// An `agent()` call's options after every rule: what the provider sees and the signature
/// hashes.
#[derive(Debug, Clone, PartialEq)]
pub struct EffectiveOptions {
    /// The provider that runs the call.
    pub provider: String,
    /// The rewritten options: an object, or `null` when none remain.
    pub options: Value,
    /// `options.phase` when it is a string (the signature's `context.phase`).
    pub phase: Option<String>,
    /// How failed tries are retried, as far as the call says (the engine's default policy
    /// supplies the rest).
    pub retry: RetryOverride,
    /// `timeoutMs`: each provider call of this step is stopped after this long.
    pub timeout_ms: Option<u64>,
    /// `isolation`: where the provider runs.
    pub isolation: Option<Isolation>,
}

/// Where an agent call runs (the `isolation` option).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isolation {
    /// `"worktree"`: in a fresh git worktree of the workflow's repository, on a branch of its
    /// own, removed when the call ends.
    Worktree,
}

/// Options that cannot be used; the message is smol-wf's where it had one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct OptionsError(pub String);

impl OptionsError {
    fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}

/// Applies the rules of the [module docs](self) to the options a script passed (an object or
/// `null`), with `current_phase` the phase set by `phase()` in the calling branch.
pub fn effective_options(
    options: Value,
    current_phase: Option<&str>,
    defaults: &OptionDefaults<'_>,
) -> Result<EffectiveOptions, OptionsError> {
    let mut options = match options {
        Value::Null => Map::new(),
        Value::Object(map) => map,
        // smol-wf passed other values (a string, an array) to the provider as they were, with
        // no phase and no defaults; scripts written for it keep working.
        other => {
            return Ok(EffectiveOptions {
                provider: defaults.provider.to_owned(),
                options: other,
                phase: None,
                retry: RetryOverride::default(),
                timeout_ms: None,
                isolation: None,
            })
        }
    };
    if let Some(phase) = current_phase {
        if !options.contains_key("phase") {
            options.insert("phase".to_owned(), Value::String(phase.to_owned()));
        }
    }
    let phase = options
        .get("phase")
        .and_then(Value::as_str)
        .map(str::to_owned);
    if let Some(declared) = phase
        .as_deref()
        .and_then(|title| defaults.phases.iter().find(|p| p.title == title))
    {
        for (key, value) in [("model", &declared.model), ("provider", &declared.provider)] {
            if let (Some(value), false) = (value, options.contains_key(key)) {
                options.insert(key.to_owned(), Value::String(value.clone()));
            }
        }
    }
    let provider = options
        .get("provider")
        .and_then(Value::as_str)
        .unwrap_or(defaults.provider)
        .to_owned();
    if let Some(model) = options.get("model").and_then(Value::as_str) {
        let model = model.to_owned();
        resolve_model(&mut options, &model, &provider, defaults.model_map)?;
    }
    let options = if options.is_empty() {
        Value::Null
    } else {
        Value::Object(options)
    };
    let retry = retry_policy(&options)?;
    let timeout_ms = timeout_ms(&options)?;
    let isolation = isolation(&options)?;
    Ok(EffectiveOptions {
        provider,
        options,
        phase,
        retry,
        timeout_ms,
        isolation,
    })
}

/// The `key` option: a non-empty string that names the call instead of its prompt and options,
/// so editing the prompt of a keyed call replays its stored result (change the key to run it
/// again). Other values are ordinary options.
pub fn step_key(options: &Value) -> Option<&str> {
    options
        .get("key")
        .and_then(Value::as_str)
        .filter(|key| !key.is_empty())
}

/// Which rules named the steps of a run, recorded with it (`WorkflowInfo::step_identity`).
///
/// A resume computes every step's identity with the [current](StepIdentity::Current) rules; for
/// a run named by older rules it also computes the old identity, and a completed step stored
/// under that one replays (see [`legacy_signature`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepIdentity {
    /// smol-wf 0.3.4: the current rules, without `key` naming calls.
    SmolWf,
    /// smol-durable 0.1.0: `phase` and `provider` taken out of the options, model aliases
    /// replaced by their selector text, `key` an ordinary option.
    SmolDurable01,
    /// The rules of this version.
    Current,
}

impl StepIdentity {
    /// The value recorded with runs named by the current rules.
    pub const CURRENT_VERSION: u32 = 2;
    /// The value recorded with a run that carries steps smol-wf 0.3.4 named (a fork of one of
    /// its runs); runs smol-wf started record nothing.
    pub const SMOL_WF_VERSION: u32 = 0;
    /// The value recorded with a run that carries steps smol-durable 0.1.0 named (a fork of
    /// one of its runs); runs it started record nothing.
    pub const SMOL_DURABLE_01_VERSION: u32 = 1;

    /// The rules of a run: `recorded` is its `step_identity`, `has_script_hash` whether
    /// smol-durable stored its script (smol-wf never did).
    pub fn of_run(recorded: Option<u32>, has_script_hash: bool) -> Self {
        match (recorded, has_script_hash) {
            (Some(Self::SMOL_WF_VERSION), _) => Self::SmolWf,
            (Some(Self::SMOL_DURABLE_01_VERSION), _) => Self::SmolDurable01,
            (Some(_), _) => Self::Current,
            (None, true) => Self::SmolDurable01,
            (None, false) => Self::SmolWf,
        }
    }

    /// The value to record for these rules (what [`of_run`](Self::of_run) reads back).
    pub fn recorded(self) -> u32 {
        match self {
            Self::SmolWf => Self::SMOL_WF_VERSION,
            Self::SmolDurable01 => Self::SMOL_DURABLE_01_VERSION,
            Self::Current => Self::CURRENT_VERSION,
        }
    }
}

/// The signature an `agent()` call had under the rules that named a run's steps, when it differs
/// from the current one: `None` for runs named by the current rules, for calls the old rules
/// named the same way, and for calls the old rules refused.
///
/// `options` and `current_phase` are what the script passed; `effective` is the result of
/// [`effective_options`] for them.
#[allow(clippy::too_many_arguments)] // the inputs of one signature, each used once
pub fn legacy_signature(
    rules: StepIdentity,
    scope: &str,
    prompt: &str,
    options: &Value,
    current_phase: Option<&str>,
    effective: &EffectiveOptions,
    defaults: &OptionDefaults<'_>,
    cwd: Option<&str>,
) -> Option<StepSignature> {
    let current_rules = || {
        StepSignature::agent(
            scope,
            &effective.provider,
            prompt,
            &effective.options,
            effective.phase.as_deref(),
            cwd,
        )
    };
    match rules {
        StepIdentity::Current => None,
        // Only a keyed call is named differently now.
        StepIdentity::SmolWf => step_key(&effective.options).map(|_| current_rules()),
        StepIdentity::SmolDurable01 => {
            let (provider, options, phase) =
                smol_durable_01_options(options, current_phase, defaults)?;
            Some(StepSignature::agent(
                scope,
                &provider,
                prompt,
                &options,
                phase.as_deref(),
                cwd,
            ))
        }
    }
}

/// How smol-durable 0.1.0 completed options: `phase` (else the current phase) and `provider`
/// (else the phase's, else the run's) were taken out, the phase's `model` filled in, and a
/// model alias replaced by its selector text.
fn smol_durable_01_options(
    options: &Value,
    current_phase: Option<&str>,
    defaults: &OptionDefaults<'_>,
) -> Option<(String, Value, Option<String>)> {
    let mut options = match options {
        Value::Null => Map::new(),
        Value::Object(map) => map.clone(),
        _ => return None,
    };
    let phase = match options.remove("phase") {
        None | Some(Value::Null) => current_phase.map(str::to_owned),
        Some(Value::String(phase)) => Some(phase),
        Some(_) => return None,
    };
    let declared = phase
        .as_deref()
        .and_then(|title| defaults.phases.iter().find(|p| p.title == title));
    let provider = match options.remove("provider") {
        None | Some(Value::Null) => declared
            .and_then(|p| p.provider.clone())
            .unwrap_or_else(|| defaults.provider.to_owned()),
        Some(Value::String(provider)) => provider,
        Some(_) => return None,
    };
    if let (false, Some(model)) = (
        options.contains_key("model"),
        declared.and_then(|p| p.model.clone()),
    ) {
        options.insert("model".to_owned(), Value::String(model));
    }
    if let Some(selector) = options
        .get("model")
        .and_then(Value::as_str)
        .and_then(|alias| defaults.model_map.get(alias))
    {
        options.insert("model".to_owned(), Value::String(selector.clone()));
    }
    let options = if options.is_empty() {
        Value::Null
    } else {
        Value::Object(options)
    };
    Some((provider, options, phase))
}

/// Step 4: replaces `model` (an alias or a selector) with the model it selects and records how
/// it was selected.
fn resolve_model(
    options: &mut Map<String, Value>,
    model: &str,
    provider: &str,
    model_map: &BTreeMap<String, String>,
) -> Result<(), OptionsError> {
    let alias = model_map.get(model);
    let selector_text = alias.map_or(model, String::as_str);
    let selector = ModelSelector::parse(selector_text)?;
    selector.validate_for(provider)?;
    let qualified = alias.is_some()
        || selector_text.contains('?')
        || selector.provider.is_some()
        || selector.thinking.is_some();
    options.insert("model".to_owned(), Value::String(selector.model()));
    let mut set = |key: &str, value: Option<String>| match value {
        Some(value) => {
            options.insert(key.to_owned(), Value::String(value));
        }
        None => {
            options.remove(key);
        }
    };
    set("requestedModel", qualified.then(|| model.to_owned()));
    set("modelSelector", qualified.then(|| selector_text.to_owned()));
    set("modelProvider", selector.provider.clone());
    set("thinking", selector.thinking.clone());
    Ok(())
}

/// Step 5: `options.retry` as far as it is written; absent or `null` sets nothing (the
/// engine's default policy applies: one try unless configured, as in smol-wf).
fn retry_policy(options: &Value) -> Result<RetryOverride, OptionsError> {
    let retry = match options.get("retry") {
        None | Some(Value::Null) => return Ok(RetryOverride::default()),
        Some(Value::Object(retry)) => retry,
        Some(_) => return Err(OptionsError::new("agent retry option must be an object")),
    };
    let max_tries = match retry.get("maxAttempts") {
        None => None,
        Some(value) => match value.as_u64() {
            Some(n) => Some(u32::try_from(n).ok().filter(|n| *n >= 1).ok_or_else(|| {
                OptionsError::new("agent retry.maxAttempts must be between 1 and 4294967295")
            })?),
            None => {
                return Err(OptionsError::new(
                    "agent retry.maxAttempts must be a positive integer",
                ))
            }
        },
    };
    let backoff_ms = match retry.get("backoffMs") {
        None => None,
        Some(value) => Some(value.as_u64().ok_or_else(|| {
            OptionsError::new("agent retry.backoffMs must be a non-negative integer")
        })?),
    };
    Ok(RetryOverride {
        max_tries,
        backoff_ms,
    })
}

/// `options.timeoutMs`: a positive whole number of milliseconds, or absent / `null` (no limit,
/// as in smol-wf).
fn timeout_ms(options: &Value) -> Result<Option<u64>, OptionsError> {
    match options.get("timeoutMs") {
        None | Some(Value::Null) => Ok(None),
        Some(value) => value
            .as_u64()
            .filter(|ms| *ms > 0)
            .map(Some)
            .ok_or_else(|| OptionsError::new("agent timeoutMs must be a positive integer")),
    }
}

/// `options.isolation`: `"worktree"`, or `"none"` / absent / `null`. smol-wf ignored any other
/// value; a typo running an agent in the shared checkout is refused here instead.
fn isolation(options: &Value) -> Result<Option<Isolation>, OptionsError> {
    match options.get("isolation") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(kind)) if kind == "worktree" => Ok(Some(Isolation::Worktree)),
        Some(Value::String(kind)) if kind == "none" => Ok(None),
        Some(other) => Err(OptionsError(format!(
            "agent isolation must be \"worktree\" or \"none\" (got {other})"
        ))),
    }
}

/// A parsed model selector: `model-id`, `provider/model-id`, either followed by
/// `?provider=…&thinking=…` (percent-encoded, `+` for a space).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelSelector {
    /// The model id.
    pub model_id: String,
    /// The model's provider (from `provider/` or `?provider=`).
    pub provider: Option<String>,
    /// The thinking level (from `?thinking=`).
    pub thinking: Option<String>,
}

impl ModelSelector {
    /// Parses a selector, with smol-wf's error messages.
    ///
    /// ```
    /// use smol_durable_core::agent_options::ModelSelector;
    /// let selector = ModelSelector::parse("openai/gpt-5?thinking=high")?;
    /// assert_eq!(selector.provider.as_deref(), Some("openai"));
    /// assert_eq!(selector.model_id, "gpt-5");
    /// assert_eq!(selector.thinking.as_deref(), Some("high"));
    /// assert_eq!(selector.model(), "openai/gpt-5");
    /// # Ok::<(), smol_durable_core::agent_options::OptionsError>(())
    /// ```
    pub fn parse(selector: &str) -> Result<Self, OptionsError> {
        let (model_part, query) = match selector.split_once('?') {
            Some((model, query)) => (model, Some(query)),
            None => (selector, None),
        };
        if model_part.trim().is_empty() {
            return Err(OptionsError::new(format!(
                "model selector must include a model id: {selector}"
            )));
        }
        let (slash_provider, model_id) = match model_part.split_once('/') {
            Some((provider, id)) if !provider.is_empty() && !id.is_empty() => {
                (Some(provider.to_owned()), id.to_owned())
            }
            Some(_) => {
                return Err(OptionsError::new(format!(
                    "model selector provider/model form is invalid: {selector}"
                )))
            }
            None => (None, model_part.to_owned()),
        };
        let mut query_provider = None;
        let mut thinking = None;
        for pair in query
            .unwrap_or("")
            .split('&')
            .filter(|pair| !pair.is_empty())
        {
            let Some((key, value)) = pair.split_once('=') else {
                return Err(OptionsError::new(format!(
                    "model selector query parameter must use key=value: {pair}"
                )));
            };
            let (key, value) = (percent_decode(key)?, percent_decode(value)?);
            if value.is_empty() {
                return Err(OptionsError::new(format!(
                    "model selector query parameter `{key}` must not be empty"
                )));
            }
            let slot = match key.as_str() {
                "provider" => &mut query_provider,
                "thinking" => &mut thinking,
                _ => {
                    return Err(OptionsError::new(format!(
                        "unknown model selector query parameter `{key}`"
                    )))
                }
            };
            if slot.is_some() {
                return Err(OptionsError::new(format!(
                    "duplicate model selector query parameter `{key}`"
                )));
            }
            *slot = Some(value);
        }
        let provider = match (slash_provider, query_provider) {
            (Some(slash), Some(query)) if slash != query => {
                return Err(OptionsError::new(format!(
                    "conflicting model provider qualifiers in selector `{selector}`: `{slash}` and `{query}`"
                )))
            }
            (slash, query) => slash.or(query),
        };
        Ok(Self {
            model_id,
            provider,
            thinking,
        })
    }

    /// The `model` option the provider receives: `provider/model-id`, or `model-id`.
    pub fn model(&self) -> String {
        match &self.provider {
            Some(provider) => format!("{provider}/{}", self.model_id),
            None => self.model_id.clone(),
        }
    }

    /// Checks what `provider` can be told: Codex takes neither a model provider nor a thinking
    /// level, Claude Code no model provider, opencode needs one; others take anything.
    pub fn validate_for(&self, provider: &str) -> Result<(), OptionsError> {
        let message = match provider {
            provider_names::CODEX if self.provider.is_some() => {
                "Codex model selectors do not support ?provider=... or provider/model form"
            }
            provider_names::CODEX if self.thinking.is_some() => {
                "Codex model selectors do not support thinking=..."
            }
            provider_names::CLAUDE_CODE if self.provider.is_some() => {
                "Claude Code model selectors do not support ?provider=... or provider/model form"
            }
            provider_names::OPENCODE if self.provider.is_none() => {
                "OpenCode model selectors must use provider/model or ?provider=..."
            }
            _ => return Ok(()),
        };
        Err(OptionsError::new(message))
    }
}

/// Decodes `%XX` escapes and `+` (a space) in one component of a selector's query.
fn percent_decode(component: &str) -> Result<String, OptionsError> {
    let bytes = component.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        match bytes[index] {
            b'+' => decoded.push(b' '),
            b'%' => {
                let escape = bytes
                    .get(index + 1..index + 3)
                    .and_then(|hex| std::str::from_utf8(hex).ok())
                    .and_then(|hex| u8::from_str_radix(hex, 16).ok())
                    .ok_or_else(|| {
                        OptionsError::new(format!(
                            "invalid percent escape in model selector query: {component}"
                        ))
                    })?;
                decoded.push(escape);
                index += 2;
            }
            byte => decoded.push(byte),
        }
        index += 1;
    }
    String::from_utf8(decoded)
        .map_err(|_| OptionsError::new("model selector query is not valid UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(
        options: Value,
        phase: Option<&str>,
        provider: &str,
        map: &[(&str, &str)],
        phases: &[PhaseMeta],
    ) -> Result<EffectiveOptions, OptionsError> {
        let model_map = map
            .iter()
            .map(|(a, s)| ((*a).to_owned(), (*s).to_owned()))
            .collect();
        effective_options(
            options,
            phase,
            &OptionDefaults {
                phases,
                provider,
                model_map: &model_map,
            },
        )
    }

    fn options(value: Value, phase: Option<&str>, map: &[(&str, &str)]) -> Value {
        run(value, phase, "debug", map, &[])
            .map(|effective| effective.options)
            .unwrap_or_else(|error| Value::String(format!("error: {error}")))
    }

    fn error(selector: &str) -> String {
        ModelSelector::parse(selector)
            .map(|parsed| format!("parsed: {parsed:?}"))
            .unwrap_or_else(|error| error.0)
    }

    #[test]
    fn the_current_phase_is_inserted_unless_a_phase_key_exists() {
        assert_eq!(
            options(Value::Null, Some("Plan"), &[]),
            json!({ "phase": "Plan" })
        );
        assert_eq!(
            options(json!({ "phase": null }), Some("Plan"), &[]),
            json!({ "phase": null })
        );
        assert_eq!(
            options(json!({ "phase": "Own" }), Some("Plan"), &[]),
            json!({ "phase": "Own" })
        );
        assert_eq!(options(json!({}), None, &[]), Value::Null);
        let effective = run(json!({ "phase": 5 }), None, "debug", &[], &[]);
        assert_eq!(effective.map(|e| e.phase), Ok(None));
    }

    #[test]
    fn phase_defaults_fill_model_and_provider_when_absent() {
        let phases = [
            PhaseMeta::new("Plan").with_model("smart"),
            PhaseMeta::new("Write").with_provider("other"),
        ];
        let plan = run(Value::Null, Some("Plan"), "debug", &[], &phases);
        assert_eq!(
            plan.map(|e| (e.provider, e.options)),
            Ok((
                "debug".to_owned(),
                json!({ "phase": "Plan", "model": "smart" })
            ))
        );
        let write = run(json!({ "phase": "Write" }), None, "debug", &[], &phases);
        assert_eq!(
            write.map(|e| (e.provider, e.options)),
            Ok((
                "other".to_owned(),
                json!({ "phase": "Write", "provider": "other" })
            ))
        );
        let own = run(
            json!({ "phase": "Plan", "model": "mine", "provider": "p" }),
            None,
            "debug",
            &[],
            &phases,
        );
        assert_eq!(
            own.map(|e| (e.provider, e.options)),
            Ok((
                "p".to_owned(),
                json!({ "phase": "Plan", "model": "mine", "provider": "p" })
            ))
        );
    }

    #[test]
    fn a_non_string_provider_stays_in_the_options_and_the_default_runs() {
        let effective = run(json!({ "provider": 5 }), None, "debug", &[], &[]);
        assert_eq!(
            effective.map(|e| (e.provider, e.options)),
            Ok(("debug".to_owned(), json!({ "provider": 5 })))
        );
    }

    #[test]
    fn an_alias_with_thinking_is_rewritten_as_smol_wf_does() {
        assert_eq!(
            options(
                json!({ "model": "smart" }),
                Some("Plan"),
                &[("smart", "claude-x?thinking=low")]
            ),
            json!({
                "model": "claude-x",
                "modelSelector": "claude-x?thinking=low",
                "phase": "Plan",
                "requestedModel": "smart",
                "thinking": "low"
            })
        );
    }

    #[test]
    fn plain_models_keep_their_name_and_lose_stale_selector_keys() {
        assert_eq!(
            options(
                json!({ "model": "m", "requestedModel": "x", "thinking": "t", "modelProvider": "p", "modelSelector": "s" }),
                None,
                &[]
            ),
            json!({ "model": "m" })
        );
        assert_eq!(
            options(json!({ "model": 5 }), None, &[("5", "x")]),
            json!({ "model": 5 })
        );
    }

    #[test]
    fn provider_forms_and_query_decoding() {
        assert_eq!(
            options(json!({ "model": "openai/gpt-5" }), None, &[]),
            json!({
                "model": "openai/gpt-5",
                "modelProvider": "openai",
                "modelSelector": "openai/gpt-5",
                "requestedModel": "openai/gpt-5"
            })
        );
        assert_eq!(
            options(
                json!({ "model": "s" }),
                None,
                &[("s", "a?provider=q%20r&thinking=a+b")]
            ),
            json!({
                "model": "q r/a",
                "modelProvider": "q r",
                "modelSelector": "a?provider=q%20r&thinking=a+b",
                "requestedModel": "s",
                "thinking": "a b"
            })
        );
        // Split at the first slash and the first `?`; empty pairs are skipped.
        assert_eq!(
            ModelSelector::parse("a/b/c").map(|s| (s.model(), s.provider)),
            Ok(("a/b/c".to_owned(), Some("a".to_owned())))
        );
        assert_eq!(
            ModelSelector::parse("a?&&thinking=x=y&").map(|s| s.thinking),
            Ok(Some("x=y".to_owned()))
        );
        assert_eq!(
            ModelSelector::parse("p/a?provider=p").map(|s| s.provider),
            Ok(Some("p".to_owned()))
        );
        assert_eq!(
            ModelSelector::parse(" a").map(|s| s.model()),
            Ok(" a".to_owned())
        );
        // `a?` has a query (so it is recorded) but no parameters.
        assert_eq!(
            options(json!({ "model": "a?" }), None, &[]),
            json!({ "model": "a", "modelSelector": "a?", "requestedModel": "a?" })
        );
    }

    #[test]
    fn selector_errors_are_smol_wf_s() {
        for (selector, message) in [
            (
                "?thinking=low",
                "model selector must include a model id: ?thinking=low",
            ),
            (" ?x=1", "model selector must include a model id:  ?x=1"),
            ("/x", "model selector provider/model form is invalid: /x"),
            ("a/", "model selector provider/model form is invalid: a/"),
            ("/", "model selector provider/model form is invalid: /"),
            (
                "a?thinking",
                "model selector query parameter must use key=value: thinking",
            ),
            (
                "a?thinking=",
                "model selector query parameter `thinking` must not be empty",
            ),
            (
                "a?foo=",
                "model selector query parameter `foo` must not be empty",
            ),
            ("a?foo=1", "unknown model selector query parameter `foo`"),
            ("a?=x", "unknown model selector query parameter ``"),
            (
                "a??thinking=x",
                "unknown model selector query parameter `?thinking`",
            ),
            (
                "a?thinking=low&thinking=high",
                "duplicate model selector query parameter `thinking`",
            ),
            (
                "p/a?provider=q",
                "conflicting model provider qualifiers in selector `p/a?provider=q`: `p` and `q`",
            ),
            (
                "a?%zz=1",
                "invalid percent escape in model selector query: %zz",
            ),
            (
                "a?thinking=%4",
                "invalid percent escape in model selector query: %4",
            ),
            (
                "a?thinking=x%4g",
                "invalid percent escape in model selector query: x%4g",
            ),
            ("a?thinking=%ff", "model selector query is not valid UTF-8"),
        ] {
            assert_eq!(error(selector), message, "{selector}");
        }
    }

    #[test]
    fn providers_validate_their_selectors() {
        let check = |provider: &str, selector: &str| {
            ModelSelector::parse(selector)
                .and_then(|s| s.validate_for(provider))
                .err()
                .map(|e| e.0)
        };
        assert_eq!(
            check("codex", "m?thinking=low").as_deref(),
            Some("Codex model selectors do not support thinking=...")
        );
        assert_eq!(
            check("codex", "p/m?thinking=low").as_deref(),
            Some("Codex model selectors do not support ?provider=... or provider/model form")
        );
        assert_eq!(
            check("claude-code", "m?provider=x").as_deref(),
            Some("Claude Code model selectors do not support ?provider=... or provider/model form")
        );
        assert_eq!(check("claude-code", "m?thinking=low"), None);
        assert_eq!(
            check("opencode", "m").as_deref(),
            Some("OpenCode model selectors must use provider/model or ?provider=...")
        );
        assert_eq!(check("opencode", "p/m"), None);
        assert_eq!(check("pi", "p/m?thinking=x"), None);
        // The effective provider is the one checked, phase defaults included.
        let phases = [PhaseMeta::new("Review").with_provider("codex")];
        let checked = run(
            json!({ "model": "m?thinking=low" }),
            Some("Review"),
            "debug",
            &[],
            &phases,
        );
        assert_eq!(
            checked.map_err(|e| e.0),
            Err("Codex model selectors do not support thinking=...".to_owned())
        );
    }

    #[test]
    fn timeouts_and_isolation_are_checked_and_stay_in_the_options() {
        let effective = run(
            json!({ "timeoutMs": 1500, "isolation": "worktree" }),
            None,
            "claude-code",
            &[],
            &[],
        )
        .expect("valid");
        assert_eq!(effective.timeout_ms, Some(1500));
        assert_eq!(effective.isolation, Some(Isolation::Worktree));
        assert_eq!(
            effective.options,
            json!({ "timeoutMs": 1500, "isolation": "worktree" }),
            "passed to the provider and hashed, as smol-wf did"
        );
        let none = run(json!({ "timeoutMs": null }), None, "debug", &[], &[]).expect("valid");
        assert_eq!((none.timeout_ms, none.isolation), (None, None));
        let message = |options: Value| run(options, None, "debug", &[], &[]).err().map(|e| e.0);
        for bad in [json!(0), json!(-5), json!(1.5), json!("600")] {
            assert_eq!(
                message(json!({ "timeoutMs": bad })).as_deref(),
                Some("agent timeoutMs must be a positive integer"),
                "{bad}"
            );
        }
        assert_eq!(
            message(json!({ "isolation": "container" })).as_deref(),
            Some("agent isolation must be \"worktree\" or \"none\" (got \"container\")")
        );
        let none = run(json!({ "isolation": "none" }), None, "debug", &[], &[]).expect("valid");
        assert_eq!(none.isolation, None);
    }

    #[test]
    fn retry_options_are_checked_with_smol_wf_s_messages() {
        let retry = |value: Value| {
            run(json!({ "retry": value }), None, "debug", &[], &[])
                .map(|e| e.retry)
                .map_err(|e| e.0)
        };
        assert_eq!(
            retry(json!({ "maxAttempts": 2, "backoffMs": 5 })),
            Ok(RetryOverride {
                max_tries: Some(2),
                backoff_ms: Some(5)
            })
        );
        assert_eq!(
            retry(Value::Null),
            Ok(RetryOverride::default()),
            "not set: the engine's default"
        );
        assert_eq!(retry(json!({})), Ok(RetryOverride::default()));
        assert_eq!(
            retry(json!({ "backoffMs": 7 })),
            Ok(RetryOverride {
                max_tries: None,
                backoff_ms: Some(7)
            }),
            "what is left out comes from the default"
        );
        for (value, message) in [
            (json!(5), "agent retry option must be an object"),
            (json!([]), "agent retry option must be an object"),
            (
                json!({ "maxAttempts": 0 }),
                "agent retry.maxAttempts must be between 1 and 4294967295",
            ),
            (
                json!({ "maxAttempts": 5_000_000_000_u64 }),
                "agent retry.maxAttempts must be between 1 and 4294967295",
            ),
            (
                json!({ "maxAttempts": -1 }),
                "agent retry.maxAttempts must be a positive integer",
            ),
            (
                json!({ "maxAttempts": 1.5 }),
                "agent retry.maxAttempts must be a positive integer",
            ),
            (
                json!({ "maxAttempts": null }),
                "agent retry.maxAttempts must be a positive integer",
            ),
            (
                json!({ "backoffMs": "x" }),
                "agent retry.backoffMs must be a non-negative integer",
            ),
            (
                json!({ "backoffMs": 1e20 }),
                "agent retry.backoffMs must be a non-negative integer",
            ),
        ] {
            assert_eq!(retry(value.clone()), Err(message.to_owned()), "{value}");
        }
    }

    #[test]
    fn legacy_names_follow_the_rules_that_named_the_run() {
        let phases = [PhaseMeta::new("Plan").with_model("smart")];
        let model_map = BTreeMap::from([("smart".to_owned(), "claude-x?thinking=low".to_owned())]);
        let defaults = OptionDefaults {
            phases: &phases,
            provider: "debug",
            model_map: &model_map,
        };
        let legacy = |rules: StepIdentity, written: Value, phase: Option<&str>| {
            let effective = effective_options(written.clone(), phase, &defaults).expect("valid");
            legacy_signature(
                rules,
                "root",
                "p",
                &written,
                phase,
                &effective,
                &defaults,
                Some("/w"),
            )
            .map(|signature| signature.json)
        };
        // smol-durable 0.1.0: phase and provider out of the options, the alias as its selector.
        assert_eq!(
            legacy(StepIdentity::SmolDurable01, Value::Null, Some("Plan")).as_deref(),
            Some(
                r#"{"context":{"cwd":"/w","phase":"Plan"},"kind":"agent","options":{"model":"claude-x?thinking=low"},"prompt":"p","provider":"debug","signatureVersion":2,"workflowScope":"root"}"#
            )
        );
        assert_eq!(
            legacy(
                StepIdentity::SmolDurable01,
                json!({ "provider": "debug", "key": "k" }),
                None
            )
            .as_deref(),
            Some(
                r#"{"context":{"cwd":"/w","phase":null},"kind":"agent","options":{"key":"k"},"prompt":"p","provider":"debug","signatureVersion":2,"workflowScope":"root"}"#
            )
        );
        // smol-wf: only a keyed call was named otherwise, by everything it was called with.
        assert_eq!(
            legacy(StepIdentity::SmolWf, Value::Null, Some("Plan")),
            None
        );
        assert_eq!(
            legacy(StepIdentity::SmolWf, json!({ "key": "k" }), None).as_deref(),
            Some(
                r#"{"context":{"cwd":"/w","phase":null},"kind":"agent","options":{"key":"k"},"prompt":"p","provider":"debug","signatureVersion":2,"workflowScope":"root"}"#
            )
        );
        assert_eq!(
            legacy(StepIdentity::Current, json!({ "key": "k" }), None),
            None
        );
        assert_eq!(StepIdentity::of_run(Some(2), true), StepIdentity::Current);
        assert_eq!(
            StepIdentity::of_run(None, true),
            StepIdentity::SmolDurable01
        );
        assert_eq!(StepIdentity::of_run(None, false), StepIdentity::SmolWf);
        // A fork records the rules of the run it copied, which read back as they were.
        for rules in [
            StepIdentity::SmolWf,
            StepIdentity::SmolDurable01,
            StepIdentity::Current,
        ] {
            assert_eq!(StepIdentity::of_run(Some(rules.recorded()), true), rules);
        }
    }

    #[test]
    fn keys_are_non_empty_strings() {
        assert_eq!(
            step_key(&json!({ "key": "review:tea" })),
            Some("review:tea")
        );
        assert_eq!(step_key(&json!({ "key": "" })), None);
        assert_eq!(step_key(&json!({ "key": 5 })), None);
        assert_eq!(step_key(&json!("key")), None);
    }

    #[test]
    fn options_that_are_not_an_object_pass_as_they_are() {
        let effective = run(json!("fast"), Some("Plan"), "debug", &[("fast", "x")], &[]);
        assert_eq!(
            effective.map(|e| (e.provider, e.options, e.phase)),
            Ok(("debug".to_owned(), json!("fast"), None))
        );
        assert_eq!(options(json!([1, 2]), None, &[]), json!([1, 2]));
    }
}
