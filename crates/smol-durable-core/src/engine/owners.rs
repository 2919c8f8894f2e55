//! Whether the owner of a run is still there: its lease, and on this host its process.

use crate::store::{OwnerRecord, State, TaskRecord};
use crate::Error;

use super::shared::EngineShared;

impl EngineShared {
    /// Whether a `running` task's owner is gone: its process on this host no longer exists, or
    /// its lease has run out (an owner elsewhere stopped renewing it). A run whose owner is gone
    /// only moves again when it is resumed, or, for a submitted run, claimed by a worker.
    pub async fn owner_gone(&self, task: &TaskRecord) -> Result<bool, Error> {
        if task.state != State::Running {
            return Ok(false);
        }
        let expired = task
            .lease_expires_at
            .is_none_or(|expires| expires <= self.clock.now_ms());
        if expired {
            return Ok(true);
        }
        match &task.claimed_by_owner_id {
            Some(owner) => self.owner_is_dead(owner).await,
            None => Ok(true),
        }
    }

    /// True only when the owner ran on this host and its process no longer exists.
    pub(super) async fn owner_is_dead(&self, owner_id: &str) -> Result<bool, Error> {
        let Some(owner) = self.store.get_owner(owner_id).await? else {
            return Ok(false);
        };
        let here = OwnerRecord::this_process(String::new(), 0);
        if owner.hostname != here.hostname || owner.pid == here.pid {
            return Ok(false);
        }
        Ok(!process_exists(owner.pid))
    }
}

#[cfg(target_os = "linux")]
fn process_exists(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

#[cfg(not(target_os = "linux"))]
fn process_exists(_pid: u32) -> bool {
    // Without a cheap, safe liveness probe, assume alive and let the lease expire.
    true
}
