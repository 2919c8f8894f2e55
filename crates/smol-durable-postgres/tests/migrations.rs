//! Migrations: safe when many processes start at once, and a newer schema is refused untouched.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)] // test code asserts

use smol_durable_postgres::{PostgresOptions, PostgresStore, SCHEMA_VERSION};
use smol_durable_testkit::postgres_test_url;

fn fresh_schema() -> String {
    format!("t_{}", ulid::Ulid::new().to_string().to_lowercase())
}

#[cfg_attr(
    smol_durable_no_postgres,
    ignore = "no PostgreSQL test server named: run scripts/test (it sets SMOL_DURABLE_TEST_POSTGRES_URL)"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_stores_starting_at_once_migrate_once() {
    let url = postgres_test_url("migrations");
    let schema = fresh_schema();
    let opening = (0..8).map(|_| {
        PostgresStore::connect_with(
            PostgresOptions::new(&url)
                .schema(schema.as_str())
                .max_connections(2),
        )
    });
    let stores: Vec<PostgresStore> = futures::future::try_join_all(opening)
        .await
        .expect("every store opens");
    let applied: Vec<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT id FROM {schema}.sw_migrations ORDER BY id"
    )))
    .fetch_all(stores[0].pool())
    .await
    .expect("migrations");
    assert_eq!(applied, (1..=SCHEMA_VERSION).collect::<Vec<_>>());
}

#[cfg_attr(
    smol_durable_no_postgres,
    ignore = "no PostgreSQL test server named: run scripts/test (it sets SMOL_DURABLE_TEST_POSTGRES_URL)"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_schema_is_refused_and_left_alone() {
    let url = postgres_test_url("migrations");
    let schema = fresh_schema();
    let options = PostgresOptions::new(&url).schema(schema.as_str());
    let store = PostgresStore::connect_with(options.clone())
        .await
        .expect("open");
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO {schema}.sw_migrations (id, introduced_version, applied_time) \
         VALUES (99, 'from the future', 0)"
    )))
    .execute(store.pool())
    .await
    .expect("a newer migration");
    let tables = || {
        sqlx::query_scalar::<_, i64>(
            "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = $1",
        )
        .bind(schema.clone())
        .fetch_one(store.pool())
    };
    let before = tables().await.expect("count");
    let error = PostgresStore::connect_with(options)
        .await
        .expect_err("refused");
    assert!(
        error.to_string().contains(&format!(
            "schema {schema} has schema migration 99, newer than this smol-durable knows"
        )),
        "{error}"
    );
    assert_eq!(
        tables().await.expect("count"),
        before,
        "nothing was changed"
    );
}
