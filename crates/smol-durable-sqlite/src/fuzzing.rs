//! Entry points for the fuzz targets (`fuzz/`); not part of the supported API.

use rusqlite::types::Value as SqlValue;
use smol_durable_core::store::StepRecord;
use smol_durable_core::StoreError;

/// One column value of any SQLite storage class.
#[derive(Debug, Clone, PartialEq)]
pub enum Column {
    /// `NULL`.
    Null,
    /// `INTEGER`.
    Integer(i64),
    /// `REAL`.
    Real(f64),
    /// `TEXT`.
    Text(String),
    /// `BLOB`.
    Blob(Vec<u8>),
}

/// Decodes a step row whose columns (in the order the store selects them) hold `columns`,
/// exactly as the store decodes rows it reads: a malformed row must be an error, never a panic.
pub fn decode_step(columns: &[Column]) -> Result<StepRecord, StoreError> {
    let names: Vec<&str> = crate::rows::STEP_COLUMNS
        .split(',')
        .map(str::trim)
        .collect();
    let select = names
        .iter()
        .enumerate()
        .map(|(index, name)| format!("?{} AS {name}", index + 1))
        .collect::<Vec<_>>()
        .join(", ");
    let values: Vec<SqlValue> = (0..names.len())
        .map(
            |index| match columns.get(index).cloned().unwrap_or(Column::Null) {
                Column::Null => SqlValue::Null,
                Column::Integer(value) => SqlValue::Integer(value),
                Column::Real(value) => SqlValue::Real(value),
                Column::Text(value) => SqlValue::Text(value),
                Column::Blob(value) => SqlValue::Blob(value),
            },
        )
        .collect();
    let fail = |error: rusqlite::Error| {
        StoreError::new(
            smol_durable_core::StoreErrorKind::Other,
            "fuzz",
            error.to_string(),
        )
    };
    let connection = rusqlite::Connection::open_in_memory().map_err(fail)?;
    let mut statement = connection
        .prepare(&format!("SELECT {select}"))
        .map_err(fail)?;
    let mut rows = statement
        .query(rusqlite::params_from_iter(values))
        .map_err(fail)?;
    let row = rows.next().map_err(fail)?.ok_or_else(|| {
        StoreError::new(smol_durable_core::StoreErrorKind::Other, "fuzz", "no row")
    })?;
    crate::rows::step(row)
}
