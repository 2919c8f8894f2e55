//! Step identity (SPEC §3): input signatures, canonical JSON, hashes and checkpoint names.

use std::collections::HashMap;

use serde_json::{json, Value};

/// Canonical JSON: object keys sorted by byte order at every depth, arrays kept in order,
/// compact serde_json encoding.
///
/// ```
/// use serde_json::json;
/// let text = smol_durable_core::canonical_json(&json!({"b": 1, "a": {"d": [2, {"f": 1, "e": 0}], "c": null}}));
/// assert_eq!(text, r#"{"a":{"c":null,"d":[2,{"e":0,"f":1}]},"b":1}"#);
/// ```
pub fn canonical_json(value: &Value) -> String {
    let mut out = Vec::with_capacity(128);
    write_canonical(value, &mut out);
    into_string(out)
}

fn into_string(bytes: Vec<u8>) -> String {
    // Everything written is serde_json output or ASCII punctuation: always UTF-8.
    String::from_utf8(bytes)
        .unwrap_or_else(|error| String::from_utf8_lossy(error.as_bytes()).into_owned())
}

fn write_str(text: &str, out: &mut Vec<u8>) {
    // Writing a &str into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, text);
}

fn write_canonical(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Object(object) => {
            let mut entries: Vec<(&String, &Value)> = object.iter().collect();
            // Byte order, which is what `str::cmp` gives for UTF-8. serde_json's default map is
            // already sorted, but a dependency enabling `preserve_order` would change that.
            if !entries.windows(2).all(|pair| pair[0].0 <= pair[1].0) {
                entries.sort_by(|left, right| left.0.as_bytes().cmp(right.0.as_bytes()));
            }
            out.push(b'{');
            for (index, (key, value)) in entries.into_iter().enumerate() {
                if index > 0 {
                    out.push(b',');
                }
                write_str(key, out);
                out.push(b':');
                write_canonical(value, out);
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (index, item) in items.iter().enumerate() {
                if index > 0 {
                    out.push(b',');
                }
                write_canonical(item, out);
            }
            out.push(b']');
        }
        scalar => {
            let _ = serde_json::to_writer(&mut *out, scalar);
        }
    }
}

fn write_opt_str(text: Option<&str>, out: &mut Vec<u8>) {
    match text {
        Some(text) => write_str(text, out),
        None => out.extend_from_slice(b"null"),
    }
}

/// The identity of one durable call: its canonical signature document and hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepSignature {
    /// The exact canonical string that is stored as `input_signature_json`.
    pub json: String,
    /// First 12 bytes of BLAKE3(json) as 24 lowercase hex characters.
    pub hash: String,
}

impl StepSignature {
    /// Canonicalises and hashes a signature document.
    pub fn from_document(document: &Value) -> Self {
        Self::from_canonical(canonical_json(document))
    }

    fn from_canonical(json: String) -> Self {
        let digest = blake3::hash(json.as_bytes());
        let hash = digest.as_bytes()[..12]
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect();
        Self { json, hash }
    }

    /// `step:sig_<hash>`: the checkpoint name of the first occurrence.
    pub fn base_checkpoint(&self) -> String {
        format!("step:sig_{}", self.hash)
    }

    /// Signature of an agent call (version 2). `options` must already be the effective options
    /// (`null` when none remain); `phase`/`cwd` are `None` when unset.
    pub fn agent(
        workflow_scope: &str,
        provider: &str,
        prompt: &str,
        options: &Value,
        phase: Option<&str>,
        cwd: Option<&str>,
    ) -> Self {
        // Written directly in canonical key order: this runs for every agent call, and building
        // the document first costs more than hashing it (the tests check both ways agree).
        let mut out = Vec::with_capacity(192 + prompt.len());
        out.extend_from_slice(b"{\"context\":{\"cwd\":");
        write_opt_str(cwd, &mut out);
        out.extend_from_slice(b",\"phase\":");
        write_opt_str(phase, &mut out);
        out.extend_from_slice(b"},\"kind\":\"agent\",\"options\":");
        write_canonical(options, &mut out);
        out.extend_from_slice(b",\"prompt\":");
        write_str(prompt, &mut out);
        out.extend_from_slice(b",\"provider\":");
        write_str(provider, &mut out);
        out.extend_from_slice(b",\"signatureVersion\":2,\"workflowScope\":");
        write_str(workflow_scope, &mut out);
        out.push(b'}');
        Self::from_canonical(into_string(out))
    }

    /// Signature of an agent call named by its `key` option (version 3): the key alone, in its
    /// scope, so editing the prompt or options of a keyed call replays its stored result.
    pub fn keyed_agent(workflow_scope: &str, key: &str) -> Self {
        Self::from_document(&json!({
            "signatureVersion": 3,
            "kind": "agent",
            "workflowScope": workflow_scope,
            "key": key,
        }))
    }

    /// Signature of a durable sleep (version 1).
    pub fn sleep(workflow_scope: &str, duration_ms: u64) -> Self {
        Self::from_document(&json!({
            "signatureVersion": 1,
            "kind": "sleep",
            "workflowScope": workflow_scope,
            "durationMs": duration_ms,
        }))
    }

    /// Signature of a wait (version 1): the names it waits for, sorted and without repeats, in
    /// its scope. Timeout, deadline, schema, description and default are not part of it, so
    /// editing them while a run waits keeps its wait.
    pub fn wait(workflow_scope: &str, names: &[String]) -> Self {
        let mut names = names.to_vec();
        names.sort();
        names.dedup();
        Self::from_document(&json!({
            "signatureVersion": 1,
            "kind": "wait",
            "workflowScope": workflow_scope,
            "names": names,
        }))
    }

    /// Signature of a signal sent by a script (version 1): target run, name and payload, in
    /// its scope.
    pub fn signal(workflow_scope: &str, run_id: &str, name: &str, payload: &Value) -> Self {
        Self::from_document(&json!({
            "signatureVersion": 1,
            "kind": "signal",
            "workflowScope": workflow_scope,
            "runId": run_id,
            "name": name,
            "payload": payload,
        }))
    }

    /// Signature of a child workflow call (version 1); `reference` is the ref as the script wrote it.
    pub fn workflow(workflow_scope: &str, reference: &Value, args: &Value) -> Self {
        Self::from_document(&json!({
            "signatureVersion": 1,
            "kind": "workflow",
            "workflowScope": workflow_scope,
            "ref": reference,
            "args": args,
        }))
    }
}

/// The workflow scope of a child run: derived from the parent's step, never from timing.
pub fn child_workflow_scope(parent_checkpoint: &str) -> String {
    format!("child:{parent_checkpoint}")
}

/// Counts occurrences of base checkpoint names within one attempt of one run, producing
/// `base`, `base#2`, `base#3`, … in the order requests are observed.
#[derive(Debug, Default)]
pub struct OccurrenceCounter {
    seen: HashMap<String, u64>,
}

impl OccurrenceCounter {
    /// Returns the checkpoint name for the next occurrence of `base`.
    pub fn next(&mut self, base: &str) -> String {
        let count = self.seen.entry(base.to_owned()).or_insert(0);
        *count += 1;
        if *count == 1 {
            base.to_owned()
        } else {
            format!("{base}#{count}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_json_sorts_keys_by_bytes_at_every_depth() {
        // Upper case sorts before lower case in byte order; "é" (0xC3 0xA9) after ASCII.
        let value = json!({"é": 1, "b": {"z": 1, "Z": 2}, "a": [{"y": 1, "x": 2}], "B": "s"});
        assert_eq!(
            canonical_json(&value),
            r#"{"B":"s","a":[{"x":2,"y":1}],"b":{"Z":2,"z":1},"é":1}"#
        );
    }

    #[test]
    fn canonical_json_escapes_strings_like_serde_json() {
        let value = json!({"k\"ey": "line\nbreak \u{1F600}"});
        assert_eq!(
            canonical_json(&value),
            serde_json::to_string(&value).unwrap_or_default()
        );
    }

    #[test]
    fn signature_hash_is_24_lowercase_hex_of_blake3_prefix() {
        let signature = StepSignature::from_document(&json!({"b": 2, "a": 1}));
        assert_eq!(signature.json, r#"{"a":1,"b":2}"#);
        assert_eq!(signature.hash.len(), 24);
        assert!(signature
            .hash
            .chars()
            .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c)));
        let full = blake3::hash(br#"{"a":1,"b":2}"#).to_hex().to_string();
        assert_eq!(signature.hash, full[..24]);
    }

    #[test]
    fn agent_signature_vector() {
        let signature = StepSignature::agent("root", "debug", "hello", &Value::Null, None, None);
        assert_eq!(
            signature.json,
            r#"{"context":{"cwd":null,"phase":null},"kind":"agent","options":null,"prompt":"hello","provider":"debug","signatureVersion":2,"workflowScope":"root"}"#
        );
        // Fixed vector (computed independently with the Python blake3 package): changing the
        // canonical form or the hash breaks every stored database.
        assert_eq!(signature.hash, "bafe710d765eb4c88e76babf");
        assert_eq!(
            signature.base_checkpoint(),
            format!("step:sig_{}", signature.hash)
        );
    }

    #[test]
    fn agent_signature_with_options_phase_and_cwd() {
        let signature = StepSignature::agent(
            "root",
            "debug",
            "hi",
            &json!({"model": "m", "retry": {"maxAttempts": 2, "backoffMs": 0}}),
            Some("plan"),
            Some("/work"),
        );
        assert_eq!(
            signature.json,
            r#"{"context":{"cwd":"/work","phase":"plan"},"kind":"agent","options":{"model":"m","retry":{"backoffMs":0,"maxAttempts":2}},"prompt":"hi","provider":"debug","signatureVersion":2,"workflowScope":"root"}"#
        );
    }

    #[test]
    fn direct_agent_signature_equals_the_canonical_document() {
        let cases = [
            ("root", "debug", "hello", Value::Null, None, None),
            (
                "child:step:sig_x",
                "p\"q",
                "é \u{1F600}\n\ttab",
                json!({"z": [1, {"b": 2, "a": 1}], "A": null}),
                Some("plan ✓"),
                Some("/w/\\x"),
            ),
            ("root", "", "", json!({}), Some(""), Some("")),
        ];
        for (scope, provider, prompt, options, phase, cwd) in cases {
            let direct = StepSignature::agent(scope, provider, prompt, &options, phase, cwd);
            let document = StepSignature::from_document(&json!({
                "signatureVersion": 2,
                "kind": "agent",
                "workflowScope": scope,
                "provider": provider,
                "prompt": prompt,
                "options": options,
                "context": { "phase": phase, "cwd": cwd },
            }));
            assert_eq!(direct, document);
        }
    }

    #[test]
    fn sleep_and_workflow_signature_vectors() {
        assert_eq!(
            StepSignature::sleep("root", 5).json,
            r#"{"durationMs":5,"kind":"sleep","signatureVersion":1,"workflowScope":"root"}"#
        );
        let child = StepSignature::workflow(
            "root",
            &json!({"scriptPath": "./child.mjs"}),
            &json!({"n": 1}),
        );
        assert_eq!(
            child.json,
            r#"{"args":{"n":1},"kind":"workflow","ref":{"scriptPath":"./child.mjs"},"signatureVersion":1,"workflowScope":"root"}"#
        );
    }

    #[test]
    fn keyed_agent_signature_vector() {
        assert_eq!(
            StepSignature::keyed_agent("root", "review:tea").json,
            r#"{"key":"review:tea","kind":"agent","signatureVersion":3,"workflowScope":"root"}"#
        );
    }

    #[test]
    fn scope_changes_identity() {
        let root = StepSignature::sleep("root", 5);
        let child = StepSignature::sleep(&child_workflow_scope(&root.base_checkpoint()), 5);
        assert_ne!(root.hash, child.hash);
    }

    #[test]
    fn occurrences_get_numeric_suffixes_from_the_second_on() {
        let mut counter = OccurrenceCounter::default();
        assert_eq!(counter.next("step:sig_a"), "step:sig_a");
        assert_eq!(counter.next("step:sig_b"), "step:sig_b");
        assert_eq!(counter.next("step:sig_a"), "step:sig_a#2");
        assert_eq!(counter.next("step:sig_a"), "step:sig_a#3");
        assert_eq!(counter.next("step:sig_b"), "step:sig_b#2");
    }
}
