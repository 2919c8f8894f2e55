//! `isolation: "worktree"`: an agent call that runs in a fresh git worktree of the workflow's
//! repository, on a branch of its own, so parallel agents edit separate checkouts.
//!
//! Each worktree is created **locked**, with the creating process in the lock's reason
//! (`smol-durable pid=N host=H`), so the leftovers of a process that was killed before it could
//! remove them are recognisable: [`remove_stale_worktrees`] removes worktrees and branches whose
//! process is gone, and runs before the first worktree of a process in a repository (and at the
//! start of the CLI's `run` and `worker`). A live process's worktrees are never touched.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Mutex;

use serde_json::{json, Value};

/// Branches of agent worktrees: `smol-durable/agent-run/<lowercase ulid>`.
pub const BRANCH_PREFIX: &str = "smol-durable/agent-run/";

/// Temporary directories holding agent worktrees start with this.
const DIR_PREFIX: &str = "smol-durable-agent-worktree-";

/// A branch left without a worktree is removed only when it is older than this: `git worktree
/// add -b` creates the branch a moment before the worktree.
const BRANCH_GRACE_MS: u64 = 60_000;

/// The error when the workflow's directory is not in a repository (smol-wf's message).
pub const NOT_A_REPOSITORY: &str =
    "agent isolation='worktree' requires the workflow cwd to be inside a git repository";

/// Worktree changes in one repository are serialised within a process: git takes locks of its
/// own (`index.lock`, `packed-refs.lock`) that two concurrent commands may trip over.
static GIT_TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Repositories this process already cleaned up (at its start, or before its first worktree
/// there).
static CLEANED: Mutex<Option<HashSet<PathBuf>>> = Mutex::new(None);

/// A worktree made for one agent call; removed by [`remove`](Self::remove), or when dropped.
#[derive(Debug)]
pub struct AgentWorktree {
    repository: PathBuf,
    holder: PathBuf,
    path: PathBuf,
    branch: String,
    cwd: PathBuf,
    removed: bool,
}

impl AgentWorktree {
    /// Makes a worktree of the repository holding `workflow_cwd`, at its `HEAD`, and the
    /// directory matching `workflow_cwd` inside it. The error is a message for the script.
    pub async fn create(workflow_cwd: &Path) -> Result<Self, String> {
        let repository = repository_root(workflow_cwd)
            .await
            .ok_or_else(|| NOT_A_REPOSITORY.to_owned())?;
        let prefix = git(workflow_cwd, &["rev-parse", "--show-prefix"])
            .await
            .unwrap_or_default();
        let cleaned = CLEANED.lock().is_ok_and(|cleaned| {
            cleaned
                .as_ref()
                .is_some_and(|done| done.contains(&repository))
        });
        if !cleaned {
            if let Err(error) = remove_stale_worktrees(&repository).await {
                tracing::warn!(%error, "could not remove stale agent worktrees");
            }
        }
        let reason = lock_reason();
        let (holder, path, branch, added) = {
            let _turn = GIT_TURN.lock().await;
            // Named once it is our turn: a branch's age (from its id) tells the cleanup of
            // other processes whether it can still be on its way to a worktree.
            let id = ulid::Ulid::new().to_string().to_lowercase();
            let holder = std::env::temp_dir().join(format!("{DIR_PREFIX}{id}"));
            std::fs::create_dir_all(&holder)
                .map_err(|error| format!("cannot create {}: {error}", holder.display()))?;
            let path = holder.join("worktree");
            let branch = format!("{BRANCH_PREFIX}{id}");
            let added = git_status(
                &repository,
                &[
                    "worktree",
                    "add",
                    "--quiet",
                    "--lock",
                    "--reason",
                    &reason,
                    "-b",
                    &branch,
                    &path.to_string_lossy(),
                    "HEAD",
                ],
            )
            .await;
            (holder, path, branch, added)
        };
        if let Err(error) = added {
            let _ = std::fs::remove_dir_all(&holder);
            if error.contains("invalid reference: HEAD") {
                return Err(format!(
                    "cannot create an agent worktree: the repository {} has no commit yet \
                     (a worktree starts from HEAD)",
                    repository.display()
                ));
            }
            return Err(format!("cannot create an agent worktree: {error}"));
        }
        let prefix = prefix.trim_end_matches('/');
        let worktree = Self {
            cwd: if prefix.is_empty() {
                path.clone()
            } else {
                path.join(prefix)
            },
            repository,
            holder,
            path,
            branch,
            removed: false,
        };
        // The workflow may run in a directory git does not track (empty, or ignored).
        if let Err(error) = std::fs::create_dir_all(&worktree.cwd) {
            worktree.remove().await;
            return Err(format!("cannot create the agent's directory: {error}"));
        }
        Ok(worktree)
    }

    /// Where the provider runs: the workflow's directory inside the worktree.
    pub fn cwd(&self) -> &Path {
        &self.cwd
    }

    /// What the step stores: `{kind, branch, worktreePath, cwd}`.
    pub fn metadata(&self) -> Value {
        json!({
            "kind": "worktree",
            "branch": self.branch,
            "worktreePath": self.path.to_string_lossy(),
            "cwd": self.cwd.to_string_lossy(),
        })
    }

    /// Removes the worktree, its branch and its directory.
    pub async fn remove(mut self) {
        self.removed = true;
        remove_ours(&self.repository, &self.path, &self.branch, &self.holder).await;
    }
}

/// Removes an agent worktree (locked: unlocked first), its branch and its directory; what
/// fails is logged (the next cleanup finds it again: its process will be gone).
async fn remove_ours(repository: &Path, path: &Path, branch: &str, holder: &Path) {
    let _turn = GIT_TURN.lock().await;
    if let Err(error) = remove_worktree(repository, path, branch).await {
        tracing::warn!(worktree = %path.display(), %error, "cannot remove an agent worktree");
    }
    let _ = std::fs::remove_dir_all(holder);
}

impl Drop for AgentWorktree {
    /// A call dropped mid-way (cancelled, timed out) still removes its worktree: on the
    /// runtime, in turn with the process's other git commands, when there is one.
    fn drop(&mut self) {
        if self.removed {
            return;
        }
        let (repository, path, branch, holder) = (
            self.repository.clone(),
            self.path.clone(),
            self.branch.clone(),
            self.holder.clone(),
        );
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime
                    .spawn(async move { remove_ours(&repository, &path, &branch, &holder).await });
            }
            Err(_) => {
                for args in [
                    vec![
                        "worktree".to_owned(),
                        "unlock".to_owned(),
                        path.to_string_lossy().into_owned(),
                    ],
                    vec![
                        "worktree".to_owned(),
                        "remove".to_owned(),
                        "--force".to_owned(),
                        path.to_string_lossy().into_owned(),
                    ],
                    vec!["branch".to_owned(), "-D".to_owned(), branch],
                ] {
                    let _ = std::process::Command::new("git")
                        .arg("-C")
                        .arg(&repository)
                        .args(&args)
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .status();
                }
                let _ = std::fs::remove_dir_all(&holder);
            }
        }
    }
}

/// What [`remove_stale_worktrees`] removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StaleWorktrees {
    /// Worktrees of processes that are gone (their paths).
    pub worktrees: Vec<String>,
    /// Branches removed (with those worktrees, or left without one).
    pub branches: Vec<String>,
}

/// Removes the agent worktrees and branches that processes on this host left behind when they
/// were killed, in the repository holding `dir`: worktrees locked by a smol-durable process
/// that no longer runs (the agents still running in them are stopped first) and branches under
/// [`BRANCH_PREFIX`] without a worktree for over a minute. Nothing to do is not an error; a
/// leftover that cannot be removed is logged and the others are still removed; only a git that
/// cannot list worktrees fails.
pub async fn remove_stale_worktrees(dir: &Path) -> Result<StaleWorktrees, String> {
    let mut removed = StaleWorktrees::default();
    let Some(repository) = repository_root(dir).await else {
        return Ok(removed);
    };
    // Once per repository and process (a start's cleanup spares the first worktree's).
    if let Ok(mut cleaned) = CLEANED.lock() {
        cleaned
            .get_or_insert_with(HashSet::new)
            .insert(repository.clone());
    }
    let _turn = GIT_TURN.lock().await;
    let listing = git(&repository, &["worktree", "list", "--porcelain"]).await?;
    let mut in_use = HashSet::new();
    for entry in listing.split("\n\n") {
        let field = |name: &str| {
            entry.lines().find_map(|line| {
                line.strip_prefix(name)
                    .map(|rest| rest.strip_prefix(' ').unwrap_or(rest))
            })
        };
        let Some(path) = field("worktree") else {
            continue;
        };
        let branch = field("branch").and_then(|branch| branch.strip_prefix("refs/heads/"));
        // Ours by the lock a smol-durable process put on it, whatever its agent checked out.
        let gone = field("locked").is_some_and(holder_is_gone);
        if !gone {
            if let Some(branch) = branch {
                in_use.insert(branch.to_owned());
            }
            continue;
        }
        let path = Path::new(path);
        stop_processes_in(path);
        let branch = branch.filter(|branch| branch.starts_with(BRANCH_PREFIX));
        match remove_worktree(&repository, path, branch.unwrap_or_default()).await {
            Ok(()) => {
                removed.worktrees.push(path.to_string_lossy().into_owned());
                removed.branches.extend(branch.map(str::to_owned));
            }
            Err(error) => {
                tracing::warn!(worktree = %path.display(), %error, "cannot remove a stale agent worktree");
            }
        }
        if let Some(holder) = path.parent().filter(|holder| is_ours(holder.file_name())) {
            let _ = std::fs::remove_dir_all(holder);
        }
    }
    let branches = git(
        &repository,
        &[
            "for-each-ref",
            "--format=%(refname:short)",
            &format!("refs/heads/{BRANCH_PREFIX}"),
        ],
    )
    .await?;
    let now = u64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| since.as_millis()),
    )
    .unwrap_or(u64::MAX);
    for branch in branches.lines().map(str::trim) {
        if branch.is_empty()
            || in_use.contains(branch)
            || removed.branches.iter().any(|done| done == branch)
        {
            continue;
        }
        let created = branch
            .strip_prefix(BRANCH_PREFIX)
            .and_then(|id| ulid::Ulid::from_string(&id.to_uppercase()).ok())
            .map(|id| id.timestamp_ms());
        if created.is_some_and(|created| now.saturating_sub(created) < BRANCH_GRACE_MS) {
            continue;
        }
        match git_status(&repository, &["branch", "-D", branch]).await {
            Ok(()) => removed.branches.push(branch.to_owned()),
            Err(error) => tracing::warn!(%branch, %error, "cannot remove a stale agent branch"),
        }
    }
    Ok(removed)
}

/// Unlocks and removes a worktree of ours (`--force` for its changes; a directory that is
/// gone has only its record removed, not every missing worktree's as `git worktree prune`
/// would), then deletes `branch` (when not empty).
async fn remove_worktree(repository: &Path, path: &Path, branch: &str) -> Result<(), String> {
    let target = path.to_string_lossy();
    // Unlocking a worktree that is not locked fails; that is fine.
    let _ = git_status(repository, &["worktree", "unlock", &target]).await;
    if path.exists() {
        git_status(repository, &["worktree", "remove", "--force", &target]).await?;
    } else {
        forget_worktree(repository, path).await?;
    }
    if branch.is_empty() {
        return Ok(());
    }
    git_status(repository, &["branch", "-D", branch]).await
}

/// Removes git's record (`<git dir>/worktrees/<name>`) of the worktree that was at `path`.
async fn forget_worktree(repository: &Path, path: &Path) -> Result<(), String> {
    let common = git(repository, &["rev-parse", "--git-common-dir"]).await?;
    let common = repository.join(common.trim());
    let records = std::fs::read_dir(common.join("worktrees"))
        .map_err(|error| format!("cannot read git's worktree records: {error}"))?;
    for record in records.filter_map(Result::ok) {
        // `gitdir` holds `<worktree>/.git`.
        let points_here = std::fs::read_to_string(record.path().join("gitdir"))
            .is_ok_and(|gitdir| Path::new(gitdir.trim()).parent() == Some(path));
        if points_here {
            return std::fs::remove_dir_all(record.path()).map_err(|error| {
                format!("cannot remove git's record of {}: {error}", path.display())
            });
        }
    }
    Ok(())
}

/// Stops what still runs inside a stale worktree: the agents a killed process left behind
/// (they would go on spending, on a checkout about to disappear). Linux only (`/proc`).
fn stop_processes_in(worktree: &Path) {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return;
    };
    for entry in entries.filter_map(Result::ok) {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|name| name.parse::<u32>().ok())
        else {
            continue;
        };
        let inside =
            std::fs::read_link(entry.path().join("cwd")).is_ok_and(|cwd| cwd.starts_with(worktree));
        if inside && pid != std::process::id() {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

fn lock_reason() -> String {
    format!(
        "smol-durable pid={} host={}",
        std::process::id(),
        gethostname::gethostname().to_string_lossy()
    )
}

/// Whether a lock reason names a process of this host that no longer runs. Worktrees locked
/// by anything else (a person, another host) are left alone.
fn holder_is_gone(reason: &str) -> bool {
    let mut pid = None;
    let mut host = None;
    let mut words = reason.split_whitespace();
    if words.next() != Some("smol-durable") {
        return false;
    }
    for word in words {
        if let Some(value) = word.strip_prefix("pid=") {
            pid = value.parse::<u32>().ok();
        } else if let Some(value) = word.strip_prefix("host=") {
            host = Some(value);
        }
    }
    let this_host = gethostname::gethostname();
    match (pid, host) {
        (Some(pid), Some(host)) if host == this_host.to_string_lossy() => !process_runs(pid),
        _ => false,
    }
}

fn process_runs(pid: u32) -> bool {
    if Path::new("/proc/self").exists() {
        return Path::new(&format!("/proc/{pid}")).exists();
    }
    std::process::Command::new("kill")
        .args(["-0", &pid.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

fn is_ours(name: Option<&std::ffi::OsStr>) -> bool {
    name.and_then(std::ffi::OsStr::to_str)
        .is_some_and(|name| name.starts_with(DIR_PREFIX))
}

async fn repository_root(dir: &Path) -> Option<PathBuf> {
    // Outside any repository (the common case for a start's cleanup), no git is spawned.
    if !dir
        .ancestors()
        .any(|ancestor| ancestor.join(".git").exists())
    {
        return None;
    }
    git(dir, &["rev-parse", "--show-toplevel"])
        .await
        .ok()
        .map(|root| PathBuf::from(root.trim()))
        .filter(|root| !root.as_os_str().is_empty())
}

/// Runs `git -C dir args…`; its stdout, or its stderr as the error.
async fn git(dir: &Path, args: &[&str]) -> Result<String, String> {
    let output = tokio::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|error| format!("cannot run git: {error}"))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout)
            .trim_end()
            .to_owned())
    } else {
        Err(format!(
            "git {} failed: {}",
            args.first().copied().unwrap_or_default(),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

async fn git_status(dir: &Path, args: &[&str]) -> Result<(), String> {
    git(dir, args).await.map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_dead_processes_of_this_host_hold_stale_worktrees() {
        let host = gethostname::gethostname().to_string_lossy().into_owned();
        let me = std::process::id();
        assert!(!holder_is_gone(&format!(
            "smol-durable pid={me} host={host}"
        )));
        assert!(holder_is_gone(&format!(
            "smol-durable pid={} host={host}",
            u32::MAX - 1
        )));
        assert!(!holder_is_gone(&format!(
            "smol-durable pid={} host=elsewhere-{host}",
            u32::MAX - 1
        )));
        assert!(!holder_is_gone("being reviewed by Ada"));
        assert!(!holder_is_gone(""));
    }
}
