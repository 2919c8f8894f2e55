//! [`Engine`]: the one handle host applications hold, and everything behind it.
//!
//! The files follow a run's path, each using only those after it:
//! [`handle`](Engine) (the public operations) → `claiming` (take the task, spawn the attempt;
//! `owners` says whether a previous owner is gone) → `attempt` (one attempt from start to end,
//! with `heartbeat` and `event_writer` beside the script) → `host` (each host call of the
//! script as a durable step: `agent`, `sleep`, `child`, all claiming through `claim`) → `steps`
//! (one claim round, the fenced completion) → [`decide`](crate::decide). `context` is the
//! state one attempt shares;
//! `runner` adds submit and the worker loop; `builder`, `shared`, `options`, `run_handle` and
//! `usage` hold the types around them.

mod attempt;
mod builder;
mod claiming;
mod context;
mod event_writer;
mod follow;
mod fork;
mod handle;
mod heartbeat;
mod host;
mod mailbox;
mod options;
mod owners;
mod replay;
mod run_handle;
mod runner;
mod shared;
mod signals;
pub mod steps;
mod usage;

pub use builder::EngineBuilder;
pub use fork::{ForkOptions, ForkPoint};
pub use handle::Engine;
pub use options::{ResumeOptions, RunOutput, RunRequest, RunStatus, TokenUsage};
pub use replay::{
    Divergence, DivergenceReason, RecordedStep, ReplayCall, ReplayOptions, ReplayReport,
    ReplayVerdict,
};
pub use run_handle::RunHandle;
pub use runner::{SubmitOptions, SubmittedRun, Worker, WorkerOptions, WorkerReport};
