//! [`RunHandle`]: a run executing in this process.

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::options::RunOutput;
use crate::events::WorkflowEvent;
use crate::Error;

/// A run in progress.
#[derive(Debug)]
pub struct RunHandle {
    pub(super) run_id: String,
    pub(super) task_id: String,
    pub(super) cancel: CancellationToken,
    pub(super) events: Option<mpsc::UnboundedReceiver<WorkflowEvent>>,
    pub(super) join: JoinHandle<Result<RunOutput, Error>>,
}

impl RunHandle {
    /// The run.
    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    /// Its task.
    pub fn task_id(&self) -> &str {
        &self.task_id
    }

    /// The run's events, in order, from its start (once; later calls return `None`).
    pub fn events(&mut self) -> Option<mpsc::UnboundedReceiver<WorkflowEvent>> {
        self.events.take()
    }

    /// Cancels the run cooperatively: outstanding host calls reject with `workflow cancelled`
    /// and the run ends `cancelled` (resumable).
    pub fn cancel(&self) {
        self.cancel.cancel();
    }

    /// Waits for the run to end.
    pub async fn join(self) -> Result<RunOutput, Error> {
        // Events nobody took are not kept for a receiver that would be dropped unread.
        let Self { events, join, .. } = self;
        drop(events);
        match join.await {
            Ok(result) => result,
            Err(join_error) => Err(Error::internal(
                "the task running the attempt died",
                Some(Box::new(join_error)),
            )),
        }
    }
}
