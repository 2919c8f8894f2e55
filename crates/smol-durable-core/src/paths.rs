//! Where workflow files are found. Child workflows and imports resolve relative to the calling
//! script and must not leave the root workflow's directory, through `..` or through symlinks;
//! named workflows (`workflow("name")`) live in the project's `.agents/workflows` and
//! `.claude/workflows` directories.

use std::path::{Component, Path, PathBuf};

/// Lexical normalisation (no file system access): drops `.`, folds `..`.
///
/// ```
/// use std::path::{Path, PathBuf};
/// assert_eq!(smol_durable_core::paths::normalize(Path::new("a/./b/../c.mjs")), PathBuf::from("a/c.mjs"));
/// ```
pub fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    out.push("..");
                }
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

/// Why a path was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfineError {
    /// The file or the directory cannot be opened.
    #[error("cannot open {path}: {reason}")]
    Unreadable {
        /// What was opened.
        path: String,
        /// The operating system's reason.
        reason: String,
    },
    /// The path leads outside the directory (possibly through a symlink).
    #[error("{path} resolves outside the workflow's directory")]
    Outside {
        /// The path asked for.
        path: String,
    },
}

/// The real path of `path`, provided it lies inside `root` once every symlink is resolved. An
/// empty `root` means the current directory.
pub fn confined(root: &Path, path: &Path) -> Result<PathBuf, ConfineError> {
    let unreadable = |what: &Path, error: std::io::Error| ConfineError::Unreadable {
        path: what.display().to_string(),
        reason: error.to_string(),
    };
    let root = if root.as_os_str().is_empty() {
        Path::new(".")
    } else {
        root
    };
    let real_root = std::fs::canonicalize(root).map_err(|e| unreadable(root, e))?;
    let real = std::fs::canonicalize(path).map_err(|e| unreadable(path, e))?;
    if real.starts_with(&real_root) {
        Ok(real)
    } else {
        Err(ConfineError::Outside {
            path: path.display().to_string(),
        })
    }
}

/// The directories `workflow("name")` searches, nearest first: `.agents/workflows` then
/// `.claude/workflows` in the calling workflow's directory and each directory above it, up to
/// and including the repository root (the first directory holding `.git`), or up to the file
/// system's root outside a repository. The process's working directory plays no part.
///
/// ```
/// use std::path::{Path, PathBuf};
/// let dirs = smol_durable_core::paths::named_workflow_dirs(Path::new("/no/such/repo"));
/// assert_eq!(dirs[0], PathBuf::from("/no/such/repo/.agents/workflows"));
/// assert_eq!(dirs[1], PathBuf::from("/no/such/repo/.claude/workflows"));
/// assert_eq!(dirs.last(), Some(&PathBuf::from("/.claude/workflows")));
/// ```
pub fn named_workflow_dirs(start: &Path) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    for dir in start.ancestors() {
        dirs.push(dir.join(".agents").join("workflows"));
        dirs.push(dir.join(".claude").join("workflows"));
        if dir.join(".git").exists() {
            break;
        }
    }
    dirs
}

/// The workflow named `name` in `dirs` (see [`named_workflow_dirs`]): in the first directory
/// that has one, `<name>.mjs`, else `<name>.js`, else a `.mjs`/`.js` file whose `meta.name` is
/// `name` (as `meta_name` reads it; smol-wf matched names that way).
pub fn find_named_workflow(
    dirs: &[PathBuf],
    name: &str,
    meta_name: impl Fn(&Path) -> Option<String>,
) -> Option<PathBuf> {
    let is_script = |path: &Path| {
        path.is_file()
            && path
                .extension()
                .is_some_and(|ext| ext == "mjs" || ext == "js")
    };
    // A name is a file name, never a path.
    let plain = !name.is_empty() && !name.contains(['/', '\\']) && name != "." && name != "..";
    for dir in dirs {
        if plain {
            for ext in ["mjs", "js"] {
                let candidate = dir.join(format!("{name}.{ext}"));
                if is_script(&candidate) {
                    return Some(candidate);
                }
            }
        }
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        let mut scripts: Vec<PathBuf> = entries
            .filter_map(|entry| entry.ok().map(|entry| entry.path()))
            .filter(|path| is_script(path))
            .collect();
        scripts.sort();
        if let Some(found) = scripts
            .into_iter()
            .find(|path| meta_name(path).as_deref() == Some(name))
        {
            return Some(found);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_folds_dots() {
        assert_eq!(
            normalize(Path::new("a/./b/../c.mjs")),
            PathBuf::from("a/c.mjs")
        );
        assert_eq!(normalize(Path::new("a/../../x")), PathBuf::from("../x"));
        assert_eq!(
            normalize(Path::new("/w/flows/../etc")),
            PathBuf::from("/w/etc")
        );
    }

    #[test]
    fn symlinks_out_of_the_root_are_refused() {
        let dir = std::env::temp_dir().join(crate::new_id("confine"));
        let root = dir.join("flows");
        std::fs::create_dir_all(&root).expect("mkdir");
        std::fs::write(dir.join("secret.mjs"), "x").expect("write");
        std::fs::write(root.join("ok.mjs"), "x").expect("write");
        std::os::unix::fs::symlink(dir.join("secret.mjs"), root.join("link.mjs")).expect("symlink");
        assert!(confined(&root, &root.join("ok.mjs")).is_ok());
        assert!(matches!(
            confined(&root, &root.join("link.mjs")),
            Err(ConfineError::Outside { .. })
        ));
        assert!(matches!(
            confined(&root, &root.join("none.mjs")),
            Err(ConfineError::Unreadable { .. })
        ));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
