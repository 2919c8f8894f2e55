//! The budget ledger, read.

use super::*;

/// What the run spent: every row but the copies a fork brought
/// ([`LedgerSource::is_spent`]).
pub(crate) fn budget_spent(c: &Connection, root_run_id: &str) -> Result<u64> {
    let spent: i64 = c
        .prepare_cached(
            "SELECT COALESCE(SUM(output_tokens), 0) FROM sw_budget_ledger \
             WHERE root_run_id = ?1 AND source_type <> ?2",
        )
        .and_then(|mut s| s.query_row([root_run_id, LedgerSource::COPIED_STEP], |row| row.get(0)))
        .map_err(|e| map_error("budget_spent", e))?;
    Ok(u64::try_from(spent).unwrap_or(0))
}

pub(crate) fn ledger_entries(c: &Connection, root_run_id: &str) -> Result<Vec<LedgerEntry>> {
    let sql = format!("SELECT {LEDGER_COLUMNS} FROM sw_budget_ledger WHERE root_run_id = ?1 ORDER BY created_at, budget_entry_id");
    all(c, "ledger_entries", &sql, [root_run_id], rows::ledger)
}
