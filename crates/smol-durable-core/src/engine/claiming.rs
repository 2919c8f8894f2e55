//! Claiming a run's task for this process and spawning the attempt: waiting for, or taking
//! over from, a previous owner, and the settings an attempt runs with.

use std::sync::Arc;

use serde_json::Value;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::attempt::{execute, AttemptPlan};
use super::context::{RunSettings, RunnerAttempt};
use super::options::ResumeOptions;
use super::run_handle::RunHandle;
use super::shared::EngineShared;
use crate::agent_options::StepIdentity;
use crate::script::WorkflowSource;
use crate::store::{AttemptRecord, AttemptStart, RunRecord, StartAttempt};
use crate::Error;

impl EngineShared {
    /// Claims the task (waiting for, or taking over from, a previous owner) and spawns the attempt.
    pub(super) async fn launch(
        self: &Arc<Self>,
        run: RunRecord,
        source: WorkflowSource,
        overrides: Option<ResumeOptions>,
        revive: bool,
    ) -> Result<RunHandle, Error> {
        let cancel = self.register_live(&run.run_id)?;
        let claimed = async {
            // Everything that can fail is read before the task is claimed, so a failure here
            // leaves no attempt behind.
            let settings = self.settings(&run, overrides).await?;
            let no_wait = settings.1;
            let attempt = self.claim_task(&run, revive, no_wait, &cancel).await?;
            Ok::<_, Error>((settings.0, attempt))
        }
        .await;
        let (settings, attempt) = match claimed {
            Ok(claimed) => claimed,
            Err(error) => {
                self.unregister_live(&run.run_id);
                return Err(error);
            }
        };
        Ok(self.spawn_attempt(run, attempt, source, settings, cancel, None))
    }

    /// Marks a run as executing in this engine (so `cancel` reaches it at once); a run already
    /// executing here is `RunBusy`.
    pub(super) fn register_live(&self, run_id: &str) -> Result<CancellationToken, Error> {
        let shared = self;
        let mut live = shared
            .live
            .lock()
            .map_err(|_| Error::internal("the registry of live runs is poisoned", None))?;
        if live.contains_key(run_id) {
            return Err(Error::RunBusy {
                run_id: run_id.to_owned(),
                owner: shared.owner_id.clone(),
                lease_expires_at: shared.clock.now_ms(),
            });
        }
        let cancel = CancellationToken::new();
        live.insert(run_id.to_owned(), cancel.clone());
        Ok(cancel)
    }

    pub(super) fn unregister_live(&self, run_id: &str) {
        if let Ok(mut live) = self.live.lock() {
            live.remove(run_id);
        }
    }

    /// Executes an attempt this engine has opened (the run is registered as live) on its own
    /// task; the run leaves the live registry when the attempt ends.
    pub(super) fn spawn_attempt(
        self: &Arc<Self>,
        run: RunRecord,
        attempt: AttemptRecord,
        source: WorkflowSource,
        settings: RunSettings,
        cancel: CancellationToken,
        runner: Option<RunnerAttempt>,
    ) -> RunHandle {
        let shared = Arc::clone(self);
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let run_id = run.run_id.clone();
        let task_id = run.task_id.clone();
        let span = tracing::info_span!("run", run_id = %run_id, attempt = attempt.attempt);
        let plan = AttemptPlan {
            engine: Arc::clone(&shared),
            run,
            attempt,
            source,
            settings,
            cancel: cancel.clone(),
            handle_events: Some(events_tx),
            runner,
        };
        let registry = Arc::clone(&shared);
        let live_key = run_id.clone();
        let join = tokio::spawn(
            async move {
                let result = execute(plan).await;
                if let Ok(mut live) = registry.live.lock() {
                    live.remove(&live_key);
                }
                result
            }
            .instrument(span),
        );
        RunHandle {
            run_id,
            task_id,
            cancel,
            events: Some(events_rx),
            join,
        }
    }

    /// The defaults in force for an attempt (stored with the run, overridden on resume) and
    /// whether to refuse rather than wait for another owner.
    pub(super) async fn settings(
        &self,
        run: &RunRecord,
        overrides: Option<ResumeOptions>,
    ) -> Result<(RunSettings, bool), Error> {
        let shared = self;
        let overrides = overrides.unwrap_or_default();
        let settings = RunSettings {
            provider: overrides
                .provider
                .or_else(|| run.workflow.provider.clone())
                .unwrap_or_else(|| shared.default_provider.clone()),
            model_map: if run.workflow.model_map.is_empty() {
                shared.model_map.clone()
            } else {
                run.workflow.model_map.clone()
            },
            cwd: match &run.workflow.cwd {
                Some(cwd) => Some(cwd.clone()),
                None => self.recorded_cwd(run).await?,
            },
            budget_total: overrides.budget_total.or(run.budget_total),
            max_parallel_agents: run
                .workflow
                .max_parallel_agents
                .or(shared.limits.max_parallel_agents),
            step_identity: StepIdentity::of_run(
                run.workflow.step_identity,
                run.workflow.script_hash.is_some(),
            ),
            detach_on_wait: overrides.detach_on_wait,
            replay: overrides.replay,
        };
        Ok((settings, overrides.no_wait))
    }

    /// Claims the task. A dead owner on this host is taken over at once; a live owner elsewhere
    /// is waited for at most one lease ttl (it may keep renewing), then reported as `RunBusy`.
    async fn claim_task(
        &self,
        run: &RunRecord,
        revive: bool,
        no_wait: bool,
        cancel: &CancellationToken,
    ) -> Result<AttemptRecord, Error> {
        let shared = self;
        let ttl = i64::try_from(shared.lease_ttl.as_millis()).unwrap_or(i64::MAX);
        let mut take_over_from = None;
        let mut give_up_at = None;
        loop {
            let now = shared.clock.now_ms();
            let started = shared
                .store
                .start_attempt(StartAttempt {
                    attempt_id: crate::new_id("attempt"),
                    task_id: run.task_id.clone(),
                    run_id: run.run_id.clone(),
                    owner_id: shared.owner_id.clone(),
                    lease_expires_at: now.saturating_add(ttl),
                    take_over_from: take_over_from.clone(),
                    revive,
                    now,
                })
                .await?;
            let (owner_id, lease_expires_at) = match started {
                AttemptStart::Started(attempt) => return Ok(attempt),
                AttemptStart::Finished(state) => {
                    return Err(Error::InvalidState {
                        run_id: run.run_id.clone(),
                        state,
                        operation: "started again",
                    })
                }
                AttemptStart::Busy {
                    owner_id,
                    lease_expires_at,
                } => (owner_id, lease_expires_at),
            };
            if take_over_from.is_none() && self.owner_is_dead(&owner_id).await? {
                tracing::info!(%owner_id, "previous owner's process is gone; taking over its leases");
                take_over_from = Some(owner_id);
                continue;
            }
            let give_up_at = *give_up_at.get_or_insert(now.saturating_add(ttl));
            if no_wait || now >= give_up_at {
                return Err(Error::RunBusy {
                    run_id: run.run_id.clone(),
                    owner: owner_id,
                    lease_expires_at,
                });
            }
            tracing::info!(%owner_id, lease_expires_at, "waiting for the previous owner's lease to expire");
            let wake = lease_expires_at.saturating_add(1).min(give_up_at);
            tokio::select! {
                () = shared.clock.sleep_until(wake) => {}
                () = cancel.cancelled() => return Err(Error::Cancelled),
            }
        }
    }

    /// smol-wf recorded no cwd with its runs, only inside each agent signature. Runs it wrote
    /// (they have no stored script hash) take the cwd their recorded steps used, so those steps
    /// replay instead of running again.
    async fn recorded_cwd(&self, run: &RunRecord) -> Result<Option<String>, Error> {
        if run.workflow.script_hash.is_some() {
            return Ok(None);
        }
        let steps = self.store.load_steps(&run.run_id).await?;
        Ok(steps
            .iter()
            .filter(|step| step.kind == crate::store::StepKind::Agent)
            .filter_map(|step| serde_json::from_str::<Value>(&step.input_signature_json).ok())
            .find_map(|signature| {
                signature
                    .pointer("/context/cwd")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            }))
    }
}
