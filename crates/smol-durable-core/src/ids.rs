//! Identifiers: `<kind>_<lowercase ULID>` as SPEC §2 requires.

use std::sync::Mutex;

/// One generator per process: ids made in the same millisecond still increase, so rows
/// ordered by creation time and then id (steps, for `history`'s numbers and a fork's point)
/// keep the order this process created them in.
static GENERATOR: Mutex<ulid::Generator> = Mutex::new(ulid::Generator::new());

/// Creates a fresh identifier such as `run_01jd3…` for the given kind prefix. Within a
/// process, each id is greater than the one before.
///
/// ```
/// let id = smol_durable_core::new_id("run");
/// assert!(id.starts_with("run_"));
/// assert_eq!(id.len(), "run_".len() + 26);
/// assert_eq!(id, id.to_lowercase());
/// let (a, b) = (smol_durable_core::new_id("step"), smol_durable_core::new_id("step"));
/// assert!(a < b);
/// ```
pub fn new_id(kind: &str) -> String {
    let generated = match GENERATOR.lock() {
        Ok(mut generator) => generator.generate().ok(),
        Err(poisoned) => poisoned.into_inner().generate().ok(),
    };
    // The random part overflowing within one millisecond (2^80 ids) falls back to a random id.
    let id = generated.unwrap_or_else(ulid::Ulid::new);
    format!("{kind}_{}", id.to_string().to_lowercase())
}
