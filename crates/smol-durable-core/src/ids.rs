//! Identifiers: `<kind>_<lowercase ULID>` as SPEC §2 requires.

/// Creates a fresh identifier such as `run_01jd3…` for the given kind prefix.
///
/// ```
/// let id = smol_durable_core::new_id("run");
/// assert!(id.starts_with("run_"));
/// assert_eq!(id.len(), "run_".len() + 26);
/// assert_eq!(id, id.to_lowercase());
/// ```
pub fn new_id(kind: &str) -> String {
    format!("{kind}_{}", ulid::Ulid::new().to_string().to_lowercase())
}
