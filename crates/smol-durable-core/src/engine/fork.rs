//! Forking a run: a new run that starts with copies of another run's completed steps, up to a
//! chosen step, and continues live from there (with the same script, or another).

use std::collections::{BTreeMap, HashMap};

use serde_json::Value;

use super::handle::Engine;
use super::options::RunRequest;
use super::run_handle::RunHandle;
use super::runner::{SubmitOptions, SubmittedRun};
use crate::script::WorkflowSource;
use crate::store::{
    ClaimScope, ForkOrigin, LedgerEntry, LedgerSource, NewRun, RunFilter, RunRecord, State,
    StepKind, StepRecord,
};
use crate::Error;

/// Where a fork starts: the first step it does not copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ForkPoint {
    /// By number, as `history RUN` shows it (1 for the first step the run reached).
    Step(u32),
    /// By step name (checkpoint) or step id.
    Checkpoint(String),
}

impl std::str::FromStr for ForkPoint {
    type Err = std::convert::Infallible;

    /// A number is a step number; anything else a step name or id.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Ok(match text.parse::<u32>() {
            Ok(number) => ForkPoint::Step(number),
            Err(_) => ForkPoint::Checkpoint(text.to_owned()),
        })
    }
}

/// How to fork ([`Engine::fork`]). Everything not set is the source run's.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct ForkOptions {
    /// Copy only the completed steps before this one; `None` copies every completed step (a
    /// retry with a changed script or arguments that keeps all the work that still matches).
    pub before_step: Option<ForkPoint>,
    /// Run this script instead of the source's (re-read from its path, else its stored copy).
    pub source: Option<WorkflowSource>,
    /// Other arguments.
    pub args: Option<Value>,
    /// Model aliases laid over the source run's.
    pub model_map: BTreeMap<String, String>,
    /// Another output-token allowance. The copied steps' tokens do not count against it: the
    /// source run spent them.
    pub budget_total: Option<u64>,
    /// Another default provider. It is part of an agent step's identity: copied agent steps
    /// that used the source's default do not replay under another one.
    pub provider: Option<String>,
}

impl ForkOptions {
    /// Copy every completed step, change nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Copy only the completed steps before `point`.
    pub fn before_step(mut self, point: ForkPoint) -> Self {
        self.before_step = Some(point);
        self
    }

    /// Run another script.
    pub fn source(mut self, source: WorkflowSource) -> Self {
        self.source = Some(source);
        self
    }

    /// Other arguments.
    pub fn args(mut self, args: Value) -> Self {
        self.args = Some(args);
        self
    }

    /// A model alias over the source's (`alias` → `model`).
    pub fn model_alias(mut self, alias: impl Into<String>, model: impl Into<String>) -> Self {
        self.model_map.insert(alias.into(), model.into());
        self
    }

    /// Another allowance.
    pub fn budget_total(mut self, tokens: u64) -> Self {
        self.budget_total = Some(tokens);
        self
    }

    /// Another default provider.
    pub fn provider(mut self, name: impl Into<String>) -> Self {
        self.provider = Some(name.into());
        self
    }
}

/// A fork as it will be created: the new run with its copies, and the script it runs.
struct PlannedFork {
    new_run: NewRun,
    source: WorkflowSource,
}

impl Engine {
    /// Forks a run and executes the fork here: a new run (new id, its lineage in
    /// [`WorkflowInfo::forked_from`](crate::store::WorkflowInfo::forked_from)) created in one
    /// store transaction with copies of the source's completed steps before the fork point (in
    /// the order the source reached them), billed to its ledger as
    /// [`LedgerSource::Copied`] (shown, never spent again), then continued live. The source
    /// run is never changed; a source still running is forked from the completed steps read
    /// at this moment (completed steps never change). A child run cannot be forked: fork its
    /// root (a copied child step keeps the child's result).
    pub async fn fork(&self, run_id: &str, options: ForkOptions) -> Result<RunHandle, Error> {
        self.shared.check_executes()?;
        let planned = self.plan_fork(run_id, options, ClaimScope::Local).await?;
        if let Some(name) = &planned.new_run.workflow.provider {
            self.shared.check_provider(name)?;
        }
        let created = self.shared.store.create_run(planned.new_run).await?;
        self.shared
            .launch(created.run, planned.source, None, false)
            .await
    }

    /// [`fork`](Self::fork), queued for workers ([`Engine::worker`]) instead of executed here.
    pub async fn submit_fork(
        &self,
        run_id: &str,
        options: ForkOptions,
        submit: SubmitOptions,
    ) -> Result<SubmittedRun, Error> {
        let mut planned = self.plan_fork(run_id, options, ClaimScope::Runner).await?;
        planned.new_run.max_attempts = submit.max_attempts.max(1);
        planned.new_run.idempotency_key = submit.idempotency_key;
        let created = self.shared.store.create_run(planned.new_run).await?;
        Ok(SubmittedRun {
            task_id: created.task.task_id,
            run_id: created.run.run_id,
            state: created.task.state,
            created: created.created,
        })
    }

    async fn plan_fork(
        &self,
        run_id: &str,
        options: ForkOptions,
        scope: ClaimScope,
    ) -> Result<PlannedFork, Error> {
        let store = &self.shared.store;
        let run = self
            .get_root_run(
                run_id,
                "fork",
                ": forking inside a child workflow is not supported (a copied child step keeps \
                 the child's result)",
            )
            .await?;
        let source = self.source_or_stored(options.source, &run).await?;
        // Steps first, then the ledger: a step's ledger rows commit with its completion, so
        // every completed step read here has its rows in the later read.
        let steps = store.load_steps(run_id).await?;
        let ledger = store.ledger_entries(run_id).await?;
        let before = fork_index(&run, &steps, options.before_step.as_ref())?;
        let (settings, _) = self.shared.settings(&run, None).await?;
        let mut request = RunRequest::new(source.clone(), options.args.unwrap_or(run.args.clone()));
        request.budget_total = options.budget_total.or(run.budget_total);
        request.provider = options
            .provider
            .or_else(|| run.workflow.provider.clone())
            .or(Some(settings.provider))
            // A submitter engine has no default: the worker's then runs the fork.
            .filter(|name| !name.is_empty());
        request.cwd = settings.cwd;
        request.max_parallel_agents = run.workflow.max_parallel_agents;
        let mut new_run = self.new_run(&request, scope).await?;
        let mut model_map = settings.model_map;
        model_map.extend(options.model_map);
        new_run.workflow.model_map = model_map;
        // The copies keep the names the source's rules gave them.
        new_run.workflow.step_identity = Some(settings.step_identity.recorded());
        let parents = self.child_runs(&run).await?;
        let owners = LedgerOwners::new(&steps, &parents);
        let (copies, copied_ledger) = copy_steps(
            &steps[..before.index],
            &ledger,
            &owners,
            &run.run_id,
            &new_run.run_id,
            new_run.now,
        );
        new_run.workflow.forked_from = Some(ForkOrigin {
            run_id: run.run_id.clone(),
            before_step: before.number,
            before_checkpoint: before.checkpoint,
            copied_steps: u32::try_from(copies.len()).unwrap_or(u32::MAX),
        });
        new_run.steps = copies;
        new_run.ledger = copied_ledger;
        Ok(PlannedFork { new_run, source })
    }

    /// Each child run of `run`'s tree with its parent run.
    pub(super) async fn child_runs(
        &self,
        run: &RunRecord,
    ) -> Result<HashMap<String, String>, Error> {
        let filter = RunFilter {
            task_id: Some(run.task_id.clone()),
            ..RunFilter::default()
        };
        Ok(self
            .shared
            .store
            .list_runs(&filter)
            .await?
            .into_iter()
            .filter_map(|child| Some((child.run_id, child.parent_run_id?)))
            .collect())
    }
}

/// Where the copying stops.
struct ForkIndex {
    /// Steps `[..index]` are candidates for copying.
    index: usize,
    number: Option<u32>,
    checkpoint: Option<String>,
}

fn fork_index(
    run: &RunRecord,
    steps: &[StepRecord],
    point: Option<&ForkPoint>,
) -> Result<ForkIndex, Error> {
    let count = steps.len();
    let index = match point {
        None => {
            return Ok(ForkIndex {
                index: count,
                number: None,
                checkpoint: None,
            })
        }
        Some(ForkPoint::Step(number)) => {
            let number = usize::try_from(*number).unwrap_or(usize::MAX);
            if number == 0 || number > count.saturating_add(1) {
                return Err(Error::InvalidRequest(format!(
                    "run {} has no step {number}: its steps are numbered 1 to {count} in the \
                     order it reached them (see `history {}`); {} forks after the last one",
                    run.run_id,
                    run.run_id,
                    count + 1
                )));
            }
            number - 1
        }
        Some(ForkPoint::Checkpoint(name)) => steps
            .iter()
            .position(|step| step.checkpoint_name == *name || step.step_id == *name)
            .ok_or_else(|| {
                Error::InvalidRequest(format!(
                    "run {} has no step named {name:?}: name one of its own steps (`history {}` \
                     lists them; forking inside a child workflow is not supported)",
                    run.run_id, run.run_id
                ))
            })?,
    };
    Ok(ForkIndex {
        index,
        number: Some(u32::try_from(index + 1).unwrap_or(u32::MAX)),
        checkpoint: steps.get(index).map(|step| step.checkpoint_name.clone()),
    })
}

/// Which of a root run's own steps each ledger row of its tree bills: an agent step's own
/// rows, and every row of a child run (at any depth) billed to the workflow step that started
/// the outermost child above it.
pub(super) struct LedgerOwners<'a> {
    /// Child run → the root's workflow step that started it.
    child_steps: HashMap<&'a str, &'a str>,
    /// Child run → its parent run.
    parents: &'a HashMap<String, String>,
}

impl<'a> LedgerOwners<'a> {
    /// For the root run's `steps`, given each child run's parent.
    pub(super) fn new(steps: &'a [StepRecord], parents: &'a HashMap<String, String>) -> Self {
        let child_steps = steps
            .iter()
            .filter(|step| step.kind == StepKind::Workflow)
            .filter_map(|step| {
                let child = step.input.get("childRunId").and_then(Value::as_str)?;
                Some((child, step.step_id.as_str()))
            })
            .collect();
        Self {
            child_steps,
            parents,
        }
    }

    /// The id of the root run's step that `entry` bills (`root_run_id` is the root's id).
    pub(super) fn owner<'e>(&self, root_run_id: &str, entry: &'e LedgerEntry) -> Option<&'e str>
    where
        'a: 'e,
    {
        if entry.run_id == root_run_id {
            return entry.step_id.as_deref();
        }
        let mut run = entry.run_id.as_str();
        // Bounded: a corrupt parent cycle must not spin.
        for _ in 0..=self.parents.len() {
            if let Some(step) = self.child_steps.get(run) {
                return Some(step);
            }
            run = self.parents.get(run)?;
        }
        None
    }
}

/// Copies of the completed steps among `steps` for the run `run_id`, in the same order (their
/// creation times kept, and new ids increasing in that order, so the copies sort as the
/// source did), with the ledger rows that billed them.
fn copy_steps(
    steps: &[StepRecord],
    ledger: &[LedgerEntry],
    owners: &LedgerOwners<'_>,
    source_run_id: &str,
    run_id: &str,
    now: i64,
) -> (Vec<StepRecord>, Vec<LedgerEntry>) {
    let mut copies = Vec::new();
    let mut copied_ids = HashMap::new();
    for step in steps.iter().filter(|step| step.state == State::Completed) {
        let id = crate::new_id("step");
        copied_ids.insert(step.step_id.as_str(), id.clone());
        copies.push(StepRecord {
            step_id: id,
            run_id: run_id.to_owned(),
            root_run_id: run_id.to_owned(),
            worker_id: None,
            lease_expires_at: None,
            ..step.clone()
        });
    }
    let copied_ledger = ledger
        .iter()
        .filter_map(|entry| {
            let step = copied_ids.get(owners.owner(source_run_id, entry)?)?;
            Some(LedgerEntry {
                budget_entry_id: crate::new_id("budget"),
                run_id: run_id.to_owned(),
                root_run_id: run_id.to_owned(),
                step_id: Some(step.clone()),
                source_type: LedgerSource::Copied,
                source_id: format!("{step}:{}", entry.budget_entry_id),
                output_tokens: entry.output_tokens,
                usage: entry.usage.clone(),
                created_at: now,
            })
        })
        .collect();
    (copies, copied_ledger)
}
