//! A form for answering a wait, generated from its JSON schema: an object of plain properties
//! becomes labelled fields (text, number, checkbox, a choice for an `enum`), a plain value one
//! field; anything else (nested objects, arrays, `oneOf`, no schema) a JSON editor. The engine
//! checks the payload against the schema when it is sent, and the page shows its errors.

use maud::{html, Markup};
use serde_json::{Map, Value};

use super::{segment, Ui};

/// What one field holds, as the page's script reads it (`data-type`).
fn field_type(schema: &Value) -> Option<&'static str> {
    if schema.get("enum").is_some_and(Value::is_array) {
        return Some("enum");
    }
    match schema.get("type").and_then(Value::as_str) {
        Some("string") => Some("string"),
        Some("number") => Some("number"),
        Some("integer") => Some("integer"),
        Some("boolean") => Some("boolean"),
        _ => None,
    }
}

/// The properties of an object schema whose every property is a plain value.
fn plain_properties(schema: &Value) -> Option<&Map<String, Value>> {
    if schema.get("type").and_then(Value::as_str) != Some("object") {
        return None;
    }
    let properties = schema.get("properties")?.as_object()?;
    properties
        .values()
        .all(|property| field_type(property).is_some())
        .then_some(properties)
}

fn input(name: &str, schema: &Value, required: bool) -> Markup {
    let title = schema.get("title").and_then(Value::as_str).unwrap_or(name);
    let description = schema.get("description").and_then(Value::as_str);
    let kind = field_type(schema).unwrap_or("json");
    html! {
        label {
            span { (title) @if required { " *" } }
            @match kind {
                "boolean" => { input type="checkbox" name=(name) data-type="boolean"; }
                "number" | "integer" => {
                    input type="number" step=(if kind == "integer" { "1" } else { "any" })
                        name=(name) data-type=(kind) required[required];
                }
                "enum" => {
                    select name=(name) data-type="json" required[required] {
                        @if !required { option value="" { "—" } }
                        @for choice in schema["enum"].as_array().into_iter().flatten() {
                            option value=(choice.to_string()) {
                                (choice.as_str().map_or_else(|| choice.to_string(), str::to_owned))
                            }
                        }
                    }
                }
                "string" => { input type="text" name=(name) data-type="string" required[required]; }
                _ => { textarea name=(name) data-type="json" required[required] {} }
            }
            @if let Some(description) = description { " " small.muted { (description) } }
        }
    }
}

/// The form that sends signal `name` to `run_id`, for a wait with `schema`.
pub(super) fn signal_form(ui: &Ui, run_id: &str, name: &str, schema: Option<&Value>) -> Markup {
    let action = format!("/api/runs/{}/signals/{}", segment(run_id), segment(name));
    let schema = schema.filter(|schema| !schema.is_null());
    let required: Vec<&str> = schema
        .and_then(|schema| schema.get("required"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    html! {
        form.signal data-signal=(action) data-run=(run_id) data-name=(name)
            data-whole[schema.is_none_or(|schema| plain_properties(schema).is_none())] {
            strong { "signal " code { (name) } }
            @if ui.read_only {
                p.muted { "read-only inspector: send it with "
                    code { (ui.command(&["signal", run_id, name, "--data", "JSON"])) } }
            } @else {
                @match schema {
                    Some(schema) if plain_properties(schema).is_some() => {
                        @for (field, property) in plain_properties(schema).into_iter().flatten() {
                            (input(field, property, required.contains(&field.as_str())))
                        }
                    }
                    Some(schema) if field_type(schema).is_some() => {
                        (input("value", schema, true))
                    }
                    _ => {
                        label {
                            span { "payload (JSON)" }
                            textarea name="payload" data-type="json" placeholder="{}" {}
                        }
                    }
                }
                @if let Some(schema) = schema.filter(|schema| plain_properties(schema).is_none() && field_type(schema).is_none()) {
                    details { summary { "schema" } pre { (super::pages::pretty(schema, 4_000)) } }
                }
                button type="submit" { "Send" }
                div.note {}
            }
        }
    }
}
