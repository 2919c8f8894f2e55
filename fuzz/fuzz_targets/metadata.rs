//! `export const meta = {…}` is read by a literal parser from untrusted script text: any text
//! must give metadata or a clear error, never a panic or a hang.
#![no_main]

use libfuzzer_sys::fuzz_target;

// The parser itself, without the JavaScript engine around it (whose build would dominate the
// fuzz build's time): it depends only on serde_json and smol-durable.
#[path = "../../crates/smol-durable-boa/src/meta.rs"]
mod meta;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(meta) = meta::read_meta(text) {
        assert!(
            !meta.name.is_empty(),
            "metadata without a name was accepted"
        );
    }
    let _ = meta::meta_value(text);
});
