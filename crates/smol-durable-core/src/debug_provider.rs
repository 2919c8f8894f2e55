//! The `debug` provider: offline, deterministic, free. It answers `echo: <prompt>`, or, when the
//! call carries a `schema`, a value generated from that schema, so workflows with structured
//! output run end to end without a model.

use async_trait::async_trait;
use serde_json::{json, Map, Value};

use crate::{AgentProvider, AgentRequest, AgentResponse, ProviderError, Usage, UsageCost};

/// An offline provider that never fails and always answers the same way: smol-wf 0.3.4's
/// `debug` provider, value for value, so offline runs compare across the two.
///
/// - Without a `schema` option the output is the text `echo: <prompt>`.
/// - With one, the output is generated from the schema by smol-wf's rules: `true` → `"debug"`,
///   `false` → `null`; `const`; else the first `enum` value; else the first `oneOf`/`anyOf`
///   branch; `allOf` merges its branches when all give objects (else its last); then by type
///   (the first of a list; without one, `properties`/`required`/`additionalProperties` mean an
///   object, `items`/`prefixItems` an array, `minimum`/`maximum`/`multipleOf` a number,
///   `minLength`/`maxLength`/`pattern`/`format` a string, anything else an object): `null`,
///   `true`, the `minimum` (or 0, or just above an `exclusiveMinimum`), the string
///   `debug-string` (formats `email`, `uri`/`url`, `date-time` and `date` get an example), one
///   item for `items` (or one per `prefixItems`), and for an object every property then every
///   other `required` key (`"debug"`).
/// - Where smol-wf's value does not match the schema (it ignored `minLength`, `maximum`,
///   `minItems`, `$ref`, …), a value that does is generated instead when these rules can: local
///   `$ref`s (`#/...`) are followed, lengths, item counts and bounds respected.
/// - Usage: input tokens are the prompt's bytes / 4 and output tokens the JSON-encoded output's
///   bytes / 4, each rounded up and at least 1; cost 0 USD; the model is the call's `model`
///   option.
///
/// ```
/// # async fn demo() -> Result<(), smol_durable_core::ProviderError> {
/// use serde_json::json;
/// use smol_durable_core::{AgentProvider, AgentRequest, DebugProvider};
///
/// let mut request = AgentRequest::new("extract the person");
/// request.options = json!({
///     "model": "m",
///     "schema": {
///         "type": "object",
///         "properties": { "name": { "type": "string" }, "age": { "type": "integer", "minimum": 18 } },
///         "required": ["name", "age", "id"]
///     }
/// });
/// let response = DebugProvider.run(request).await?;
/// assert_eq!(response.output, json!({ "name": "debug-string", "age": 18, "id": "debug" }));
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
            Some(schema) => schema_value(schema),
            None => Value::String(format!("echo: {}", request.prompt)),
        };
        let tokens = |bytes: usize| (bytes as u64).div_ceil(4).max(1);
        let output_bytes = serde_json::to_string(&output).map_or(0, |text| text.len());
        let usage = Usage::tokens(tokens(request.prompt.len()), tokens(output_bytes))
            .with_cost(UsageCost::free());
        let mut response = AgentResponse::new(output).with_usage(usage);
        response.model = request.model().map(str::to_owned);
        Ok(response)
    }
}

/// smol-wf's value for `schema`, or, when the schema refuses that one, a value generated while
/// also honouring what smol-wf ignored.
pub(crate) fn schema_value(schema: &Value) -> Value {
    let smol_wf = generate(schema, &Doc::new(schema, Rules::SmolWf), 0);
    match jsonschema::validator_for(schema) {
        Ok(validator) if !validator.is_valid(&smol_wf) => {
            generate(schema, &Doc::new(schema, Rules::Valid), 0)
        }
        _ => smol_wf,
    }
}

/// At most this many values are generated for one answer: recursive schemas with several
/// children or large `minItems` must not grow without bound.
const MAX_VALUES: usize = 10_000;

/// Longest string generated for a `minLength`.
const MAX_STRING: usize = 10_000;

/// Schemas nest at most this deep (through `$ref`s too) before the generator gives up on a
/// branch with `null`; a self-referencing schema must not loop.
const MAX_SCHEMA_DEPTH: usize = 32;

/// Which values the generator makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rules {
    /// smol-wf 0.3.4's, exactly.
    SmolWf,
    /// smol-wf's, plus `$ref`s, lengths, item counts and upper bounds.
    Valid,
}

/// The schema document (`$ref`s point into it), the rules, and what is left of the value
/// allowance.
struct Doc<'a> {
    root: &'a Value,
    rules: Rules,
    left: std::cell::Cell<usize>,
}

impl<'a> Doc<'a> {
    fn new(root: &'a Value, rules: Rules) -> Self {
        Self {
            root,
            rules,
            left: std::cell::Cell::new(MAX_VALUES),
        }
    }

    fn valid(&self) -> bool {
        self.rules == Rules::Valid
    }
}

fn generate(schema: &Value, doc: &Doc<'_>, depth: usize) -> Value {
    // Every value counts against the allowance, even the `null` that ends a deep branch.
    if doc.left.get() == 0 {
        return Value::Null;
    }
    doc.left.set(doc.left.get() - 1);
    if depth > MAX_SCHEMA_DEPTH {
        return Value::Null;
    }
    let schema = match schema {
        Value::Object(schema) => schema,
        Value::Bool(false) => return Value::Null,
        _ => return Value::String("debug".to_owned()),
    };
    if doc.valid() {
        if let Some(target) = schema
            .get("$ref")
            .and_then(Value::as_str)
            .and_then(|pointer| pointer.strip_prefix('#'))
            .and_then(|pointer| doc.root.pointer(pointer))
        {
            return generate(target, doc, depth + 1);
        }
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
        let values: Vec<Value> = branches
            .iter()
            .map(|branch| generate(branch, doc, depth + 1))
            .collect();
        if !values.is_empty() && values.iter().all(Value::is_object) {
            let mut merged = Map::new();
            for value in values {
                if let Value::Object(fields) = value {
                    merged.extend(fields);
                }
            }
            return Value::Object(merged);
        }
        return values.into_iter().last().unwrap_or(Value::Null);
    }
    match schema_type(schema) {
        "null" => Value::Null,
        "boolean" => Value::Bool(true),
        "integer" => number(schema, true, doc),
        "number" => number(schema, false, doc),
        "string" => string(schema, doc),
        "array" => array(schema, doc, depth),
        _ => object(schema, doc, depth),
    }
}

/// The schema's type: `type`, the first of a `type` list, or what its keywords imply.
fn schema_type(schema: &Map<String, Value>) -> &str {
    let named = match schema.get("type") {
        Some(Value::String(name)) => Some(name.as_str()),
        Some(Value::Array(names)) => names.first().and_then(Value::as_str),
        _ => None,
    };
    if let Some(name) = named {
        return name;
    }
    let has = |keys: &[&str]| keys.iter().any(|key| schema.contains_key(*key));
    if has(&["properties", "required", "additionalProperties"]) {
        "object"
    } else if has(&["items", "prefixItems"]) {
        "array"
    } else if has(&["minimum", "maximum", "multipleOf"]) {
        "number"
    } else if has(&["minLength", "maxLength", "pattern", "format"]) {
        "string"
    } else {
        "object"
    }
}

/// The `minimum`, or 0, moved just above an `exclusiveMinimum` (by 1 for integers, by the float
/// epsilon for numbers); an integer when the type is or the value is whole.
fn number(schema: &Map<String, Value>, integer: bool, doc: &Doc<'_>) -> Value {
    let bound = |key: &str| schema.get(key).and_then(Value::as_f64);
    let step = if integer { 1.0 } else { f64::EPSILON };
    let mut value = bound("minimum").unwrap_or(0.0);
    if let Some(exclusive) = bound("exclusiveMinimum") {
        value = value.max(exclusive + step);
    }
    if doc.valid() {
        if let Some(maximum) = bound("maximum") {
            value = value.min(maximum);
        }
        if let Some(exclusive) = bound("exclusiveMaximum") {
            value = value.min(exclusive - step);
        }
        if let Some(multiple) = bound("multipleOf").filter(|m| *m > 0.0) {
            value = (value / multiple).ceil() * multiple;
        }
        if integer {
            value = value.ceil();
        }
    }
    if integer || value.fract() == 0.0 {
        // Saturates for bounds beyond i64, which no real schema has.
        json!(value.ceil() as i64)
    } else {
        json!(value)
    }
}

fn string(schema: &Map<String, Value>, doc: &Doc<'_>) -> Value {
    let example = match schema.get("format").and_then(Value::as_str) {
        Some("email") => "debug@example.com",
        Some("uri" | "url") => "https://example.com/debug",
        Some("date-time") => "2000-01-01T00:00:00.000Z",
        Some("date") => "2000-01-01",
        _ => "debug-string",
    };
    let mut text = example.to_owned();
    if doc.valid() {
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
    }
    Value::String(text)
}

fn array(schema: &Map<String, Value>, doc: &Doc<'_>, depth: usize) -> Value {
    let prefix = schema
        .get("prefixItems")
        .and_then(Value::as_array)
        .filter(|prefix| !prefix.is_empty());
    let items = schema
        .get("items")
        .filter(|items| items.is_object() || items.is_boolean());
    let mut values: Vec<Value> = match (prefix, items) {
        (Some(prefix), _) => prefix
            .iter()
            .map(|item| generate(item, doc, depth + 1))
            .collect(),
        (None, Some(items)) if !doc.valid() || *items != Value::Bool(false) => {
            vec![generate(items, doc, depth + 1)]
        }
        _ => Vec::new(),
    };
    if doc.valid() {
        let count = |key: &str| {
            schema
                .get(key)
                .and_then(Value::as_u64)
                .map(|n| n.min(MAX_SCHEMA_DEPTH as u64) as usize)
        };
        if let (Some(min), Some(items)) = (count("minItems"), items) {
            while values.len() < min && doc.left.get() > 0 {
                values.push(generate(items, doc, depth + 1));
            }
        }
        if let Some(max) = count("maxItems") {
            values.truncate(max);
        }
    }
    Value::Array(values)
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
            fields.insert(name.to_owned(), Value::String("debug".to_owned()));
        }
    }
    Value::Object(fields)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The value and a check that the schema accepts it.
    fn generated(schema: Value) -> Value {
        let value = schema_value(&schema);
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

    /// smol-wf's value, whether or not the schema accepts it.
    fn smol_wf(schema: Value) -> Value {
        generate(&schema, &Doc::new(&schema, Rules::SmolWf), 0)
    }

    #[test]
    fn keywords_pick_smol_wf_s_value() {
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
            json!({ "a": true, "b": 1.5000000000000002 })
        );
        // Not all objects: the last branch's value; no branch at all: null.
        assert_eq!(
            smol_wf(json!({ "allOf": [{ "type": "object" }, { "type": "integer" }] })),
            json!(0)
        );
        assert_eq!(smol_wf(json!({ "allOf": [] })), Value::Null);
        assert_eq!(smol_wf(json!(true)), json!("debug"));
        assert_eq!(smol_wf(json!(false)), Value::Null);
        assert_eq!(smol_wf(json!(7)), json!("debug"));
    }

    #[test]
    fn types_numbers_and_formats() {
        assert_eq!(generated(json!({ "type": "null" })), Value::Null);
        assert_eq!(generated(json!({ "type": "boolean" })), json!(true));
        assert_eq!(generated(json!({ "type": "integer" })), json!(0));
        assert_eq!(
            generated(json!({ "type": "integer", "exclusiveMinimum": 4 })),
            json!(5)
        );
        assert_eq!(
            generated(json!({ "type": "integer", "minimum": 2.5 })),
            json!(3)
        );
        assert_eq!(
            generated(json!({ "type": "number", "minimum": 0.5 })),
            json!(0.5)
        );
        assert_eq!(
            generated(json!({ "type": "number", "exclusiveMinimum": 1 })),
            json!(1.0000000000000002)
        );
        assert_eq!(
            generated(json!({ "type": "number", "minimum": 2 })),
            json!(2)
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
            ("hostname", "debug-string"),
        ] {
            assert_eq!(
                generated(json!({ "type": "string", "format": format })),
                json!(example)
            );
        }
        // The first listed type; unknown names make objects.
        assert_eq!(generated(json!({ "type": ["integer", "null"] })), json!(0));
        assert_eq!(smol_wf(json!({ "type": "whatever" })), json!({}));
    }

    #[test]
    fn types_are_inferred_from_keywords_else_object() {
        assert_eq!(
            generated(json!({ "required": ["a"] })),
            json!({ "a": "debug" })
        );
        assert_eq!(
            generated(json!({ "additionalProperties": false })),
            json!({})
        );
        assert_eq!(
            generated(json!({ "items": { "type": "boolean" } })),
            json!([true])
        );
        assert_eq!(generated(json!({ "minimum": 4 })), json!(4));
        assert_eq!(generated(json!({ "format": "date" })), json!("2000-01-01"));
        assert_eq!(generated(json!({})), json!({}));
    }

    #[test]
    fn arrays_and_objects() {
        assert_eq!(
            generated(json!({ "type": "array", "items": { "type": "integer" } })),
            json!([0])
        );
        assert_eq!(generated(json!({ "type": "array" })), json!([]));
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
            json!({ "tags": ["x"], "extra": "debug" })
        );
    }

    #[test]
    fn what_smol_wf_got_wrong_is_made_valid() {
        // smol-wf ignored these keywords and answered values its own validator refused.
        assert_eq!(
            generated(json!({ "type": "string", "minLength": 15, "maxLength": 20 })),
            json!("debug-string---")
        );
        assert_eq!(
            generated(json!({ "type": ["string", "null"], "maxLength": 5 })),
            json!("debug")
        );
        assert_eq!(
            generated(json!({ "type": "array", "items": { "type": "boolean" }, "minItems": 3 })),
            json!([true, true, true])
        );
        assert_eq!(
            generated(json!({ "type": "integer", "maximum": -3 })),
            json!(-3)
        );
        assert_eq!(
            generated(json!({ "type": "integer", "minimum": 1, "multipleOf": 5 })),
            json!(5)
        );
        assert_eq!(
            smol_wf(json!({ "type": "array", "items": false })),
            json!([null])
        );
        assert_eq!(
            generated(json!({ "type": "array", "items": false })),
            json!([])
        );
    }

    #[test]
    fn local_refs_are_followed_and_recursion_ends() {
        assert_eq!(
            generated(json!({
                "$defs": { "person": { "type": "object", "properties": { "name": { "type": "string" } }, "required": ["name"] } },
                "$ref": "#/$defs/person"
            })),
            json!({ "name": "debug-string" })
        );
        let recursive = json!({
            "type": "object",
            "properties": { "child": { "$ref": "#" } }
        });
        let value = schema_value(&recursive);
        assert!(value.get("child").is_some(), "{value}");
        // Hostile schemas stay small: an exploding recursion and an enormous minLength.
        let exploding = json!({ "type": "array", "minItems": 1000, "items": { "$ref": "#" } });
        let value = schema_value(&exploding);
        let size = value.to_string().len();
        assert!(size < 200_000, "bounded: {size}");
        let long = json!({ "type": "string", "minLength": 1_000_000_000_u64 });
        let value = schema_value(&long);
        assert_eq!(value.as_str().map(str::len), Some(MAX_STRING));
    }

    #[tokio::test]
    async fn text_echo_usage_cost_and_model() {
        let mut request = AgentRequest::new("hello there!");
        request.options = json!({ "model": "m1" });
        let response = DebugProvider.run(request).await.expect("debug never fails");
        assert_eq!(response.output, json!("echo: hello there!"));
        assert_eq!(response.model.as_deref(), Some("m1"));
        // 12 prompt bytes -> 3; "\"echo: hello there!\"" is 20 bytes -> 5.
        assert_eq!(
            response.usage,
            Some(Usage::tokens(3, 5).with_cost(UsageCost::free()))
        );
        assert_eq!(
            serde_json::to_value(&response.usage).ok(),
            Some(json!({
                "inputTokens": 3, "outputTokens": 5, "totalTokens": 8,
                "cost": { "input": 0.0, "output": 0.0, "total": 0.0, "currency": "USD" }
            }))
        );
        let response = DebugProvider
            .run(AgentRequest::new(""))
            .await
            .expect("debug never fails");
        assert_eq!(
            response.usage.and_then(|usage| usage.output_tokens),
            Some(2),
            "\"echo: \" is 8 JSON bytes"
        );
        assert_eq!(response.model, None);
    }
}
