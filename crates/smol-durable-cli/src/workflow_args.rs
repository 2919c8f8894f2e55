//! Workflow arguments from the command line: `--args-<name> VALUE`, `--args-<name>=VALUE`, a
//! bare `--args-<name>` (true), repeated names (an array), and `--args-from-file FILE.json|.yaml`.
//! clap cannot declare flags whose names are data, so these are taken out of argv first.

use std::path::Path;

use anyhow::{bail, Context};
use serde_json::{Map, Value};

/// How workflow arguments are written, for error messages.
pub const ARGS_FORMS: &str = "workflow arguments are passed as --args-<name> VALUE, \
--args-<name>=VALUE, a bare --args-<name> (true), or --args-from-file FILE.json|.yaml";

const PREFIX: &str = "--args-";
const FROM_FILE: &str = "--args-from-file";

/// Splits `argv` into what clap parses and the `--args-<name>` arguments, in order.
pub fn split(argv: Vec<String>) -> anyhow::Result<(Vec<String>, Map<String, Value>)> {
    let mut rest = Vec::with_capacity(argv.len());
    let mut args = Map::new();
    let mut tokens = argv.into_iter().peekable();
    while let Some(token) = tokens.next() {
        if token == "--" {
            rest.push(token);
            rest.extend(tokens);
            break;
        }
        let is_workflow_arg = token.starts_with(PREFIX)
            && token != FROM_FILE
            && !token.starts_with(&format!("{FROM_FILE}="));
        if !is_workflow_arg {
            rest.push(token);
            continue;
        }
        let flag = &token[PREFIX.len()..];
        let (name, value) = match flag.split_once('=') {
            Some((name, value)) => (name.to_owned(), Value::String(value.to_owned())),
            None => {
                let value = match tokens.peek() {
                    Some(next) if !next.starts_with("--") => {
                        Value::String(tokens.next().unwrap_or_default())
                    }
                    _ => Value::Bool(true),
                };
                (flag.to_owned(), value)
            }
        };
        if name.is_empty() {
            bail!("{token:?} names no argument; {ARGS_FORMS}");
        }
        insert(&mut args, name, value);
    }
    Ok((rest, args))
}

/// A repeated name collects its values into an array.
fn insert(args: &mut Map<String, Value>, name: String, value: Value) {
    match args.get_mut(&name) {
        Some(Value::Array(values)) => values.push(value),
        Some(previous) => {
            let first = previous.take();
            *previous = Value::Array(vec![first, value]);
        }
        None => {
            args.insert(name, value);
        }
    }
}

/// The object in a `.json`, `.yaml` or `.yml` file; command-line arguments override its keys.
pub fn from_file(path: &Path) -> anyhow::Result<Map<String, Value>> {
    let extension = path
        .extension()
        .map(|ext| ext.to_string_lossy().to_ascii_lowercase());
    type Parse = fn(&str) -> Result<Value, String>;
    let (format, parsed): (&str, Parse) = match extension.as_deref() {
        Some("json") => ("JSON", |text| {
            serde_json::from_str(text).map_err(|e| e.to_string())
        }),
        Some("yaml" | "yml") => ("YAML", |text| {
            serde_norway::from_str(text).map_err(|e| e.to_string())
        }),
        _ => bail!(
            "--args-from-file {} must be a .json, .yaml or .yml file",
            path.display()
        ),
    };
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read --args-from-file {}", path.display()))?;
    match parsed(&text) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(other) => bail!(
            "--args-from-file {} must hold a {format} object (a mapping), not {}",
            path.display(),
            kind(&other)
        ),
        Err(error) => bail!(
            "--args-from-file {} is not valid {format}: {error}",
            path.display()
        ),
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn argv(text: &str) -> Vec<String> {
        text.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn every_form_of_workflow_argument() {
        let (rest, args) = split(argv(
            "run s.mjs --args-topic tea --args-tag a --db x.db --args-tag=b --args-verbose --args-from-file f.json --args-last",
        ))
        .expect("split");
        assert_eq!(rest, argv("run s.mjs --db x.db --args-from-file f.json"));
        assert_eq!(
            Value::Object(args),
            json!({ "topic": "tea", "tag": ["a", "b"], "verbose": true, "last": true })
        );
    }

    #[test]
    fn a_double_dash_ends_workflow_arguments_and_empty_names_are_refused() {
        let (rest, args) = split(argv("run s.mjs -- --args-x 1")).expect("split");
        assert_eq!(rest, argv("run s.mjs -- --args-x 1"));
        assert!(args.is_empty());
        let error = split(argv("run s.mjs --args- 1")).expect_err("empty name");
        assert!(error.to_string().contains("names no argument"), "{error}");
    }
}
