//! The value of an agent's final message, and its usage, in the engine's terms.

use serde_json::Value;
use smol_durable_core::{Usage, UsageCost};

/// A final message read as JSON when the call asked for structured output, with smol-wf's
/// fallbacks for agents that wrap it: the text itself, a JSON string holding JSON, a fenced
/// ```` ```json ```` block, or the first `{…}` / `[…]` span. `None` when nothing parses (the
/// engine then reports the text against the schema).
pub(crate) fn json_answer(text: &str) -> Option<Value> {
    let text = text.trim();
    if let Ok(value) = serde_json::from_str::<Value>(text) {
        return Some(match value {
            Value::String(inner) => json_answer(&inner).unwrap_or(Value::String(inner)),
            other => other,
        });
    }
    if let Some(fenced) = fenced_block(text) {
        if let Ok(value) = serde_json::from_str::<Value>(fenced.trim()) {
            return Some(value);
        }
    }
    for (open, close) in [('{', '}'), ('[', ']')] {
        if let (Some(start), Some(end)) = (text.find(open), text.rfind(close)) {
            if start < end {
                if let Ok(value) = serde_json::from_str::<Value>(&text[start..=end]) {
                    return Some(value);
                }
            }
        }
    }
    None
}

/// The body of the first ```` ``` ```` block (with or without a `json` tag).
fn fenced_block(text: &str) -> Option<&str> {
    let start = text.find("```")?;
    let rest = &text[start + 3..];
    let body_start = rest.find('\n')? + 1;
    let body = &rest[body_start..];
    let end = body.find("```")?;
    Some(&body[..end])
}

/// What the agent answered: the structured value when the call had a schema (the text when it
/// does not parse), else the text.
pub(crate) fn output(text: String, structured: bool) -> Value {
    if structured {
        json_answer(&text).unwrap_or(Value::String(text))
    } else {
        Value::String(text)
    }
}

/// Token counts the way every CLI provider reports them, summed over a call's steps or turns.
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct Tokens {
    /// Prompt tokens not read from or written to the cache.
    pub input: u64,
    pub output: u64,
    pub cache_read: u64,
    pub cache_write: u64,
    /// In US dollars, when the provider says.
    pub cost: Option<UsageCost>,
}

impl Tokens {
    /// Adds one step's counts.
    pub fn add(&mut self, other: Tokens) {
        self.input += other.input;
        self.output += other.output;
        self.cache_read += other.cache_read;
        self.cache_write += other.cache_write;
        self.cost = match (self.cost.take(), other.cost) {
            (Some(a), Some(b)) => {
                let sum = |a: Option<f64>, b: Option<f64>| match (a, b) {
                    (Some(a), Some(b)) => Some(a + b),
                    (a, b) => a.or(b),
                };
                Some(UsageCost {
                    input: sum(a.input, b.input),
                    output: sum(a.output, b.output),
                    cache_read: sum(a.cache_read, b.cache_read),
                    cache_write: sum(a.cache_write, b.cache_write),
                    total: a.total + b.total,
                    currency: a.currency,
                })
            }
            (a, b) => a.or(b),
        };
    }

    /// The ledger's usage: total = input + output + cache writes (cache reads are not added,
    /// as smol-wf normalised), cost in USD when reported.
    pub fn usage(self) -> Usage {
        Usage {
            input_tokens: Some(self.input),
            output_tokens: Some(self.output),
            total_tokens: Some(self.input + self.output + self.cache_write),
            cache_read_tokens: Some(self.cache_read),
            cache_write_tokens: Some(self.cache_write),
            cost: self.cost,
        }
    }
}

/// The call's `schema` option, unless absent or `null`.
pub(crate) fn schema(request: &smol_durable_core::AgentRequest) -> Option<&Value> {
    request
        .options
        .get("schema")
        .filter(|schema| !schema.is_null())
}

/// A count field, 0 when absent or of another shape.
pub(crate) fn count(value: &Value, pointer: &str) -> u64 {
    value.pointer(pointer).and_then(Value::as_u64).unwrap_or(0)
}

/// A string field.
pub(crate) fn text<'a>(value: &'a Value, pointer: &str) -> Option<&'a str> {
    value.pointer(pointer).and_then(Value::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_answers_are_found_where_agents_put_them() {
        assert_eq!(json_answer("{\"a\":1}"), Some(json!({"a": 1})));
        assert_eq!(json_answer("\"{\\\"a\\\":1}\""), Some(json!({"a": 1})));
        assert_eq!(
            json_answer("Here you go:\n```json\n{\"a\": [1, 2]}\n```\nDone."),
            Some(json!({"a": [1, 2]}))
        );
        assert_eq!(
            json_answer("The answer is {\"a\": 2} as asked"),
            Some(json!({"a": 2}))
        );
        assert_eq!(json_answer("list: [1, 2, 3]."), Some(json!([1, 2, 3])));
        assert_eq!(json_answer("no json here"), None);
        assert_eq!(json_answer("42"), Some(json!(42)));
    }

    #[test]
    fn usage_totals_leave_cache_reads_out_and_keep_the_cost() {
        let mut tokens = Tokens {
            input: 6,
            output: 3,
            cache_read: 60,
            cache_write: 2,
            cost: Some(UsageCost::usd(0.01)),
        };
        tokens.add(Tokens {
            input: 5,
            output: 4,
            cache_read: 40,
            cache_write: 3,
            cost: Some(UsageCost::usd(0.0023)),
        });
        let usage = tokens.usage();
        assert_eq!(usage.input_tokens, Some(11));
        assert_eq!(usage.output_tokens, Some(7));
        assert_eq!(usage.cache_read_tokens, Some(100));
        assert_eq!(usage.cache_write_tokens, Some(5));
        assert_eq!(usage.total_tokens, Some(23));
        let total = usage.cost.map(|cost| cost.total).unwrap_or_default();
        assert!((total - 0.0123).abs() < 1e-12, "{total}");
    }
}
