//! Programs run on behalf of an agent call, and stopped with everything they started.

use std::collections::BTreeSet;
use std::process::Stdio;
use std::sync::Mutex;

/// The process groups guarded right now, for [`kill_process_groups`].
static GUARDED: Mutex<BTreeSet<u32>> = Mutex::new(BTreeSet::new());

/// Kills a program's whole process group when dropped, unless [`disarm`](Self::disarm)ed.
///
/// Spawn the program in a group of its own (`Command::process_group(0)`), then hold one of
/// these while it runs: when the call times out or the run is cancelled, the engine drops the
/// call's future and this guard takes down the program *and* whatever it started (`sh -c`
/// wrappers, `npx`, the tools a coding agent runs).
#[derive(Debug)]
pub struct ProcessGroupGuard(Option<u32>);

impl ProcessGroupGuard {
    /// Guards the group led by `pid` (a child's [`id`](tokio::process::Child::id); `None`
    /// guards nothing).
    pub fn new(pid: Option<u32>) -> Self {
        if let (Some(pid), Ok(mut guarded)) = (pid, GUARDED.lock()) {
            guarded.insert(pid);
        }
        Self(pid)
    }

    /// The program finished: nothing to kill.
    pub fn disarm(&mut self) {
        if let (Some(pid), Ok(mut guarded)) = (self.0.take(), GUARDED.lock()) {
            guarded.remove(&pid);
        }
    }
}

impl Drop for ProcessGroupGuard {
    fn drop(&mut self) {
        if let Some(pid) = self.0 {
            kill_group(pid);
            if let Ok(mut guarded) = GUARDED.lock() {
                guarded.remove(&pid);
            }
        }
    }
}

/// Kills every process group a [`ProcessGroupGuard`] still guards: for a process about to exit
/// without dropping the calls in flight (a second Ctrl-C), so their agents do not outlive it.
pub fn kill_process_groups() {
    let pids: Vec<u32> = GUARDED
        .lock()
        .map(|mut guarded| std::mem::take(&mut *guarded).into_iter().collect())
        .unwrap_or_default();
    for pid in pids {
        kill_group(pid);
    }
}

fn kill_group(pid: u32) {
    // `kill -KILL -- -PGID`: the crate forbids `unsafe`, so no direct libc call.
    #[cfg(unix)]
    let _ = std::process::Command::new("kill")
        .args(["-KILL", "--", &format!("-{pid}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// The directory a program of an agent call runs in: the call's working directory
/// ([`AgentContext::cwd`](crate::AgentContext)) when it exists on this machine, else the
/// process's own (a run submitted from another machine names a directory that may not exist
/// here).
pub fn working_dir(request: &crate::AgentRequest) -> Option<std::path::PathBuf> {
    request
        .context
        .cwd
        .as_deref()
        .map(std::path::PathBuf::from)
        .filter(|dir| dir.is_dir())
}
