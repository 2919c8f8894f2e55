//! `history`: root runs newest first, one run in detail, and `history delete`, in smol-wf
//! 0.3.4's formats (see `reference/cli-formats.md`). Token numbers come from the budget ledger;
//! a run's steps include those of its child runs. (Long, but one command: its table, detail
//! and JSON views share one model of a run.)

use std::collections::{BTreeMap, HashMap, HashSet};

use anyhow::bail;
use serde_json::{json, Value};
use smol_durable_core::store::{
    AttemptRecord, LedgerEntry, RunFilter, RunRecord, State, StepKind, StepRecord, TaskRecord,
};
use smol_durable_core::{rfc3339_ms, Engine, OpenWait};

use crate::cli::{Format, HistoryAction, HistoryArgs};
use crate::output::{errln, outln};
use crate::table::{humanize, now_ms, Json, Object, Table};
use crate::Outcome;

/// Runs listed when `--limit` is not given.
const DEFAULT_LIMIT: usize = 50;

/// What a run whose owner is gone shows in the STATE cells.
const OWNER_GONE: &str = "running (owner gone; resume it)";

/// `-o/--output`'s values, with smol-wf's message.
pub fn format(text: &str) -> Result<Format, String> {
    match text {
        "table" => Ok(Format::Table),
        "json" => Ok(Format::Json),
        _ => Err("--output must be one of table, json".to_owned()),
    }
}

/// `--state`'s values (exactly as stored: lower case), with smol-wf's message.
pub fn state(text: &str) -> Result<State, String> {
    match State::parse(text) {
        State::Unknown(_) => {
            Err("--state must be one of pending, running, completed, failed, cancelled".to_owned())
        }
        state => Ok(state),
    }
}

/// `--since`: Unix epoch milliseconds.
pub fn since(text: &str) -> Result<i64, String> {
    epoch_ms("--since", text)
}

/// `--until`: Unix epoch milliseconds.
pub fn until(text: &str) -> Result<i64, String> {
    epoch_ms("--until", text)
}

fn epoch_ms(flag: &str, text: &str) -> Result<i64, String> {
    text.parse()
        .map_err(|_| format!("{flag} must be an integer Unix epoch millisecond timestamp"))
}

/// `--limit`: a whole number above zero.
pub fn limit(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(0) => Err("--limit must be greater than zero".to_owned()),
        Ok(limit) => Ok(limit),
        Err(_) => Err("--limit must be a non-negative integer".to_owned()),
    }
}

/// `history`: root runs newest first, one run in detail, or `history delete`.
pub async fn history(engine: &Engine, options: HistoryArgs) -> anyhow::Result<Outcome> {
    let options = &options;
    if let Some(HistoryAction::Delete {
        state,
        all,
        dry_run,
        output,
    }) = &options.action
    {
        if options.output.is_some() || output.is_some() {
            bail!("history delete does not support --output; it uses fixed text output");
        }
        if !options.run_ids.is_empty() {
            bail!("history delete does not take a run id; choose runs with --state or --all");
        }
        for (given, flag) in [
            (options.name.is_some(), "--name"),
            (options.since.is_some(), "--since"),
            (options.until.is_some(), "--until"),
            (options.limit.is_some(), "--limit"),
        ] {
            if given {
                bail!("history delete does not support {flag}");
            }
        }
        // `history --state failed delete` means the same as `history delete --state failed`.
        let states: Vec<State> = options.state.iter().chain(state).cloned().collect();
        return delete(engine, &states, *all, *dry_run).await;
    }
    if options.run_ids.len() > 1 {
        bail!("history accepts at most one run id");
    }
    let format = options.output.unwrap_or(Format::Table);
    match options.run_ids.first() {
        Some(run_id) => detail(engine, run_id, format).await,
        None => list(engine, options, format).await,
    }
}

/// The list: root runs matching the filters, newest first (ties: by run id).
async fn list(engine: &Engine, options: &HistoryArgs, format: Format) -> anyhow::Result<Outcome> {
    let filter = RunFilter {
        states: options.state.clone(),
        roots_only: true,
        name_contains: options.name.clone(),
        created_from: options.since,
        created_until: options.until,
        ..RunFilter::default()
    };
    let runs = newest_first(engine, filter, options.limit.unwrap_or(DEFAULT_LIMIT)).await?;
    let mut views = Vec::with_capacity(runs.len());
    for run in runs {
        // A run deleted since it was listed is left out.
        let Some(task) = engine.store().get_task(&run.task_id).await? else {
            continue;
        };
        let attempts = engine.store().list_attempts(&task.task_id).await?;
        let owner_gone = run.state == State::Running && engine.owner_gone(&task).await?;
        views.push(RunView::gather(engine, run, task, attempts, owner_gone).await?);
    }
    match format {
        Format::Json => {
            let items = views.iter().map(RunView::list_json).collect();
            outln!("{}", Json::Array(items).pretty());
        }
        Format::Table => {
            let now = now_ms();
            let mut table = Table::new(&[
                "RUN ID",
                "STATE",
                "WORKFLOW",
                "CREATED",
                "ATTEMPTS",
                "STEPS",
                "TOTAL TOKENS",
            ]);
            for view in &views {
                table.push(vec![
                    view.run.run_id.clone(),
                    view.state_cell(),
                    view.run.workflow.name().unwrap_or("").to_owned(),
                    humanize(now, view.run.created_at),
                    view.attempts.len().to_string(),
                    view.count_steps(&State::Completed).to_string(),
                    view.total().total.to_string(),
                ]);
            }
            print_lines(&table);
        }
    }
    Ok(Outcome::Success)
}

/// At most `limit` runs of `filter`, newest first, runs created at the same millisecond in
/// run-id order (the stores order those the other way round).
async fn newest_first(
    engine: &Engine,
    filter: RunFilter,
    limit: usize,
) -> anyhow::Result<Vec<RunRecord>> {
    let mut runs = engine
        .list_runs(&RunFilter {
            limit: Some(limit),
            ..filter.clone()
        })
        .await?;
    if runs.len() == limit {
        // The runs created at the same time as the last one may continue past the limit: take
        // all of them, so the cut falls where run-id order puts it.
        if let Some(last) = runs.last().map(|run| run.created_at) {
            runs.retain(|run| run.created_at != last);
            let ties = engine
                .list_runs(&RunFilter {
                    created_from: Some(last),
                    created_until: Some(last),
                    limit: None,
                    ..filter
                })
                .await?;
            runs.extend(ties);
        }
    }
    runs.sort_by(|a, b| {
        b.created_at
            .cmp(&a.created_at)
            .then_with(|| a.run_id.cmp(&b.run_id))
    });
    runs.truncate(limit);
    Ok(runs)
}

/// What `history` and `status` say a run waits for.
pub(crate) fn waiting_json(waits: &[OpenWait]) -> Value {
    Value::Array(
        waits
            .iter()
            .map(|wait| {
                json!({
                    "runId": wait.run_id,
                    "names": wait.names,
                    "description": wait.description,
                    "deadline": wait.deadline.map(rfc3339_ms),
                })
            })
            .collect(),
    )
}

/// One run in detail: header lines, token usage by phase, attempts and steps.
async fn detail(engine: &Engine, id: &str, format: Format) -> anyhow::Result<Outcome> {
    let status = engine.status(id).await?;
    let view = RunView::gather(
        engine,
        status.run,
        status.task,
        status.attempts,
        status.owner_gone,
    )
    .await?;
    match format {
        Format::Json => outln!("{}", Json::from(view.detail_json()).pretty()),
        Format::Table => view.print_detail(),
    }
    Ok(Outcome::Success)
}

/// `history delete`: finished root runs in the chosen states (or all), with everything under
/// them. Runs that have not finished are never deleted.
async fn delete(
    engine: &Engine,
    states: &[State],
    all: bool,
    dry_run: bool,
) -> anyhow::Result<Outcome> {
    if all && !states.is_empty() {
        bail!("history delete: --all cannot be combined with --state");
    }
    if !all && states.is_empty() {
        bail!("history delete requires either --all or at least one --state <state>");
    }
    let mode = if dry_run { " (dry run)" } else { "" };
    let chosen = if all {
        "all runs".to_owned()
    } else {
        let names: Vec<&str> = states.iter().map(State::as_str).collect();
        format!("runs in state: {}", names.join(", "))
    };
    outln!("history delete{mode} \u{2014} {chosen}");
    let finished = [State::Completed, State::Failed, State::Cancelled];
    let wanted: Vec<State> = finished
        .into_iter()
        .filter(|state| all || states.contains(state))
        .collect();
    let runs = if wanted.is_empty() {
        Vec::new()
    } else {
        engine
            .list_runs(&RunFilter {
                states: wanted,
                roots_only: true,
                ..RunFilter::default()
            })
            .await?
    };
    let (Some(first), Some(last)) = (
        runs.iter().map(|run| run.created_at).min(),
        runs.iter().map(|run| run.created_at).max(),
    ) else {
        outln!();
        outln!("No runs matched; nothing to delete.");
        return Ok(Outcome::Success);
    };
    let mut by_state: BTreeMap<&str, usize> = BTreeMap::new();
    for run in &runs {
        *by_state.entry(run.state.as_str()).or_default() += 1;
    }
    for (state, count) in by_state {
        outln!("  {state:<13}{count}");
    }
    outln!(
        "  created between {} and {}",
        rfc3339_ms(first),
        rfc3339_ms(last)
    );
    outln!();
    if dry_run {
        outln!("Dry run: no rows were deleted.");
        outln!("Re-run without --dry-run to delete {} run(s).", runs.len());
        return Ok(Outcome::Success);
    }
    let mut total = Rows::default();
    let mut deleted = 0;
    let mut refused = 0;
    for run in &runs {
        let rows = Rows::of(engine, run).await?;
        // A run resumed since it was listed is not finished any more: say so, go on.
        match engine.delete(&run.run_id).await {
            Ok(()) => {
                total.add(&rows);
                deleted += 1;
            }
            Err(error) => {
                errln!("error: run {} was not deleted: {error}", run.run_id);
                refused += 1;
            }
        }
    }
    outln!("Deleted {deleted} run(s).");
    outln!(
        "  steps: {}, attempts: {}, events: {}, budget entries: {}, tasks: {}",
        total.steps,
        total.attempts,
        total.events,
        total.ledger,
        total.tasks
    );
    Ok(if refused > 0 {
        Outcome::Failed
    } else {
        Outcome::Success
    })
}

/// The rows deleting a root run removes.
#[derive(Debug, Default)]
struct Rows {
    steps: usize,
    attempts: usize,
    events: usize,
    ledger: usize,
    tasks: usize,
}

impl Rows {
    async fn of(engine: &Engine, root: &RunRecord) -> anyhow::Result<Self> {
        let store = engine.store();
        let runs = engine
            .list_runs(&RunFilter {
                task_id: Some(root.task_id.clone()),
                ..RunFilter::default()
            })
            .await?;
        let mut steps = 0;
        for run in &runs {
            steps += store.load_steps(&run.run_id).await?.len();
        }
        Ok(Self {
            steps,
            attempts: store.list_attempts(&root.task_id).await?.len(),
            events: engine.events(&root.run_id, 0, usize::MAX).await?.len(),
            ledger: store.ledger_entries(&root.run_id).await?.len(),
            tasks: 1,
        })
    }

    fn add(&mut self, other: &Self) {
        self.steps += other.steps;
        self.attempts += other.attempts;
        self.events += other.events;
        self.ledger += other.ledger;
        self.tasks += other.tasks;
    }
}

/// Token counts as smol-wf's `history` shows them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Tokens {
    input: u64,
    cache_read: u64,
    output: u64,
    cache_write: u64,
    total: u64,
}

impl Tokens {
    /// One ledger row, its total counted by `smol_durable_core::Usage::total`.
    fn of(entry: &LedgerEntry) -> Self {
        let usage = entry.tokens();
        Self {
            input: usage.input_tokens.unwrap_or(0),
            cache_read: usage.cache_read_tokens.unwrap_or(0),
            output: usage.output_tokens.unwrap_or(0),
            cache_write: usage.cache_write_tokens.unwrap_or(0),
            total: usage.total(),
        }
    }

    fn add(&mut self, other: Self) {
        self.input = self.input.saturating_add(other.input);
        self.cache_read = self.cache_read.saturating_add(other.cache_read);
        self.output = self.output.saturating_add(other.output);
        self.cache_write = self.cache_write.saturating_add(other.cache_write);
        self.total = self.total.saturating_add(other.total);
    }

    fn json(&self) -> Object {
        Object::new()
            .with("inputTokens", json!(self.input))
            .with("cacheReadTokens", json!(self.cache_read))
            .with("outputTokens", json!(self.output))
            .with("cacheWriteTokens", json!(self.cache_write))
            .with("totalTokens", json!(self.total))
    }

    /// INPUT, CACHE READ, OUTPUT, TOTAL.
    fn cells(&self) -> [String; 4] {
        [self.input, self.cache_read, self.output, self.total].map(|n| n.to_string())
    }
}

/// What the detail view says about an agent step.
#[derive(Debug, Default)]
struct AgentInfo {
    provider: Option<String>,
    model: Option<String>,
    phase: Option<String>,
    session_id: Option<String>,
    isolation: Option<Value>,
}

impl AgentInfo {
    /// From the step's input (smol-durable's agent input; smol-wf stored the signature document
    /// there), else its signature, and its result. None for sleep and workflow steps.
    fn of(step: &StepRecord) -> Option<Self> {
        if step.kind != StepKind::Agent {
            return None;
        }
        let signature: Option<Value> = serde_json::from_str(&step.input_signature_json).ok();
        let input = |pointer: &str| {
            step.input
                .pointer(pointer)
                .filter(|value| !value.is_null())
                .or_else(|| signature.as_ref()?.pointer(pointer))
                .filter(|value| !value.is_null())
                .cloned()
        };
        let text = |value: Option<Value>| value.and_then(|v| v.as_str().map(str::to_owned));
        let stored = |key: &str| {
            step.result
                .as_ref()
                .and_then(|result| result.get(key))
                .filter(|value| !value.is_null())
        };
        let result = |key: &str| stored(key).and_then(Value::as_str).map(str::to_owned);
        Some(Self {
            provider: text(input("/provider")),
            model: result("model"),
            phase: text(input("/context/phase")),
            session_id: result("sessionId"),
            // What the call ran in (`{kind, branch, worktreePath, cwd}`), else what it asked for.
            isolation: stored("isolation")
                .cloned()
                .or_else(|| input("/options/isolation")),
        })
    }

    /// The isolation in a table cell: the worktree's branch, else the option as written.
    fn isolation_text(&self) -> Option<String> {
        let isolation = self.isolation.as_ref()?;
        Some(match isolation.get("branch").and_then(Value::as_str) {
            Some(branch) => format!("worktree {branch}"),
            None => match isolation {
                Value::String(kind) => kind.clone(),
                other => other.to_string(),
            },
        })
    }

    fn json(&self) -> Object {
        let mut agent = Object::new()
            .with("provider", json!(self.provider))
            .with("model", json!(self.model))
            .with("phase", json!(self.phase))
            .with("sessionId", json!(self.session_id));
        if let Some(isolation) = &self.isolation {
            agent.push("isolation", isolation.clone());
        }
        agent
    }
}

/// A run with everything `history` shows about it: its steps are those of the run and of every
/// child run under it, its ledger rows those billed to them.
#[derive(Debug)]
struct RunView {
    run: RunRecord,
    task: TaskRecord,
    attempts: Vec<AttemptRecord>,
    owner_gone: bool,
    /// By creation time, then step id.
    steps: Vec<StepRecord>,
    /// Agent details by step id.
    agents: HashMap<String, AgentInfo>,
    ledger: Vec<LedgerEntry>,
}

impl RunView {
    async fn gather(
        engine: &Engine,
        run: RunRecord,
        task: TaskRecord,
        attempts: Vec<AttemptRecord>,
        owner_gone: bool,
    ) -> anyhow::Result<Self> {
        let store = engine.store();
        let task_runs = engine
            .list_runs(&RunFilter {
                task_id: Some(run.task_id.clone()),
                ..RunFilter::default()
            })
            .await?;
        // The run and its descendants (all of the task's runs for a root run).
        let mut scope: HashSet<&str> = HashSet::from([run.run_id.as_str()]);
        loop {
            let before = scope.len();
            for child in &task_runs {
                if child
                    .parent_run_id
                    .as_deref()
                    .is_some_and(|parent| scope.contains(parent))
                {
                    scope.insert(child.run_id.as_str());
                }
            }
            if scope.len() == before {
                break;
            }
        }
        let mut steps = Vec::new();
        for run_id in &scope {
            steps.extend(store.load_steps(run_id).await?);
        }
        steps.sort_by(StepRecord::reached_order);
        let ledger = store
            .ledger_entries(&run.root_run_id)
            .await?
            .into_iter()
            .filter(|entry| scope.contains(entry.run_id.as_str()))
            .collect();
        let agents = steps
            .iter()
            .filter_map(|step| Some((step.step_id.clone(), AgentInfo::of(step)?)))
            .collect();
        Ok(Self {
            run,
            task,
            attempts,
            owner_gone,
            steps,
            agents,
            ledger,
        })
    }

    /// The owner that claimed the task last: its current claimant, else (smol-durable clears
    /// the claim when a run ends, smol-wf kept it) the owner of its latest attempt.
    fn worker_id(&self) -> Option<&str> {
        self.task.claimed_by_owner_id.as_deref().or_else(|| {
            self.attempts
                .iter()
                .max_by_key(|attempt| attempt.attempt)
                .map(|attempt| attempt.worker_id.as_str())
        })
    }

    /// Steps in `state`; a wait a parked run hands back is closed as failed but still waits,
    /// so it is not counted as failed while the run has not finished.
    fn count_steps(&self, state: &State) -> usize {
        let still_waiting =
            |step: &StepRecord| step.kind == StepKind::Wait && !self.run.state.is_terminal();
        self.steps
            .iter()
            .filter(|step| &step.state == state)
            .filter(|step| *state != State::Failed || !still_waiting(step))
            .count()
    }

    /// Every ledger row this run spent added up (a fork's copies are the source's spending).
    fn total(&self) -> Tokens {
        let mut total = Tokens::default();
        for entry in self.spent() {
            total.add(Tokens::of(entry));
        }
        total
    }

    fn spent(&self) -> impl Iterator<Item = &LedgerEntry> {
        self.ledger
            .iter()
            .filter(|entry| entry.source_type.is_spent())
    }

    /// What the steps a fork copied had cost its source.
    fn copied(&self) -> Tokens {
        let mut copied = Tokens::default();
        for entry in self.ledger.iter().filter(|e| !e.source_type.is_spent()) {
            copied.add(Tokens::of(entry));
        }
        copied
    }

    /// Each of the run's own steps (not its children's) by id, with its number in the order
    /// the run reached them: what `fork --before-step` takes.
    fn numbers(&self) -> HashMap<&str, usize> {
        self.steps
            .iter()
            .filter(|step| step.run_id == self.run.run_id)
            .enumerate()
            .map(|(index, step)| (step.step_id.as_str(), index + 1))
            .collect()
    }

    /// The steps a fork started with: its first `copied_steps` own steps (copies keep the
    /// source's creation times, so they come before every step the fork made).
    fn copied_steps(&self) -> HashSet<&str> {
        let copied = self
            .run
            .workflow
            .forked_from
            .as_ref()
            .map_or(0, |origin| origin.copied_steps as usize);
        self.steps
            .iter()
            .filter(|step| step.run_id == self.run.run_id)
            .take(copied)
            .map(|step| step.step_id.as_str())
            .collect()
    }

    /// `forked from RUN before step N (CHECKPOINT), K steps copied`.
    fn lineage(&self) -> Option<String> {
        let origin = self.run.workflow.forked_from.as_ref()?;
        let point = match (origin.before_step, &origin.before_checkpoint) {
            (Some(number), Some(checkpoint)) => format!(" before step {number} ({checkpoint})"),
            (Some(number), None) => format!(" before step {number}"),
            _ => String::new(),
        };
        let copied = self.copied();
        Some(format!(
            "{}{point}, {} step{} copied ({} tokens, spent by the source)",
            origin.run_id,
            origin.copied_steps,
            if origin.copied_steps == 1 { "" } else { "s" },
            copied.total
        ))
    }

    /// The ledger rows of each step.
    fn by_step(&self) -> HashMap<&str, Tokens> {
        let mut by_step: HashMap<&str, Tokens> = HashMap::new();
        for entry in &self.ledger {
            if let Some(step_id) = &entry.step_id {
                by_step
                    .entry(step_id.as_str())
                    .or_default()
                    .add(Tokens::of(entry));
            }
        }
        by_step
    }

    /// The ledger rows by the phase of their step (sorted by name), and those of steps without
    /// a phase.
    fn by_phase(&self) -> (BTreeMap<&str, Tokens>, Option<Tokens>) {
        let mut phases: BTreeMap<&str, Tokens> = BTreeMap::new();
        let mut unphased: Option<Tokens> = None;
        for entry in self.spent() {
            let phase = entry
                .step_id
                .as_ref()
                .and_then(|step_id| self.agents.get(step_id))
                .and_then(|agent| agent.phase.as_deref());
            match phase {
                Some(phase) => phases.entry(phase).or_default().add(Tokens::of(entry)),
                None => unphased
                    .get_or_insert_with(Tokens::default)
                    .add(Tokens::of(entry)),
            }
        }
        (phases, unphased)
    }

    /// The waits of the run (and its children) that have not ended, while it has not
    /// finished.
    fn waiting(&self) -> Vec<OpenWait> {
        if self.run.state.is_terminal() {
            return Vec::new();
        }
        self.steps
            .iter()
            .filter(|step| step.kind == StepKind::Wait && step.state != State::Completed)
            .filter_map(|step| OpenWait::from_step(step).ok())
            .collect()
    }

    fn state_cell(&self) -> String {
        let waiting = self.waiting();
        if self.owner_gone {
            OWNER_GONE.to_owned()
        } else if !waiting.is_empty() {
            let names: Vec<String> = waiting.iter().map(|wait| wait.names.join("|")).collect();
            format!("waiting ({})", names.join(", "))
        } else {
            self.run.state.as_str().to_owned()
        }
    }

    /// The run's identity and state fields, shared by the list and the detail.
    fn state_json(&self, object: &mut Object) {
        object.push("state", json!(self.run.state.as_str()));
        if self.owner_gone {
            object.push("ownerGone", json!(true));
        }
        let waiting = self.waiting();
        if !waiting.is_empty() {
            object.push("waitingFor", waiting_json(&waiting));
        }
    }

    /// An item of `history -o json`.
    fn list_json(&self) -> Json {
        let mut object = Object::new()
            .with("runID", json!(self.run.run_id))
            .with("taskId", json!(self.run.task_id))
            .with("rootRunId", json!(self.run.root_run_id));
        self.state_json(&mut object);
        object
            .with("metadata", metadata(&self.run))
            .with("scriptPath", json!(self.run.workflow.script_path))
            .with("createdAt", json!(rfc3339_ms(self.run.created_at)))
            .with("updatedAt", json!(rfc3339_ms(self.run.updated_at)))
            .with("attempts", json!(self.attempts.len()))
            .with("completedSteps", json!(self.count_steps(&State::Completed)))
            .with("failedSteps", json!(self.count_steps(&State::Failed)))
            .with("totalTokens", json!(self.total().total))
            .into()
    }

    /// `history RUN -o json`.
    fn detail_json(&self) -> Object {
        let run = &self.run;
        let mut workflow_run = Object::new()
            .with("runID", json!(run.run_id))
            .with("taskId", json!(run.task_id))
            .with("workerId", json!(self.worker_id()))
            .with("rootRunId", json!(run.root_run_id));
        if let Some(parent) = &run.parent_run_id {
            workflow_run.push("parentRunId", json!(parent));
        }
        self.state_json(&mut workflow_run);
        workflow_run.push("metadata", metadata(run));
        workflow_run.push("scriptPath", json!(run.workflow.script_path));
        workflow_run.push("args", run.args.clone());
        workflow_run.push("createdAt", json!(rfc3339_ms(run.created_at)));
        workflow_run.push("updatedAt", json!(rfc3339_ms(run.updated_at)));
        if let Some(reason) = &run.failure_reason {
            workflow_run.push("failureReason", reason.clone());
        }
        if let Some(origin) = &run.workflow.forked_from {
            let forked = Object::new()
                .with("runId", json!(origin.run_id))
                .with("beforeStep", json!(origin.before_step))
                .with("beforeCheckpoint", json!(origin.before_checkpoint))
                .with("copiedSteps", json!(origin.copied_steps))
                .with("copiedTokens", self.copied().json());
            workflow_run.push("forkedFrom", forked);
        }
        let mut detail = Object::new().with("workflowRun", workflow_run);
        if run.state == State::Completed {
            detail.push("results", run.result().cloned().unwrap_or(Value::Null));
        }
        let (phases, _) = self.by_phase();
        let mut by_phase = Object::new();
        for (phase, tokens) in phases {
            by_phase.push(phase, tokens.json());
        }
        detail.push("tokenUsage", self.total().json().with("byPhase", by_phase));
        let attempts = self
            .attempts
            .iter()
            .map(|attempt| {
                Object::new()
                    .with("attemptId", json!(attempt.attempt_id))
                    .with("attempt", json!(attempt.attempt))
                    .with("state", json!(attempt.state.as_str()))
                    .with("workerId", json!(attempt.worker_id))
                    .with("startedAt", json!(rfc3339_ms(attempt.started_at)))
                    .with("completedAt", json!(attempt.completed_at.map(rfc3339_ms)))
                    .with("failureReason", json!(attempt.failure_reason))
                    .into()
            })
            .collect::<Vec<Json>>();
        detail.push("attempts", attempts);
        let by_step = self.by_step();
        let numbers = self.numbers();
        let copied = self.copied_steps();
        let steps = self
            .steps
            .iter()
            .map(|step| {
                let mut object = Object::new()
                    .with("stepId", json!(step.step_id))
                    .with("stepKind", json!(step.kind.as_str()))
                    .with("checkpointName", json!(step.checkpoint_name))
                    .with("state", json!(step.state.as_str()))
                    .with("attempts", json!(step.fence))
                    .with("createdAt", json!(rfc3339_ms(step.created_at)))
                    .with("updatedAt", json!(rfc3339_ms(step.updated_at)));
                let agent = self.agents.get(&step.step_id);
                if let Some(agent) = agent {
                    object.push("agent", agent.json());
                }
                let tokens = match agent {
                    Some(_) => by_step.get(step.step_id.as_str()).copied(),
                    None => None,
                };
                object.push("tokenUsage", tokens.unwrap_or_default().json());
                // After smol-wf's keys: the number `fork --before-step` takes (the run's own
                // steps only; a child's steps cannot be a fork point).
                if let Some(number) = numbers.get(step.step_id.as_str()) {
                    object.push("number", json!(number));
                }
                if copied.contains(step.step_id.as_str()) {
                    object.push("copied", json!(true));
                }
                object.into()
            })
            .collect::<Vec<Json>>();
        detail.push("steps", steps);
        detail
    }

    /// `history RUN`.
    fn print_detail(&self) {
        let run = &self.run;
        let now = now_ms();
        let script = run.workflow.script_path.clone().unwrap_or_default();
        for (label, value) in [
            ("Run:", run.run_id.clone()),
            ("State:", self.state_cell()),
            ("Workflow:", run.workflow.name().unwrap_or("").to_owned()),
            ("Script:", script),
            ("Created:", humanize(now, run.created_at)),
            ("Attempts:", self.attempts.len().to_string()),
            (
                "Steps:",
                format!(
                    "{} completed, {} failed",
                    self.count_steps(&State::Completed),
                    self.count_steps(&State::Failed)
                ),
            ),
        ] {
            outln!("{label:<11}{value}");
        }
        if let Some(lineage) = self.lineage() {
            outln!("{:<11}{lineage}", "Forked:");
        }
        for wait in &self.waiting() {
            let mut text = format!("{} in {}", wait.names.join(" | "), wait.run_id);
            if let Some(description) = &wait.description {
                text.push_str(&format!(": {description}"));
            }
            if let Some(deadline) = wait.deadline {
                text.push_str(&format!(" (until {})", rfc3339_ms(deadline)));
            }
            outln!("{:<11}{text}", "Waits for:");
        }

        outln!();
        outln!("Token Usage");
        outln!();
        let mut usage = Table::new(&["PHASE", "INPUT", "CACHE READ", "OUTPUT", "TOTAL"]);
        let (phases, unphased) = self.by_phase();
        let rows = phases
            .into_iter()
            .chain(unphased.map(|tokens| ("(none)", tokens)));
        for (phase, tokens) in rows {
            let mut row = vec![phase.to_owned()];
            row.extend(tokens.cells());
            usage.push(row);
        }
        print_lines(&usage);

        outln!();
        outln!("Attempts");
        outln!();
        let mut attempts = Table::new(&["ATTEMPT", "STATE", "STARTED", "COMPLETED"]);
        for attempt in &self.attempts {
            attempts.push(vec![
                attempt.attempt.to_string(),
                attempt.state.as_str().to_owned(),
                humanize(now, attempt.started_at),
                attempt
                    .completed_at
                    .map_or_else(|| "-".to_owned(), |at| humanize(now, at)),
            ]);
        }
        print_lines(&attempts);

        outln!();
        outln!("Steps");
        outln!();
        let mut columns = vec![
            "#",
            "KIND",
            "STATE",
            "PHASE",
            "PROVIDER",
            "MODEL",
            "ATTEMPTS",
            "INPUT",
            "CACHE READ",
            "OUTPUT",
            "TOTAL",
            "SESSION",
        ];
        // Only runs that isolated a call get the column (smol-wf's table stays as it was).
        let with_isolation = self.agents.values().any(|agent| agent.isolation.is_some());
        if with_isolation {
            columns.push("ISOLATION");
        }
        let mut steps = Table::new(&columns);
        let by_step = self.by_step();
        let dash = |value: Option<&String>| value.map_or_else(|| "-".to_owned(), Clone::clone);
        let numbers = self.numbers();
        let copied = self.copied_steps();
        for step in &self.steps {
            let agent = self.agents.get(&step.step_id);
            let tokens = match agent {
                Some(_) => by_step
                    .get(step.step_id.as_str())
                    .copied()
                    .unwrap_or_default(),
                None => Tokens::default(),
            };
            // A child's steps are not numbered: a fork point is a step of the run itself.
            let number = numbers
                .get(step.step_id.as_str())
                .map_or_else(|| "-".to_owned(), ToString::to_string);
            // A fork's copies: completed, by the source run.
            let state = if copied.contains(step.step_id.as_str()) {
                "copied"
            } else {
                step.state.as_str()
            };
            let mut row = vec![
                number,
                step.kind.as_str().to_owned(),
                state.to_owned(),
                dash(agent.and_then(|a| a.phase.as_ref())),
                dash(agent.and_then(|a| a.provider.as_ref())),
                dash(agent.and_then(|a| a.model.as_ref())),
                step.fence.to_string(),
            ];
            row.extend(tokens.cells());
            row.push(dash(agent.and_then(|a| a.session_id.as_ref())));
            if with_isolation {
                row.push(dash(agent.and_then(AgentInfo::isolation_text).as_ref()));
            }
            steps.push(row);
        }
        print_lines(&steps);
    }
}

fn print_lines(table: &Table) {
    for line in table.lines() {
        outln!("{line}");
    }
}

/// The stored `meta`, or `{}`.
fn metadata(run: &RunRecord) -> Value {
    run.workflow.metadata.clone().unwrap_or_else(|| json!({}))
}
