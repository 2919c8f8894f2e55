//! Workflow arguments from the command line, as smol-wf reads them: `--args-<name> VALUE`,
//! `--args-<name>=VALUE`, a bare `--args-<name>` (true), and `--args-from-file FILE` (YAML for
//! `.yaml`/`.yml`, JSON otherwise), merged in command-line order: a name seen again appends to
//! an array (a file's value included). clap cannot declare flags whose names are data, so these
//! are taken out of argv first.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde_json::{Map, Value};

/// How workflow arguments are written, for error messages.
pub const ARGS_FORMS: &str = "Run arguments must use --args-<name> or --args-from-file.";

const PREFIX: &str = "--args-";
const FROM_FILE: &str = "--args-from-file";

/// Where a workflow argument comes from, in command-line order.
#[derive(Debug, Clone, PartialEq)]
enum Source {
    /// `--args-<name> VALUE`.
    Value(String, Value),
    /// `--args-from-file FILE`.
    File(PathBuf),
}

/// The workflow arguments of a command line, not yet read (files are read by [`Self::read`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WorkflowArgs {
    sources: Vec<Source>,
}

impl WorkflowArgs {
    /// Whether the command line named any.
    pub fn is_empty(&self) -> bool {
        self.sources.is_empty()
    }

    /// The names given with `--args-<name>`, in command-line order (files not read).
    #[allow(dead_code)] // the fuzz target checks them; the CLI reads whole sources
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.sources.iter().filter_map(|source| match source {
            Source::Value(name, _) => Some(name.as_str()),
            Source::File(_) => None,
        })
    }

    /// The arguments: every source merged in order.
    pub fn read(&self) -> anyhow::Result<Map<String, Value>> {
        let mut args = Map::new();
        for source in &self.sources {
            match source {
                Source::Value(name, value) => insert(&mut args, name.clone(), value.clone()),
                Source::File(path) => {
                    for (name, value) in from_file(path)? {
                        insert(&mut args, name, value);
                    }
                }
            }
        }
        Ok(args)
    }
}

/// Splits `argv` into what clap parses and the workflow arguments.
pub fn split(argv: Vec<String>) -> anyhow::Result<(Vec<String>, WorkflowArgs)> {
    let mut rest = Vec::with_capacity(argv.len());
    let mut args = WorkflowArgs::default();
    let mut tokens = argv.into_iter().peekable();
    while let Some(token) = tokens.next() {
        if token == "--" {
            rest.push(token);
            rest.extend(tokens);
            break;
        }
        if token == FROM_FILE {
            match tokens.next() {
                Some(path) => args.sources.push(Source::File(PathBuf::from(path))),
                None => bail!("Missing value for {FROM_FILE}"),
            }
            continue;
        }
        if let Some(path) = token
            .strip_prefix(FROM_FILE)
            .and_then(|t| t.strip_prefix('='))
        {
            args.sources.push(Source::File(PathBuf::from(path)));
            continue;
        }
        let Some(flag) = token.strip_prefix(PREFIX) else {
            rest.push(token);
            continue;
        };
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
        args.sources.push(Source::Value(name, value));
    }
    Ok((rest, args))
}

/// A name seen again collects its values into an array.
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

/// The object in a `.yaml`/`.yml` file (any case), or in any other file read as JSON.
fn from_file(path: &Path) -> anyhow::Result<Map<String, Value>> {
    let yaml = path
        .extension()
        .map(|ext| ext.to_string_lossy().to_ascii_lowercase())
        .is_some_and(|ext| ext == "yaml" || ext == "yml");
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read --args-from-file {}", path.display()))?;
    let (format, parsed) = if yaml {
        (
            "YAML",
            serde_norway::from_str(&text).map_err(|e| e.to_string()),
        )
    } else {
        (
            "JSON",
            serde_json::from_str(&text).map_err(|e| e.to_string()),
        )
    };
    match parsed {
        Ok(Value::Object(map)) => Ok(map),
        Ok(other) => bail!(
            "--args-from-file must contain a JSON or YAML object: {} holds {}",
            path.display(),
            json_kind(&other)
        ),
        Err(error) => bail!(
            "--args-from-file {} is not valid {format}: {error}",
            path.display()
        ),
    }
}

/// `a number`, `an array`, … for messages about JSON values.
fn json_kind(value: &Value) -> &'static str {
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
            "run s.mjs --args-topic tea --args-tag a --db x.db --args-tag=b --args-verbose --args-n -5 --args-last",
        ))
        .expect("split");
        assert_eq!(rest, argv("run s.mjs --db x.db"));
        assert_eq!(
            Value::Object(args.read().expect("read")),
            json!({ "topic": "tea", "tag": ["a", "b"], "verbose": true, "n": "-5", "last": true })
        );
    }

    #[test]
    fn files_and_values_merge_in_command_line_order() {
        let dir = tempfile::tempdir().expect("dir");
        let json_file = dir.path().join("a.txt");
        std::fs::write(&json_file, r#"{"x": {"y": 1}, "k": "file"}"#).expect("write");
        let yaml_file = dir.path().join("b.YML");
        std::fs::write(&yaml_file, "k: yaml\nn: 3\n").expect("write");
        let line = format!(
            "run s.mjs --args-k first --args-from-file {} --args-x override --args-from-file={}",
            json_file.display(),
            yaml_file.display()
        );
        let (rest, args) = split(argv(&line)).expect("split");
        assert_eq!(rest, argv("run s.mjs"));
        assert_eq!(
            Value::Object(args.read().expect("read")),
            json!({ "k": ["first", "file", "yaml"], "x": [{"y": 1}, "override"], "n": 3 })
        );
    }

    #[test]
    fn files_must_hold_objects() {
        let dir = tempfile::tempdir().expect("dir");
        let list = dir.path().join("list.yaml");
        std::fs::write(&list, "- a\n- b\n").expect("write");
        let (_, args) = split(argv(&format!(
            "run s.mjs --args-from-file {}",
            list.display()
        )))
        .expect("split");
        let error = args.read().expect_err("a list");
        assert!(
            error
                .to_string()
                .starts_with("--args-from-file must contain a JSON or YAML object"),
            "{error}"
        );
        let (_, missing) = split(argv("run s.mjs --args-from-file nowhere.json")).expect("split");
        let error = format!("{:#}", missing.read().expect_err("missing"));
        assert!(
            error.contains("cannot read --args-from-file nowhere.json"),
            "{error}"
        );
    }

    #[test]
    fn a_double_dash_ends_workflow_arguments_and_empty_names_are_refused() {
        let (rest, args) = split(argv("run s.mjs -- --args-x 1")).expect("split");
        assert_eq!(rest, argv("run s.mjs -- --args-x 1"));
        assert!(args.is_empty());
        let error = split(argv("run s.mjs --args- 1")).expect_err("empty name");
        assert!(error.to_string().contains("names no argument"), "{error}");
        let error = split(argv("run s.mjs --args-from-file")).expect_err("no file");
        assert_eq!(error.to_string(), "Missing value for --args-from-file");
    }
}
