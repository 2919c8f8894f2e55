//! `--args-<name>` parsing takes whatever a user types: any argv must split into clap's part
//! and workflow arguments, or give a clear error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

// The CLI's parser on its own (the CLI crate is a binary with a large dependency tree).
#[allow(dead_code)] // the file reader is not fuzzed here
#[path = "../../crates/smol-durable-cli/src/workflow_args.rs"]
mod workflow_args;

fuzz_target!(|argv: Vec<String>| {
    let mut full = vec!["smol-durable".to_owned(), "run".to_owned()];
    full.extend(argv);
    if let Ok((rest, args)) = workflow_args::split(full) {
        assert!(
            args.names().all(|name| !name.is_empty()),
            "an empty argument name"
        );
        // Everything after `--` is positional and passes through untouched.
        let options = rest.iter().take_while(|arg| arg.as_str() != "--");
        let leftover: Vec<&String> = options
            .filter(|arg| arg.starts_with("--args-") && !arg.starts_with("--args-from-file"))
            .collect();
        assert!(
            leftover.is_empty(),
            "--args- options left for clap: {leftover:?}"
        );
    }
});
