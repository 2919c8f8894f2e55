//! Canonical JSON and step signatures decide step identity: for any JSON value the canonical
//! form must parse back to the same value, be a fixed point, and give the same signature
//! whatever the key order of the input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use smol_durable_core::{canonical_json, StepSignature};

fuzz_target!(|data: &[u8]| {
    let Ok(value) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let canonical = canonical_json(&value);
    let reparsed: Value = serde_json::from_str(&canonical).expect("canonical JSON parses");
    assert_eq!(reparsed, value, "canonical JSON changed the value");
    assert_eq!(
        canonical_json(&reparsed),
        canonical,
        "canonical JSON is not a fixed point"
    );

    let prompt = String::from_utf8_lossy(data);
    let signature = StepSignature::agent("root", "debug", &prompt, &value, Some("φ"), None);
    let document: Value = serde_json::from_str(&signature.json).expect("signature JSON parses");
    assert_eq!(
        canonical_json(&document),
        signature.json,
        "signature is not canonical"
    );
    let again = StepSignature::agent("root", "debug", &prompt, &reparsed, Some("φ"), None);
    assert_eq!(again, signature, "the same call got another signature");
    let _ = StepSignature::workflow("root", &value, &value);
});
