//! Opening and configuring connections, and mapping driver errors to store errors.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, ErrorCode, OpenFlags};
use smol_durable_core::{StoreError, StoreErrorKind};

/// Another connection holds a lock SQLite would not wait for (or waited for too long).
fn is_busy(error: &rusqlite::Error) -> bool {
    matches!(
        error.sqlite_error_code(),
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
    )
}

/// Maps a driver error raised by `operation` to a [`StoreError`] with the right kind.
pub(crate) fn map_error(operation: &'static str, error: rusqlite::Error) -> StoreError {
    if is_busy(&error) {
        let message = format!("the database is locked by another connection or process past the busy timeout ({error}); retry later");
        return StoreError::new(StoreErrorKind::Unavailable, operation, message).with_source(error);
    }
    let kind = match error.sqlite_error_code() {
        Some(ErrorCode::ConstraintViolation) => StoreErrorKind::Conflict,
        Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase) => StoreErrorKind::Corrupt,
        Some(
            ErrorCode::CannotOpen
            | ErrorCode::ReadOnly
            | ErrorCode::DiskFull
            | ErrorCode::SystemIoFailure
            | ErrorCode::PermissionDenied,
        ) => StoreErrorKind::Unavailable,
        _ => StoreErrorKind::Other,
    };
    let message = error.to_string();
    StoreError::new(kind, operation, message).with_source(error)
}

/// Switches the file to WAL journaling. SQLite answers a journal-mode change that races with
/// another process creating or converting the same file with `SQLITE_BUSY` at once, without
/// consulting the busy handler, so this waits out the race itself (up to `busy_timeout`).
fn wal_mode(connection: &Connection, busy_timeout: Duration) -> Result<String, StoreError> {
    let started = std::time::Instant::now();
    loop {
        match connection.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0)) {
            Ok(mode) => return Ok(mode),
            Err(error) if is_busy(&error) && started.elapsed() < busy_timeout => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(error) => return Err(map_error("open", error)),
        }
    }
}

/// Opens a read-write connection with the pragmas every connection of the store uses,
/// creating the database if it does not exist.
pub(crate) fn open(path: &Path, busy_timeout: Duration) -> Result<Connection, StoreError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX
        | OpenFlags::SQLITE_OPEN_URI;
    configure(path, open_with(path, flags, busy_timeout)?, busy_timeout)
}

/// [`open`] for a database that must exist already: a file removed meanwhile is an error, not
/// a new empty database.
pub(crate) fn open_existing(path: &Path, busy_timeout: Duration) -> Result<Connection, StoreError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX
        | OpenFlags::SQLITE_OPEN_URI;
    configure(path, open_with(path, flags, busy_timeout)?, busy_timeout)
}

fn configure(
    path: &Path,
    connection: Connection,
    busy_timeout: Duration,
) -> Result<Connection, StoreError> {
    // Every statement the store runs stays prepared.
    connection.set_prepared_statement_cache_capacity(64);
    connection
        .pragma_update(None, "foreign_keys", "ON")
        .map_err(|e| map_error("open", e))?;
    let mode = wal_mode(&connection, busy_timeout)?;
    // A larger WAL between checkpoints writes hot pages (index leaves) to the database once
    // per checkpoint instead of once per thousand pages.
    connection
        .pragma_update(None, "wal_autocheckpoint", 10_000)
        .map_err(|e| map_error("open", e))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::new(
            StoreErrorKind::Unsupported,
            "open",
            format!("{} cannot use WAL journaling (got {mode})", path.display()),
        ));
    }
    Ok(connection)
}

/// Opens a connection that can only read (used to look at a database before deciding how to
/// open it, and to copy it).
pub(crate) fn open_read_only(
    path: &Path,
    busy_timeout: Duration,
) -> Result<Connection, StoreError> {
    open_with(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        busy_timeout,
    )
}

fn open_with(
    path: &Path,
    flags: OpenFlags,
    busy_timeout: Duration,
) -> Result<Connection, StoreError> {
    let connection = Connection::open_with_flags(path, flags).map_err(|error| {
        StoreError::new(
            StoreErrorKind::Unavailable,
            "open",
            format!("cannot open SQLite database {}: {error}", path.display()),
        )
        .with_source(error)
    })?;
    connection
        .busy_timeout(busy_timeout)
        .map_err(|e| map_error("open", e))?;
    Ok(connection)
}
