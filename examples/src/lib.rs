//! Examples live in this package's `[[example]]` targets.
#![deny(missing_docs)]
