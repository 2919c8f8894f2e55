//! Programs run on behalf of an agent call, and stopped with everything they started.

use std::process::Stdio;

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
        Self(pid)
    }

    /// The program finished: nothing to kill.
    pub fn disarm(&mut self) {
        self.0 = None;
    }
}

impl Drop for ProcessGroupGuard {
    fn drop(&mut self) {
        #[cfg(unix)]
        if let Some(pid) = self.0 {
            // `kill -KILL -- -PGID`: the crate forbids `unsafe`, so no direct libc call.
            let _ = std::process::Command::new("kill")
                .args(["-KILL", "--", &format!("-{pid}")])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
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
