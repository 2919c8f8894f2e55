//! Where the tests find PostgreSQL, and what happens when they cannot.

/// The variable `scripts/test` sets to the URL of the throwaway cluster it started.
pub const POSTGRES_URL_VAR: &str = "SMOL_DURABLE_TEST_POSTGRES_URL";

/// The test server's URL from [`POSTGRES_URL_VAR`].
///
/// PostgreSQL tests are built `#[ignore]`d when the variable is unset at build time (the build
/// scripts of the crates that have them set `cfg(smol_durable_no_postgres)`), so without a
/// server they show up as *ignored*, never as passed. A test that runs anyway — built with a
/// server, run without one, or in CI (`CI` set) — fails here, loudly.
///
/// # Panics
/// When the variable is not set.
#[allow(clippy::panic)] // failing loudly is the point
pub fn postgres_test_url(test: &str) -> String {
    match std::env::var(POSTGRES_URL_VAR) {
        Ok(url) if !url.trim().is_empty() => url,
        _ => panic!(
            "{test}: {POSTGRES_URL_VAR} is not set; run scripts/test, which starts a throwaway \
             PostgreSQL server and sets it (without it, these tests are built ignored)"
        ),
    }
}
