//! `smol-durable-boa` runs the example workflows in its tests from a copy of its own
//! (`crates/smol-durable-boa/tests/example_workflows/`), so its published package tests itself
//! without this repository. The copy must stay identical to `examples/workflows/`.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)] // test code asserts

use std::collections::BTreeMap;
use std::path::Path;

fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| {
            let path = entry.expect("entry").path();
            let name = path
                .file_name()
                .expect("name")
                .to_string_lossy()
                .into_owned();
            (name, std::fs::read(&path).expect("read"))
        })
        .collect()
}

#[test]
fn the_boa_crate_has_an_identical_copy_of_the_example_workflows() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let examples = files(&root.join("workflows"));
    let copy = files(&root.join("../crates/smol-durable-boa/tests/example_workflows"));
    let names = |files: &BTreeMap<String, Vec<u8>>| files.keys().cloned().collect::<Vec<_>>();
    assert_eq!(
        names(&examples),
        names(&copy),
        "the same files in examples/workflows/ and crates/smol-durable-boa/tests/example_workflows/"
    );
    for (name, text) in &examples {
        assert!(
            copy[name] == *text,
            "crates/smol-durable-boa/tests/example_workflows/{name} differs from \
             examples/workflows/{name}: copy it over (cp examples/workflows/*.mjs \
             crates/smol-durable-boa/tests/example_workflows/)"
        );
    }
}
