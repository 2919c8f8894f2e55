//! The child process of `IsolatedEngine`: evaluates one workflow under resource limits,
//! speaking the engine's protocol over stdin and stdout.

fn main() -> std::process::ExitCode {
    smol_durable_boa::serve_script_host()
}
