//! Offline replay: a run's script evaluated against its recorded steps, with no provider call
//! and no write to the run's store, reporting whether the script still makes the calls the run
//! recorded — and where it stops doing so.
//!
//! The replay is an ordinary attempt of the real engine (the same step naming, phases, model
//! map and legacy lookups as a resume) on a throwaway [`MemoryStore`] holding a copy of the
//! run and its completed steps. The attempt runs in *replay mode*: a claim that would not
//! replay a completed step stops the evaluation there (see `host/claim.rs`), so nothing can run.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde::Serialize;
use serde_json::Value;

use super::fork::LedgerOwners;
use super::handle::Engine;
use super::options::ResumeOptions;
use super::shared::EngineShared;
use crate::script::{CallSite, WorkflowSource};
use crate::store::{
    DurableStore, LedgerEntry, MemoryStore, NewRun, RunRecord, State, StepKind, StepRecord,
};
use crate::Error;

/// How to replay ([`Engine::replay`]).
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct ReplayOptions {
    /// Evaluate this script instead of the run's (re-read from its path, else the stored copy).
    pub source: Option<WorkflowSource>,
}

impl ReplayOptions {
    /// The run's own script.
    pub fn new() -> Self {
        Self::default()
    }

    /// Replays this script instead: "does my edited script still replay this run?".
    pub fn source(mut self, source: WorkflowSource) -> Self {
        self.source = Some(source);
        self
    }
}

/// What an offline replay found ([`Engine::replay`]).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct ReplayReport {
    /// The replayed run.
    pub run_id: String,
    /// The verdict.
    pub verdict: ReplayVerdict,
    /// Calls the recording answered.
    pub replayed: usize,
    /// Where the replay stopped because the run itself had not got further: the first step
    /// the script reached that the run recorded without getting past it (cancelled, still
    /// running, a sleep or wait it was handed back at). `None` when the script ran to its end.
    pub stopped_at: Option<RecordedStep>,
    /// Where the replay stopped because the run had not finished: the first call the script
    /// makes after every step the run recorded had replayed.
    pub beyond_recording: Option<ReplayCall>,
    /// Completed steps of the run the script did not reach (before it ended or diverged), in
    /// the order the run reached them.
    pub unreached: Vec<RecordedStep>,
    /// The script's result, when it ran to its end.
    pub result: Option<Value>,
    /// How the script failed, when it failed on its own (not stopped by the replay): a run that
    /// failed replays to its failure.
    pub error: Option<String>,
}

impl ReplayReport {
    /// Whether the script replays the run exactly.
    pub fn is_identical(&self) -> bool {
        self.verdict == ReplayVerdict::Identical
    }
}

/// The outcome of a replay.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "verdict", rename_all = "camelCase")]
#[non_exhaustive]
pub enum ReplayVerdict {
    /// Every call the script made was answered by the recording (a step the run recorded as
    /// failed answers with its failure, as it did); the script ended as the run did (with its
    /// stored result, if it completed; failing, if it failed) or reached the point where the
    /// unfinished run stopped; and no completed step went unreached.
    Identical,
    /// The script no longer does what the run recorded.
    Diverged(Box<Divergence>),
    /// Two replays of the same run made different calls, in a different order, or ended
    /// differently: the script depends on something besides its arguments and its steps'
    /// results.
    NonDeterministic {
        /// Index (from 0) of the first call that differed; the number of calls when they were
        /// the same and the endings differed.
        index: usize,
        /// That call (or ending) in the first replay (`None`: no more calls).
        first: Option<String>,
        /// That call (or ending) in the second replay.
        second: Option<String>,
    },
}

/// The first difference between a script and a run's recording.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct Divergence {
    /// What differs.
    pub reason: DivergenceReason,
    /// The call the script makes now (`None` when the script made no further call).
    pub call: Option<ReplayCall>,
    /// The recorded step that call used to be: the step with the same name when the call
    /// kept its name but changed its input, else the first completed step the replay did not
    /// reach.
    pub recorded: Option<RecordedStep>,
}

/// What kind of difference a [`Divergence`] is.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(
    tag = "kind",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
#[non_exhaustive]
pub enum DivergenceReason {
    /// The script makes a call the run never made (a changed prompt, options, order, or a
    /// new call).
    NewCall,
    /// A call has the name of a recorded step but another identity document (a name an
    /// older version gave it). A call with a `key` option is named by its key alone: editing
    /// its prompt replays it, by design.
    ChangedInput,
    /// The script ended without reaching completed steps of the run.
    StepsUnreached,
    /// The script ended with a result other than the one the run stored.
    ResultDiffers {
        /// The stored result.
        recorded: Value,
        /// The script's.
        replayed: Value,
    },
    /// The run completed; the script now fails after its last replayed call.
    Failed {
        /// The script's failure.
        message: String,
    },
    /// The run failed; the script now completes.
    Completed {
        /// The run's failure.
        recorded_failure: String,
        /// The script's result.
        replayed: Value,
    },
}

/// A call an offline replay saw the script make.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct ReplayCall {
    /// `agent`, `sleep`, `workflow`, `wait` or `signal`.
    pub kind: StepKind,
    /// The step name the call has.
    pub checkpoint_name: String,
    /// Its identity document (prompt, options, provider, phase, …).
    pub signature: Value,
    /// Where the script made it, when the script engine says.
    pub site: Option<CallSite>,
}

/// A step of the recorded run.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct RecordedStep {
    /// Its number in the order the run reached its steps, from 1 (as `history` shows it).
    pub number: u32,
    /// Step id.
    pub step_id: String,
    /// Kind.
    pub kind: StepKind,
    /// Step name.
    pub checkpoint_name: String,
    /// Its state in the run.
    pub state: State,
    /// Its identity document.
    pub signature: Value,
}

impl RecordedStep {
    pub(crate) fn of(number: usize, step: &StepRecord) -> Self {
        Self {
            number: u32::try_from(number).unwrap_or(u32::MAX),
            step_id: step.step_id.clone(),
            kind: step.kind.clone(),
            checkpoint_name: step.checkpoint_name.clone(),
            state: step.state.clone(),
            signature: serde_json::from_str(&step.input_signature_json)
                .unwrap_or_else(|_| Value::String(step.input_signature_json.clone())),
        }
    }
}

impl Divergence {
    /// A readable account: the call beside the recorded one, and a line diff of their prompts
    /// and of the rest of their identity (options, provider, phase, …).
    pub fn describe(&self) -> String {
        let mut out = String::new();
        let reason = match &self.reason {
            DivergenceReason::NewCall => "the script makes a call the run never made",
            DivergenceReason::ChangedInput => "a call kept its step name but changed its input",
            DivergenceReason::StepsUnreached => {
                "the script ended without reaching completed steps of the run"
            }
            DivergenceReason::ResultDiffers { .. } => {
                "the script ended with another result than the run's"
            }
            DivergenceReason::Failed { .. } => "the run completed, the script now fails",
            DivergenceReason::Completed { .. } => "the run failed, the script now completes",
        };
        out.push_str(reason);
        out.push('\n');
        if let Some(call) = &self.call {
            let site = call
                .site
                .as_ref()
                .map_or_else(|| "unknown location".to_owned(), CallSite::to_string);
            out.push_str(&format!(
                "  now:      {} call at {site} ({})\n",
                call.kind, call.checkpoint_name
            ));
        }
        if let Some(recorded) = &self.recorded {
            out.push_str(&format!(
                "  recorded: step {} ({} {}, {})\n",
                recorded.number, recorded.kind, recorded.checkpoint_name, recorded.state
            ));
        }
        if let (Some(call), Some(recorded)) = (&self.call, &self.recorded) {
            out.push_str(&signature_diff(&recorded.signature, &call.signature));
        }
        match &self.reason {
            DivergenceReason::ResultDiffers { recorded, replayed } => {
                out.push_str(&format!("  recorded result: {recorded}\n"));
                out.push_str(&format!("  result now:      {replayed}\n"));
            }
            DivergenceReason::Failed { message } => {
                out.push_str(&format!("  failure now: {message}\n"));
            }
            DivergenceReason::Completed {
                recorded_failure,
                replayed,
            } => {
                out.push_str(&format!("  recorded failure: {recorded_failure}\n"));
                out.push_str(&format!("  result now:       {replayed}\n"));
            }
            _ => {}
        }
        out
    }
}

/// A unified line diff of two identity documents: the prompt on its own, then the rest as
/// pretty JSON. Empty when they are equal.
fn signature_diff(recorded: &Value, now: &Value) -> String {
    let prompt = |signature: &Value| {
        signature
            .get("prompt")
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    let rest = |signature: &Value| {
        let mut rest = signature.clone();
        if let Some(map) = rest.as_object_mut() {
            map.remove("prompt");
        }
        serde_json::to_string_pretty(&rest).unwrap_or_default() + "\n"
    };
    let mut out = String::new();
    let (old_prompt, new_prompt) = (prompt(recorded), prompt(now));
    if old_prompt != new_prompt {
        out.push_str("  prompt:\n");
        out.push_str(&line_diff(
            &old_prompt.unwrap_or_default(),
            &new_prompt.unwrap_or_default(),
        ));
    }
    let (old_rest, new_rest) = (rest(recorded), rest(now));
    if old_rest != new_rest {
        out.push_str("  options and context:\n");
        out.push_str(&line_diff(&old_rest, &new_rest));
    }
    out
}

fn line_diff(old: &str, new: &str) -> String {
    let (old, new) = (ensure_newline(old), ensure_newline(new));
    let diff = similar::TextDiff::from_lines(&old, &new);
    let mut out = String::new();
    for change in diff.iter_all_changes() {
        let sign = match change.tag() {
            similar::ChangeTag::Delete => "-",
            similar::ChangeTag::Insert => "+",
            similar::ChangeTag::Equal => " ",
        };
        out.push_str(&format!("    {sign} {}", change.value()));
        if change.missing_newline() {
            out.push('\n');
        }
    }
    out
}

fn ensure_newline(text: &str) -> String {
    if text.ends_with('\n') {
        text.to_owned()
    } else {
        format!("{text}\n")
    }
}

/// What a replaying attempt records as its script runs. Shared by the attempt's scopes
/// through [`RunSettings::replay`](super::context::RunSettings); the claims consult it.
#[derive(Debug)]
pub(crate) struct ReplayRecorder {
    recorded: Arc<RecordedRun>,
    state: Mutex<Recording>,
}

/// The run as recorded, shared by the replays of one check.
#[derive(Debug)]
struct RecordedRun {
    /// The run's own steps (any state), by step name, with their numbers.
    steps: HashMap<String, (usize, StepRecord)>,
    /// The output tokens the run spent on each of its steps (a child workflow step's include
    /// its child's; copies a fork brought are not spent), by step id: a replayed step adds its
    /// cost to `budget.spent()`, as running it had.
    costs: HashMap<String, u64>,
}

impl RecordedRun {
    fn new(
        run_id: &str,
        steps: &[StepRecord],
        ledger: &[LedgerEntry],
        owners: &LedgerOwners<'_>,
    ) -> Self {
        let mut costs: HashMap<String, u64> = HashMap::new();
        for entry in ledger.iter().filter(|entry| entry.source_type.is_spent()) {
            if let Some(step_id) = owners.owner(run_id, entry) {
                let cost = costs.entry(step_id.to_owned()).or_default();
                *cost = cost.saturating_add(entry.output_tokens);
            }
        }
        Self {
            costs,
            steps: steps
                .iter()
                .enumerate()
                .map(|(index, step)| (step.checkpoint_name.clone(), (index + 1, step.clone())))
                .collect(),
        }
    }

    fn step(&self, checkpoint: &str) -> Option<RecordedStep> {
        self.steps
            .get(checkpoint)
            .map(|(number, step)| RecordedStep::of(*number, step))
    }

    /// The completed steps, in the order the run reached them.
    fn completed(&self) -> Vec<RecordedStep> {
        let mut completed: Vec<RecordedStep> = self
            .steps
            .values()
            .filter(|(_, step)| step.state == State::Completed)
            .map(|(number, step)| RecordedStep::of(*number, step))
            .collect();
        completed.sort_by_key(|step| step.number);
        completed
    }
}

#[derive(Debug, Default)]
struct Recording {
    /// Step names in the order the script made the calls (the determinism check compares them).
    calls: Vec<String>,
    sites: HashMap<String, CallSite>,
    replayed: usize,
    stop: Option<Stop>,
    /// The completed steps the root run did not reach; `None` when its script never started.
    unreached: Option<Vec<StepRecord>>,
}

#[derive(Debug, Clone)]
enum Stop {
    /// A call the recording cannot answer.
    Diverged {
        kind: StepKind,
        checkpoint: String,
        signature: String,
    },
    /// The run recorded this step without getting past it.
    EndOfRecording(String),
}

impl ReplayRecorder {
    fn new(recorded: Arc<RecordedRun>) -> Self {
        Self {
            recorded,
            state: Mutex::new(Recording::default()),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut Recording) -> T) -> T {
        match self.state.lock() {
            Ok(mut state) => f(&mut state),
            Err(poisoned) => f(&mut poisoned.into_inner()),
        }
    }

    /// The script made a call named `checkpoint`, at `site`.
    pub fn named(&self, checkpoint: &str, site: Option<CallSite>) {
        self.with(|state| {
            if let Some(site) = site {
                state.sites.insert(checkpoint.to_owned(), site);
            }
            state.calls.push(checkpoint.to_owned());
        });
    }

    /// A call the recording answers with the step `step_id` (its result, or its failure):
    /// what it cost the run.
    pub fn replayed(&self, step_id: &str) -> u64 {
        self.with(|state| state.replayed += 1);
        self.recorded.costs.get(step_id).copied().unwrap_or(0)
    }

    /// A call the recording does not answer: the replay stops here (the first stop is the one
    /// reported). A step recorded with the same input that the run did not get past is the
    /// end of the recording; anything else diverges.
    pub fn stop(&self, kind: &StepKind, checkpoint: &str, signature: &str) {
        let stop = match self.recorded.steps.get(checkpoint) {
            Some((_, step))
                if step.state != State::Completed && step.input_signature_json == signature =>
            {
                Stop::EndOfRecording(checkpoint.to_owned())
            }
            _ => Stop::Diverged {
                kind: kind.clone(),
                checkpoint: checkpoint.to_owned(),
                signature: signature.to_owned(),
            },
        };
        self.with(|state| {
            state.stop.get_or_insert(stop);
        });
    }

    /// The completed steps the root run did not reach, when its script ended.
    pub fn ended(&self, unreached: Vec<StepRecord>) {
        self.with(|state| state.unreached = Some(unreached));
    }

    /// The report, given how the script ended and the run as recorded.
    fn report(&self, run: &RunRecord, outcome: Result<Value, Error>) -> ReplayReport {
        let recorded = &self.recorded;
        let (stop, unreached, replayed, sites) = self.with(|state| {
            (
                state.stop.clone(),
                state.unreached.take(),
                state.replayed,
                std::mem::take(&mut state.sites),
            )
        });
        let unreached: Vec<RecordedStep> = match unreached {
            Some(steps) => steps
                .iter()
                .filter_map(|step| recorded.step(&step.checkpoint_name))
                .collect(),
            None => recorded.completed(),
        };
        let mut report = ReplayReport {
            run_id: run.run_id.clone(),
            verdict: ReplayVerdict::Identical,
            replayed,
            stopped_at: None,
            beyond_recording: None,
            unreached,
            result: None,
            error: None,
        };
        match stop {
            Some(Stop::Diverged {
                kind,
                checkpoint,
                signature,
            }) => {
                let call = ReplayCall {
                    kind,
                    site: sites.get(&checkpoint).cloned(),
                    checkpoint_name: checkpoint.clone(),
                    signature: serde_json::from_str(&signature).unwrap_or(Value::String(signature)),
                };
                let same_name = recorded.step(&checkpoint);
                if same_name.is_none()
                    && run.state != State::Completed
                    && report.unreached.is_empty()
                {
                    // Every step the unfinished run recorded replayed: the script goes on
                    // where the run had not got yet.
                    report.beyond_recording = Some(call);
                    return report;
                }
                let reason = if same_name.is_some() {
                    DivergenceReason::ChangedInput
                } else {
                    DivergenceReason::NewCall
                };
                let recorded = same_name.or_else(|| report.unreached.first().cloned());
                report.verdict = ReplayVerdict::Diverged(Box::new(Divergence {
                    reason,
                    call: Some(call),
                    recorded,
                }));
            }
            Some(Stop::EndOfRecording(checkpoint)) => {
                report.stopped_at = recorded.step(&checkpoint);
                // Steps the run reached after this one ran beside it (parallel branches the
                // stop cut short): not reaching them is no divergence.
                let stop_number = report.stopped_at.as_ref().map_or(0, |step| step.number);
                if let Some(first) = report
                    .unreached
                    .iter()
                    .find(|step| step.number < stop_number)
                    .cloned()
                {
                    report.verdict = unreached_verdict(first);
                }
            }
            None => {
                match &outcome {
                    Ok(result) => report.result = Some(result.clone()),
                    Err(error) => report.error = Some(error.to_string()),
                }
                if let Some(first) = report.unreached.first().cloned() {
                    report.verdict = unreached_verdict(first);
                } else if let Some(reason) = outcome_difference(run, &outcome) {
                    report.verdict = ReplayVerdict::Diverged(Box::new(Divergence {
                        reason,
                        call: None,
                        recorded: None,
                    }));
                }
            }
        }
        report
    }

    /// The calls the script made, in order, up to the one the replay stopped at: calls made
    /// after it depend on when the stop reached the script, not on the script.
    fn calls(&self) -> Vec<String> {
        self.with(|state| {
            let stopped_at = match &state.stop {
                Some(Stop::Diverged { checkpoint, .. } | Stop::EndOfRecording(checkpoint)) => {
                    state.calls.iter().position(|call| call == checkpoint)
                }
                None => None,
            };
            let end = stopped_at.map_or(state.calls.len(), |index| index + 1);
            state.calls[..end].to_vec()
        })
    }
}

/// How a script that ran to its end ended otherwise than the run: another result, a failure
/// where the run completed, or a completion where it failed.
fn outcome_difference(run: &RunRecord, outcome: &Result<Value, Error>) -> Option<DivergenceReason> {
    match (&run.state, outcome) {
        (State::Completed, Ok(result)) => {
            let stored = run.result()?;
            (stored != result).then(|| DivergenceReason::ResultDiffers {
                recorded: stored.clone(),
                replayed: result.clone(),
            })
        }
        (State::Completed, Err(error)) => Some(DivergenceReason::Failed {
            message: error.to_string(),
        }),
        (State::Failed, Ok(result)) => Some(DivergenceReason::Completed {
            recorded_failure: run
                .failure_reason
                .as_ref()
                .map(|reason| Error::from_failure_reason(reason).to_string())
                .unwrap_or_default(),
            replayed: result.clone(),
        }),
        _ => None,
    }
}

fn unreached_verdict(first: RecordedStep) -> ReplayVerdict {
    ReplayVerdict::Diverged(Box::new(Divergence {
        reason: DivergenceReason::StepsUnreached,
        call: None,
        recorded: Some(first),
    }))
}

impl Engine {
    /// Evaluates a run's script (or `options.source`) against the run's recorded steps, with
    /// **no provider call and no write** to the store, twice, and reports whether it replays
    /// the run: identical, the first divergence (the call the script makes now beside the
    /// recorded one, see [`Divergence::describe`]), or non-deterministic (the two replays
    /// made different calls). Any run can be replayed, finished or not, even while another
    /// process executes it (its steps are read once). A child run is refused: replay its root.
    pub async fn replay(
        &self,
        run_id: &str,
        options: ReplayOptions,
    ) -> Result<ReplayReport, Error> {
        self.shared.check_executes()?;
        let run = self.get_root_run(run_id, "replay", "").await?;
        let source = self.source_or_stored(options.source, &run).await?;
        let steps = self.shared.store.load_steps(run_id).await?;
        // What each step cost, so `budget.spent()` grows as it did in an attempt that ran
        // from the top.
        let ledger = self.shared.store.ledger_entries(run_id).await?;
        let parents = self.child_runs(&run).await?;
        let owners = LedgerOwners::new(&steps, &parents);

        // The settings a resume would use, read from the real store (the cwd of a run smol-wf
        // started is recorded in its events), so the copy names its steps the same way.
        let (settings, _) = self.shared.settings(&run, None).await?;
        let mut copy = run.clone();
        copy.workflow.cwd = settings.cwd;
        copy.workflow.model_map = settings.model_map;
        copy.workflow.provider = Some(settings.provider);
        // Two independent evaluations, side by side: the check costs a core, not the time of
        // another replay.
        let recorded = Arc::new(RecordedRun::new(run_id, &steps, &ledger, &owners));
        let (first, second) = tokio::join!(
            self.replay_once(&copy, &steps, &recorded, &source),
            self.replay_once(&copy, &steps, &recorded, &source)
        );
        let (first, second) = (first?, second?);
        let (mut report, first_calls) = first;
        let (other, second_calls) = second;
        let ending = |report: &ReplayReport| match (&report.result, &report.error) {
            (Some(result), _) => format!("result {result}"),
            (None, Some(error)) => format!("failure {error}"),
            (None, None) => "a stop".to_owned(),
        };
        if first_calls != second_calls {
            let index = first_calls
                .iter()
                .zip(&second_calls)
                .position(|(a, b)| a != b)
                .unwrap_or_else(|| first_calls.len().min(second_calls.len()));
            report.verdict = ReplayVerdict::NonDeterministic {
                index,
                first: first_calls.get(index).cloned(),
                second: second_calls.get(index).cloned(),
            };
        } else if (&report.result, &report.error) != (&other.result, &other.error) {
            report.verdict = ReplayVerdict::NonDeterministic {
                index: first_calls.len(),
                first: Some(ending(&report)),
                second: Some(ending(&other)),
            };
        }
        report.run_id = run.run_id;
        Ok(report)
    }

    /// One replay on a fresh in-memory copy of the run; the report and the calls in order.
    async fn replay_once(
        &self,
        run: &RunRecord,
        steps: &[StepRecord],
        recorded: &Arc<RecordedRun>,
        source: &WorkflowSource,
    ) -> Result<(ReplayReport, Vec<String>), Error> {
        let recorder = Arc::new(ReplayRecorder::new(Arc::clone(recorded)));
        let shared = Arc::new(self.shared.replica(Arc::new(MemoryStore::new())));
        let mut new_run = NewRun::new(
            crate::store::ClaimScope::Local,
            &shared.owner_id,
            run.workflow.clone(),
            run.args.clone(),
            shared.clock.now_ms(),
        );
        new_run.task_id = run.task_id.clone();
        new_run.run_id = run.run_id.clone();
        new_run.budget_total = run.budget_total;
        // Every step as recorded: completed ones replay, failed ones answer with their failure,
        // the others end the recording (see `RunScope::claim`).
        new_run.steps = steps.to_vec();
        let created = shared.store.create_run(new_run).await?;
        let overrides = ResumeOptions {
            replay: Some(Arc::clone(&recorder)),
            ..ResumeOptions::default()
        };
        let outcome = match shared
            .launch(created.run, source.clone(), Some(overrides), false)
            .await
        {
            Ok(handle) => handle.join().await.map(|output| output.result),
            Err(error) => Err(error),
        };
        // A failure of the replay itself (the store, the engine), not of the script, is the
        // caller's error; the script's own failures are part of the report.
        if let Err(error) = &outcome {
            use crate::ErrorKind::{Busy, Internal, InvalidState, NotFound, Store};
            if matches!(
                error.kind(),
                Store | Internal | Busy | NotFound | InvalidState
            ) {
                return Err(outcome.err().unwrap_or(Error::Cancelled));
            }
        }
        let calls = recorder.calls();
        Ok((recorder.report(run, outcome), calls))
    }
}

impl EngineShared {
    /// This engine's configuration over another store, with no event sinks: what an offline
    /// replay runs on.
    fn replica(&self, store: Arc<dyn DurableStore>) -> EngineShared {
        EngineShared {
            store,
            scripts: Arc::clone(&self.scripts),
            providers: self.providers.clone(),
            default_provider: self.default_provider.clone(),
            model_map: self.model_map.clone(),
            limits: self.limits.clone(),
            lease_ttl: self.lease_ttl,
            clock: Arc::clone(&self.clock),
            event_sinks: Vec::new(),
            session_sink: None,
            named_workflows: self.named_workflows.clone(),
            workflows_by_path: self.workflows_by_path.clone(),
            owner_id: self.owner_id.clone(),
            live: Mutex::new(HashMap::new()),
            owner_registered: tokio::sync::OnceCell::new(),
            scripts_by_hash: Mutex::new(HashMap::new()),
            default_agent_retry: self.default_agent_retry,
            executes: true,
            signal_bell: tokio::sync::Notify::new(),
        }
    }
}
