//! Which database a command uses, and how it is opened: commands that only read never create or
//! migrate a database; the first command that upgrades a smol-wf 0.3.4 database keeps a copy
//! smol-wf can still open.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context};
use smol_durable_core::{DurableStore, StoreErrorKind};
use smol_durable_postgres::PostgresStore;
use smol_durable_sqlite::SqliteStore;

use crate::output::errln;

/// What a command does with its database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Runs, submits, cancels, deletes: the database is created (with its directory) and
    /// migrated as needed.
    Write,
    /// Lists and shows: the database must exist and is left as it is. The name is the
    /// command's, for the "was not found" message (`history database … was not found`).
    Read(&'static str),
    /// Writes to runs that must exist (`signal`): the database must exist (a mistyped `--db`
    /// creates nothing), and is migrated as needed.
    Existing(&'static str),
}

/// The database `--db` (or `SMOL_DURABLE_DB`) names, else the default file.
#[derive(Debug, Clone)]
pub enum Database {
    /// A `postgres://` URL.
    Postgres(String),
    /// A SQLite file, and whether it is the default one.
    Sqlite { path: PathBuf, default: bool },
}

impl Database {
    /// From `--db`, else `$XDG_STATE_HOME/smol-durable/smol-durable.db`.
    pub fn choose(db: Option<&str>) -> anyhow::Result<Self> {
        Ok(match db {
            Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                Self::Postgres(url.to_owned())
            }
            Some(path) => Self::Sqlite {
                path: PathBuf::from(path),
                default: false,
            },
            None => Self::Sqlite {
                path: state_dir()?.join("smol-durable").join("smol-durable.db"),
                default: true,
            },
        })
    }

    /// The `--db` value that names this database again (for commands printed to be pasted).
    pub fn as_flag(&self) -> String {
        match self {
            Self::Postgres(url) => url.clone(),
            Self::Sqlite { path, .. } => path.display().to_string(),
        }
    }

    /// [`as_flag`](Self::as_flag) without a PostgreSQL password: for pages others may see (the
    /// command then takes the password from `PGPASSWORD` or `~/.pgpass`).
    pub fn as_shown_flag(&self) -> String {
        match self {
            Self::Postgres(url) => smol_durable_postgres::redact_password(url),
            Self::Sqlite { .. } => self.as_flag(),
        }
    }

    /// Opens the store as `access` allows.
    pub async fn open(&self, access: Access) -> anyhow::Result<Arc<dyn DurableStore>> {
        match (self, access) {
            (Self::Postgres(url), _) => Ok(Arc::new(PostgresStore::connect(url).await?)),
            (Self::Sqlite { path, default }, Access::Read(command)) => {
                open_existing(path, *default, command).await
            }
            (Self::Sqlite { path, default }, Access::Existing(command)) => {
                if !path.exists() {
                    // The read-only open says why, naming smol-wf's database when it is there.
                    open_existing(path, *default, command).await?;
                }
                open_for_writing(path).await
            }
            (Self::Sqlite { path, default }, Access::Write) => {
                if *default && !path.exists() {
                    if let Some(theirs) = smol_wf_default().filter(|theirs| theirs.is_file()) {
                        errln!(
                            "note: creating {}; runs of smol-wf are in {} (pass --db {} to see or resume them)",
                            path.display(),
                            theirs.display(),
                            theirs.display()
                        );
                    }
                }
                open_for_writing(path).await
            }
        }
    }
}

async fn open_existing(
    path: &Path,
    default: bool,
    command: &str,
) -> anyhow::Result<Arc<dyn DurableStore>> {
    match SqliteStore::open_read_only(path).await {
        Ok(store) => Ok(Arc::new(store)),
        Err(error) if error.kind() == StoreErrorKind::NotFound => {
            let smol_wf = smol_wf_default().filter(|theirs| default && theirs.is_file());
            match smol_wf {
                Some(theirs) => bail!(
                    "{command} database {} was not found; smol-wf's database is at {}: pass --db {}",
                    path.display(),
                    theirs.display(),
                    theirs.display()
                ),
                None => bail!(
                    "{command} database {} was not found; pass --db or run a workflow first",
                    path.display()
                ),
            }
        }
        Err(error) => {
            Err(anyhow::Error::new(error)
                .context(format!("cannot open database {}", path.display())))
        }
    }
}

async fn open_for_writing(path: &Path) -> anyhow::Result<Arc<dyn DurableStore>> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        // Directories made here are private like the database itself.
        let mut directories = std::fs::DirBuilder::new();
        directories.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut directories, 0o700);
        directories
            .create(parent)
            .with_context(|| format!("cannot create the directory of --db {}", path.display()))?;
    }
    let store = SqliteStore::open(path)
        .await
        .with_context(|| format!("cannot open database {}", path.display()))?;
    if let Some(backup) = store.smol_wf_backup() {
        errln!(
            "note: {} was written by smol-wf 0.3.4 and is now upgraded for smol-durable (smol-wf \
             cannot open it any more); the original was saved as {}",
            path.display(),
            backup.display()
        );
    }
    Ok(Arc::new(store))
}

/// `$XDG_STATE_HOME`, else `~/.local/state`.
fn state_dir() -> anyhow::Result<PathBuf> {
    match std::env::var_os("XDG_STATE_HOME").filter(|v| !v.is_empty()) {
        Some(dir) => Ok(PathBuf::from(dir)),
        None => match std::env::var_os("HOME").filter(|v| !v.is_empty()) {
            Some(home) => Ok(PathBuf::from(home).join(".local/state")),
            None => bail!("neither XDG_STATE_HOME nor HOME is set; pass --db"),
        },
    }
}

/// Where smol-wf 0.3.4 keeps its database by default on this platform.
fn smol_wf_default() -> Option<PathBuf> {
    let dir = if cfg!(target_os = "macos") {
        PathBuf::from(std::env::var_os("HOME")?).join("Library/Application Support")
    } else if cfg!(windows) {
        PathBuf::from(std::env::var_os("APPDATA")?)
    } else {
        state_dir().ok()?
    };
    Some(dir.join("smol-workflows").join("workflows.db"))
}
