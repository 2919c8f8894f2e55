//! Tests that need a server or a program the machine may lack are built `#[ignore]`d when it is
//! not named: they show up as ignored, never as passed. In CI (`CI` set) they are built to
//! run, and fail without it. PostgreSQL: `SMOL_DURABLE_TEST_POSTGRES_URL`; the browser tests:
//! `SMOL_DURABLE_TEST_CHROMEDRIVER` (scripts/test installs Chromium and its driver and sets it).
fn main() {
    println!("cargo::rerun-if-env-changed=SMOL_DURABLE_TEST_POSTGRES_URL");
    println!("cargo::rerun-if-env-changed=SMOL_DURABLE_TEST_CHROMEDRIVER");
    println!("cargo::rerun-if-env-changed=CI");
    let named = |name: &str| std::env::var(name).is_ok_and(|value| !value.trim().is_empty());
    let ci = std::env::var("CI").is_ok_and(|ci| !matches!(ci.trim(), "" | "0" | "false"));
    if !named("SMOL_DURABLE_TEST_POSTGRES_URL") && !ci {
        println!("cargo::rustc-cfg=smol_durable_no_postgres");
    }
    if !named("SMOL_DURABLE_TEST_CHROMEDRIVER") && !ci {
        println!("cargo::rustc-cfg=smol_durable_no_browser");
    }
}
