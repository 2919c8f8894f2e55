//! A step row as the database may hold it after corruption or a hand edit: decoding must give
//! a record or a `Corrupt` error, and the decisions on a decoded row must not panic.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use smol_durable_core::decide::{decide_step, resolve_fence_conflict};
use smol_durable_sqlite::fuzzing::{decode_step, Column};

#[derive(Debug, Arbitrary)]
enum FuzzColumn {
    Null,
    Integer(i64),
    Real(f64),
    Text(String),
    Blob(Vec<u8>),
}

fuzz_target!(|columns: Vec<FuzzColumn>| {
    let columns: Vec<Column> = columns
        .into_iter()
        .map(|column| match column {
            FuzzColumn::Null => Column::Null,
            FuzzColumn::Integer(value) => Column::Integer(value),
            FuzzColumn::Real(value) => Column::Real(value),
            FuzzColumn::Text(value) => Column::Text(value),
            FuzzColumn::Blob(value) => Column::Blob(value),
        })
        .collect();
    let Ok(row) = decode_step(&columns) else {
        return;
    };
    let signature = row.input_signature_json.clone();
    let _ = decide_step(Some(&row), &row.kind, &signature, row.updated_at);
    let _ = decide_step(
        Some(&row),
        &smol_durable_core::store::StepKind::Sleep,
        &signature,
        row.updated_at,
    );
    let _ = resolve_fence_conflict(Some(&row));
});
