//! The `debug` provider: offline, deterministic, free. It answers `echo: <prompt>`, or, when the
//! call carries a `schema`, a value generated from that schema, so workflows with structured
//! output run end to end without a model.

use async_trait::async_trait;
use serde_json::{json, Map, Value};

use crate::{AgentProvider, AgentRequest, AgentResponse, ProviderError, Usage};

/// Schemas nest at most this deep (through `$ref`s too) before the generator gives up on a
/// branch with `null`; a self-referencing schema must not loop.
const MAX_SCHEMA_DEPTH: usize = 32;

/// An offline provider that never fails and always answers the same way.
///
/// - Without a `schema` option the output is the text `echo: <prompt>`.
/// - With one, the output is generated from the schema: `const`; else the first `enum` value;
///   else the first `oneOf`/`anyOf` branch; `allOf` merges its object branches; then by type:
///   `null`, `true`, the `minimum` of an integer or number (or 0, or just above an
///   `exclusiveMinimum`), the string `debug-string` (formats `email`, `uri`/`url`, `date-time`
///   and `date` get a valid example), one item for an array (or one per `prefixItems`, and at
///   least `minItems`), and for an object every property plus every `required` key. Local
///   `$ref`s (`#/...`) are followed. A schema without a type reads as an object when it has
///   `properties` or `required`, an array when it has `items` or `prefixItems`, and otherwise
///   as a string.
/// - Usage: input tokens are the prompt's bytes / 4 and output tokens the JSON-encoded output's
///   bytes / 4, each rounded up and at least 1; the model is the call's `model` option.
///
/// ```
/// # async fn demo() -> Result<(), smol_durable::ProviderError> {
/// use serde_json::json;
/// use smol_durable::{AgentProvider, AgentRequest, DebugProvider};
///
/// let mut request = AgentRequest::new("extract the person");
/// request.options = json!({
///     "model": "m",
///     "schema": {
///         "type": "object",
///         "properties": { "name": { "type": "string" }, "age": { "type": "integer", "minimum": 18 } },
///         "required": ["name", "age"]
///     }
/// });
/// let response = DebugProvider.run(request).await?;
/// assert_eq!(response.output, json!({ "name": "debug-string", "age": 18 }));
/// assert_eq!(response.model.as_deref(), Some("m"));
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct DebugProvider;

impl DebugProvider {
    /// The name scripts and the CLI select it by.
    pub const NAME: &'static str = "debug";
}

#[async_trait]
impl AgentProvider for DebugProvider {
    fn name(&self) -> &str {
        Self::NAME
    }

    async fn run(&self, request: AgentRequest) -> Result<AgentResponse, ProviderError> {
        let output = match request.options.get("schema") {
            Some(schema) => generate(schema, &Doc::new(schema), 0),
            None => Value::String(format!("echo: {}", request.prompt)),
        };
        let tokens = |bytes: usize| (bytes as u64).div_ceil(4).max(1);
        let output_bytes = serde_json::to_string(&output).map_or(0, |text| text.len());
        let mut response = AgentResponse::new(output).with_usage(Usage::tokens(
            tokens(request.prompt.len()),
            tokens(output_bytes),
        ));
        response.model = request.model().map(str::to_owned);
        Ok(response)
    }
}

/// At most this many values are generated for one answer: recursive schemas with several
/// children or large `minItems` must not grow without bound.
const MAX_VALUES: usize = 10_000;

/// Longest string generated for a `minLength`.
const MAX_STRING: usize = 10_000;

/// The schema document (`$ref`s point into it) and what is left of the value allowance.
pub(crate) struct Doc<'a> {
    root: &'a Value,
    left: std::cell::Cell<usize>,
}

impl<'a> Doc<'a> {
    pub(crate) fn new(root: &'a Value) -> Self {
        Self {
            root,
            left: std::cell::Cell::new(MAX_VALUES),
        }
    }
}

/// A value `schema` accepts, for the schemas structured output uses in practice.
pub(crate) fn generate(schema: &Value, doc: &Doc<'_>, depth: usize) -> Value {
    // Every value counts against the allowance, even the `null` that ends a deep branch.
    if doc.left.get() == 0 {
        return Value::Null;
    }
    doc.left.set(doc.left.get() - 1);
    if depth > MAX_SCHEMA_DEPTH {
        return Value::Null;
    }
    let Some(schema) = schema.as_object() else {
        // `true` (or a non-schema) accepts anything.
        return Value::String("debug-string".to_owned());
    };
    if let Some(target) = schema
        .get("$ref")
        .and_then(Value::as_str)
        .and_then(|pointer| pointer.strip_prefix('#'))
        .and_then(|pointer| doc.root.pointer(pointer))
    {
        return generate(target, doc, depth + 1);
    }
    if let Some(value) = schema.get("const") {
        return value.clone();
    }
    if let Some(first) = schema
        .get("enum")
        .and_then(Value::as_array)
        .and_then(|values| values.first())
    {
        return first.clone();
    }
    for key in ["oneOf", "anyOf"] {
        if let Some(first) = schema
            .get(key)
            .and_then(Value::as_array)
            .and_then(|branches| branches.first())
        {
            return generate(first, doc, depth + 1);
        }
    }
    if let Some(branches) = schema.get("allOf").and_then(Value::as_array) {
        let mut merged = Map::new();
        let mut other = None;
        for branch in branches {
            match generate(branch, doc, depth + 1) {
                Value::Object(fields) => merged.extend(fields),
                value => other = other.or(Some(value)),
            }
        }
        return match other {
            Some(value) if merged.is_empty() => value,
            _ => Value::Object(merged),
        };
    }
    match schema_type(schema) {
        "null" => Value::Null,
        "boolean" => Value::Bool(true),
        "integer" => integer(schema),
        "number" => number(schema),
        "array" => array(schema, doc, depth),
        "object" => object(schema, doc, depth),
        _ => string(schema),
    }
}

/// The schema's type: the first listed, or what its keywords imply.
fn schema_type(schema: &Map<String, Value>) -> &str {
    match schema.get("type") {
        Some(Value::String(name)) => name,
        Some(Value::Array(names)) => names.first().and_then(Value::as_str).unwrap_or("string"),
        _ if schema.contains_key("properties") || schema.contains_key("required") => "object",
        _ if schema.contains_key("items") || schema.contains_key("prefixItems") => "array",
        _ => "string",
    }
}

fn integer(schema: &Map<String, Value>) -> Value {
    if let Some(minimum) = schema.get("minimum").and_then(Value::as_f64) {
        return json!(minimum.ceil() as i64);
    }
    if let Some(bound) = schema.get("exclusiveMinimum").and_then(Value::as_f64) {
        return json!(bound.floor() as i64 + 1);
    }
    json!(0)
}

fn number(schema: &Map<String, Value>) -> Value {
    if let Some(minimum) = schema.get("minimum") {
        return minimum.clone();
    }
    if let Some(bound) = schema.get("exclusiveMinimum").and_then(Value::as_f64) {
        return json!(bound + 1.0);
    }
    json!(0)
}

fn string(schema: &Map<String, Value>) -> Value {
    let example = match schema.get("format").and_then(Value::as_str) {
        Some("email") => "debug@example.com",
        Some("uri" | "url") => "https://example.com/debug",
        Some("date-time") => "2000-01-01T00:00:00.000Z",
        Some("date") => "2000-01-01",
        _ => "debug-string",
    };
    let mut text = example.to_owned();
    let length = |key: &str| {
        schema
            .get(key)
            .and_then(Value::as_u64)
            .and_then(|n| usize::try_from(n).ok())
    };
    if let Some(min) = length("minLength") {
        let missing = min.min(MAX_STRING).saturating_sub(text.chars().count());
        text.push_str(&"-".repeat(missing));
    }
    if let Some(max) = length("maxLength") {
        text = text.chars().take(max).collect();
    }
    Value::String(text)
}

fn array(schema: &Map<String, Value>, doc: &Doc<'_>, depth: usize) -> Value {
    let mut items: Vec<Value> = schema
        .get("prefixItems")
        .and_then(Value::as_array)
        .map(|prefix| {
            prefix
                .iter()
                .map(|item| generate(item, doc, depth + 1))
                .collect()
        })
        .unwrap_or_default();
    let item_schema = schema.get("items").filter(|items| **items != json!(false));
    let at_least = schema
        .get("minItems")
        .and_then(Value::as_u64)
        .map_or(1, |n| n.max(1).min(MAX_SCHEMA_DEPTH as u64) as usize);
    if items.is_empty() || item_schema.is_some() {
        let item_schema = item_schema.cloned().unwrap_or(Value::Bool(true));
        while items.len() < at_least && doc.left.get() > 0 {
            items.push(generate(&item_schema, doc, depth + 1));
        }
    }
    Value::Array(items)
}

fn object(schema: &Map<String, Value>, doc: &Doc<'_>, depth: usize) -> Value {
    let mut fields = Map::new();
    if let Some(properties) = schema.get("properties").and_then(Value::as_object) {
        for (name, property) in properties {
            fields.insert(name.clone(), generate(property, doc, depth + 1));
        }
    }
    for name in schema
        .get("required")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        if !fields.contains_key(name) {
            fields.insert(
                name.to_owned(),
                generate(&Value::Bool(true), doc, depth + 1),
            );
        }
    }
    Value::Object(fields)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn generated(schema: Value) -> Value {
        let value = generate(&schema, &Doc::new(&schema), 0);
        let validator = jsonschema::validator_for(&schema).expect("a valid schema");
        let errors: Vec<String> = validator
            .iter_errors(&value)
            .map(|e| e.to_string())
            .collect();
        assert!(
            errors.is_empty(),
            "{value} does not match {schema}: {errors:?}"
        );
        value
    }

    #[test]
    fn keywords_pick_the_documented_value() {
        assert_eq!(generated(json!({ "const": { "a": 1 } })), json!({ "a": 1 }));
        assert_eq!(generated(json!({ "enum": ["b", "c"] })), json!("b"));
        assert_eq!(
            generated(
                json!({ "oneOf": [{ "type": "integer", "minimum": 3 }, { "type": "string" }] })
            ),
            json!(3)
        );
        assert_eq!(
            generated(json!({ "anyOf": [{ "type": "null" }, { "type": "string" }] })),
            Value::Null
        );
        assert_eq!(
            generated(json!({ "allOf": [
                { "type": "object", "properties": { "a": { "type": "boolean" } }, "required": ["a"] },
                { "type": "object", "properties": { "b": { "type": "number", "exclusiveMinimum": 1.5 } } }
            ] })),
            json!({ "a": true, "b": 2.5 })
        );
    }

    #[test]
    fn types_and_formats() {
        assert_eq!(generated(json!({ "type": "null" })), Value::Null);
        assert_eq!(generated(json!({ "type": "boolean" })), json!(true));
        assert_eq!(generated(json!({ "type": "integer" })), json!(0));
        assert_eq!(
            generated(json!({ "type": "integer", "exclusiveMinimum": 4 })),
            json!(5)
        );
        assert_eq!(
            generated(json!({ "type": "number", "minimum": 0.5 })),
            json!(0.5)
        );
        assert_eq!(
            generated(json!({ "type": "string" })),
            json!("debug-string")
        );
        for (format, example) in [
            ("email", "debug@example.com"),
            ("uri", "https://example.com/debug"),
            ("url", "https://example.com/debug"),
            ("date-time", "2000-01-01T00:00:00.000Z"),
            ("date", "2000-01-01"),
        ] {
            assert_eq!(
                generated(json!({ "type": "string", "format": format })),
                json!(example)
            );
        }
        assert_eq!(
            generated(json!({ "type": "string", "minLength": 15, "maxLength": 20 })),
            json!("debug-string---")
        );
        assert_eq!(
            generated(json!({ "type": ["string", "null"], "maxLength": 5 })),
            json!("debug")
        );
    }

    #[test]
    fn arrays_and_objects() {
        assert_eq!(
            generated(json!({ "type": "array", "items": { "type": "integer" } })),
            json!([0])
        );
        assert_eq!(
            generated(json!({ "type": "array", "items": { "type": "boolean" }, "minItems": 3 })),
            json!([true, true, true])
        );
        assert_eq!(
            generated(
                json!({ "prefixItems": [{ "type": "string" }, { "type": "integer" }], "items": false })
            ),
            json!(["debug-string", 0])
        );
        assert_eq!(
            generated(json!({
                "type": "object",
                "properties": { "tags": { "type": "array", "items": { "enum": ["x"] } } },
                "required": ["tags", "extra"]
            })),
            json!({ "tags": ["x"], "extra": "debug-string" })
        );
    }

    #[test]
    fn local_refs_are_followed_and_recursion_ends() {
        assert_eq!(
            generated(json!({
                "$defs": { "person": { "type": "object", "properties": { "name": { "type": "string" } } } },
                "$ref": "#/$defs/person"
            })),
            json!({ "name": "debug-string" })
        );
        let recursive = json!({
            "type": "object",
            "properties": { "child": { "$ref": "#" } }
        });
        let value = generate(&recursive, &Doc::new(&recursive), 0);
        assert!(value.get("child").is_some(), "{value}");
        // Hostile schemas stay small: an exploding recursion and an enormous minLength.
        let exploding = json!({ "type": "array", "minItems": 1000, "items": { "$ref": "#" } });
        let value = generate(&exploding, &Doc::new(&exploding), 0);
        assert!(value.to_string().len() < 200_000, "bounded");
        let long = json!({ "type": "string", "minLength": 1_000_000_000_u64 });
        let value = generate(&long, &Doc::new(&long), 0);
        assert_eq!(value.as_str().map(str::len), Some(MAX_STRING));
    }

    #[tokio::test]
    async fn text_echo_usage_and_model() {
        let mut request = AgentRequest::new("hello there!");
        request.options = json!({ "model": "m1" });
        let response = DebugProvider.run(request).await.expect("debug never fails");
        assert_eq!(response.output, json!("echo: hello there!"));
        assert_eq!(response.model.as_deref(), Some("m1"));
        // 12 prompt bytes -> 3; "\"echo: hello there!\"" is 20 bytes -> 5.
        assert_eq!(response.usage, Some(Usage::tokens(3, 5)));
        let response = DebugProvider
            .run(AgentRequest::new(""))
            .await
            .expect("debug never fails");
        assert_eq!(
            response.usage,
            Some(Usage::tokens(1, 2)),
            "\"echo: \" is 8 JSON bytes"
        );
        assert_eq!(response.model, None);
    }
}
