//! Structured output: the `schema` agent option. The provider's output is validated against the
//! JSON Schema; on a mismatch the call is made once more with the validation errors appended to
//! the prompt, then the call fails with those errors.

use std::sync::Arc;

use serde_json::Value;

/// A compiled `schema` option.
#[derive(Clone)]
pub(crate) struct OutputSchema(Arc<jsonschema::Validator>);

impl std::fmt::Debug for OutputSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OutputSchema")
    }
}

/// At most this many validation errors are reported (and appended to a corrective prompt).
const MAX_ERRORS: usize = 10;

impl OutputSchema {
    /// Compiles `options.schema`, if present.
    pub fn from_options(options: &Value) -> Result<Option<Self>, String> {
        match options.get("schema") {
            None | Some(Value::Null) => Ok(None),
            Some(schema) => jsonschema::validator_for(schema)
                .map(|validator| Some(Self(Arc::new(validator))))
                .map_err(|error| format!("{MISMATCH} / schema is invalid: {error}")),
        }
    }

    /// The output as the schema sees it, or the validation errors. A string holding JSON is
    /// parsed first (many providers answer in text), unless the string itself is what matches
    /// (`{"type": "string", "pattern": "^[0-9]+$"}` and the answer `"94103"`).
    pub fn check(&self, output: &Value) -> Result<Value, Vec<String>> {
        if let Value::String(text) = output {
            if let Ok(parsed) = serde_json::from_str::<Value>(text.trim()) {
                if self.0.is_valid(&parsed) {
                    return Ok(parsed);
                }
            }
        }
        let errors = self.errors(output);
        if errors.is_empty() {
            Ok(output.clone())
        } else {
            Err(errors)
        }
    }

    /// Compiles a schema given on its own (a wait's `schema` option).
    pub fn compile(schema: &Value) -> Result<Self, String> {
        jsonschema::validator_for(schema)
            .map(|validator| Self(Arc::new(validator)))
            .map_err(|error| format!("the schema is invalid: {error}"))
    }

    /// Where `value` does not match, as `<path> <problem>` (none when it matches). Nothing is
    /// parsed first: a string is a string.
    pub fn errors(&self, value: &Value) -> Vec<String> {
        self.0
            .iter_errors(value)
            .take(MAX_ERRORS)
            .map(|error| {
                let path = error.instance_path().to_string();
                let path = if path.is_empty() { "/" } else { path.as_str() };
                format!("{path} {error}")
            })
            .collect()
    }
}

/// The prompt of the one corrective retry.
pub(crate) fn corrective_prompt(prompt: &str, errors: &[String]) -> String {
    let mut text = String::from(prompt);
    text.push_str("\n\nYour previous answer did not match the required JSON schema:\n");
    for error in errors {
        text.push_str("- ");
        text.push_str(error);
        text.push('\n');
    }
    text.push_str("Answer again with JSON that matches the schema exactly.");
    text
}

/// The error when the corrective retry does not match either.
pub(crate) fn mismatch_message(errors: &[String]) -> String {
    format!("{MISMATCH} {}", errors.join("; "))
}

/// How smol-wf began every schema error (a script may compare it), `<path> <problem>` after it.
const MISMATCH: &str = "Structured output did not match JSON Schema:";

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn person() -> OutputSchema {
        OutputSchema::from_options(&json!({ "schema": {
            "type": "object",
            "properties": { "name": { "type": "string" }, "age": { "type": "integer", "minimum": 0 } },
            "required": ["name", "age"]
        }}))
        .expect("valid")
        .expect("present")
    }

    #[test]
    fn matching_output_passes_and_json_text_is_parsed() {
        assert_eq!(
            person().check(&json!({ "name": "Ada", "age": 36 })),
            Ok(json!({ "name": "Ada", "age": 36 }))
        );
        assert_eq!(
            person().check(&json!(" {\"name\": \"Ada\", \"age\": 1} ")),
            Ok(json!({ "name": "Ada", "age": 1 }))
        );
    }

    #[test]
    fn mismatches_list_their_errors_with_paths() {
        let errors = person()
            .check(&json!({ "name": 5, "age": -1 }))
            .expect_err("invalid");
        assert_eq!(errors.len(), 2);
        assert!(errors.iter().any(|e| e.starts_with("/name")), "{errors:?}");
        assert!(errors.iter().any(|e| e.starts_with("/age")), "{errors:?}");
        let prompt = corrective_prompt("extract", &errors);
        assert!(prompt.starts_with("extract\n\nYour previous answer did not match"));
        assert!(prompt.contains("- /name"));
    }

    #[test]
    fn strings_that_look_like_json_can_still_be_strings() {
        let zip = OutputSchema::from_options(
            &json!({ "schema": { "type": "string", "pattern": "^[0-9]{5}$" } }),
        )
        .expect("valid")
        .expect("present");
        assert_eq!(zip.check(&json!("94103")), Ok(json!("94103")));
        assert!(zip.check(&json!("nope")).is_err());
    }

    #[test]
    fn no_schema_and_invalid_schemas() {
        assert!(OutputSchema::from_options(&json!({ "model": "m" }))
            .expect("ok")
            .is_none());
        assert!(OutputSchema::from_options(&Value::Null)
            .expect("ok")
            .is_none());
        // smol-wf refused `schema: null` as an invalid schema; here it means no schema.
        assert!(OutputSchema::from_options(&json!({ "schema": null }))
            .expect("ok")
            .is_none());
        let error =
            OutputSchema::from_options(&json!({ "schema": { "type": 5 } })).expect_err("invalid");
        assert!(
            error.starts_with("Structured output did not match JSON Schema: / schema is invalid: "),
            "{error}"
        );
        assert_eq!(
            mismatch_message(&["/b true is not of type \"integer\"".to_owned()]),
            "Structured output did not match JSON Schema: /b true is not of type \"integer\""
        );
    }
}
