//! The budget ledger, read.

use super::*;

/// What the run spent: every row but the copies a fork brought
/// ([`LedgerSource::is_spent`]).
pub(crate) async fn budget_spent(
    c: &mut PgConnection,
    sql: &Sql,
    root_run_id: &str,
) -> Result<u64> {
    let spent: i64 = scalar(
        c,
        "budget_spent",
        sql.query(
            "SELECT COALESCE(SUM(output_tokens), 0)::BIGINT FROM sw_budget_ledger \
             WHERE root_run_id = $1 AND source_type <> $2",
        )
        .bind(root_run_id)
        .bind(LedgerSource::COPIED_STEP),
    )
    .await?;
    Ok(u64::try_from(spent).unwrap_or(0))
}

pub(crate) async fn ledger_entries(
    c: &mut PgConnection,
    sql: &Sql,
    root_run_id: &str,
) -> Result<Vec<LedgerEntry>> {
    const Q: &str = concat!(
        "SELECT ",
        ledger_columns!(),
        " FROM sw_budget_ledger WHERE root_run_id = $1 ORDER BY created_at, budget_entry_id"
    );
    all(
        c,
        "ledger_entries",
        sql.query(Q).bind(root_run_id),
        rows::ledger,
    )
    .await
}
