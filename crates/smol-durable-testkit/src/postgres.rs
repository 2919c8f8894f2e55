//! Where the tests find PostgreSQL, and what happens when they cannot.

/// The variable `scripts/test` sets to the URL of the throwaway cluster it started.
pub const POSTGRES_URL_VAR: &str = "SMOL_DURABLE_TEST_POSTGRES_URL";

/// The test server's URL from [`POSTGRES_URL_VAR`].
///
/// Without it, in CI (the `CI` variable is set) this **panics**, so a missing server fails the
/// build instead of passing silently; elsewhere it prints a loud notice to stderr and returns
/// `None`, and the caller skips (run `scripts/test` to start a server).
///
/// # Panics
/// In CI, when the variable is not set.
#[allow(clippy::panic)] // failing loudly is the point
pub fn postgres_test_url(test: &str) -> Option<String> {
    match std::env::var(POSTGRES_URL_VAR) {
        Ok(url) if !url.trim().is_empty() => Some(url),
        _ if std::env::var_os("CI").is_some() => panic!(
            "{test}: {POSTGRES_URL_VAR} is not set; CI must run PostgreSQL tests \
             (scripts/test starts a server)"
        ),
        _ => {
            // Straight to the process's stderr: the test harness would swallow `eprintln!`
            // of a passing test. Once per process is loud enough.
            static SAID: std::sync::Once = std::sync::Once::new();
            SAID.call_once(|| {
                use std::io::Write;
                let _ = writeln!(
                    std::io::stderr(),
                    "\n*** SKIPPED {test}: no PostgreSQL ({POSTGRES_URL_VAR} is not set). \
                     Run scripts/test to start a throwaway server and run these tests. ***\n"
                );
            });
            None
        }
    }
}
