-- introduced_version: smol-durable 0.1.0
-- smol-durable's first migration: additions only (plus one redundant index), no data is lost.

-- Child workflows are runs of the root's task, linked to the step that started them.
ALTER TABLE sw_workflow_runs ADD COLUMN parent_run_id TEXT REFERENCES sw_workflow_runs(run_id);
ALTER TABLE sw_workflow_runs ADD COLUMN parent_step_id TEXT;
-- Cross-process cancellation: the executing owner sees this at its next heartbeat.
ALTER TABLE sw_workflow_runs ADD COLUMN cancel_requested_at INTEGER;
-- Retry backoff and parked sleeps: a task is not claimed before this time.
ALTER TABLE sw_workflow_tasks ADD COLUMN not_before INTEGER;
-- Events of a whole run tree are read together.
ALTER TABLE sw_workflow_events ADD COLUMN root_run_id TEXT;

-- Script sources, content-addressed, so a run can resume without its file.
CREATE TABLE IF NOT EXISTS sw_workflow_scripts (
  script_hash TEXT PRIMARY KEY,
  source TEXT NOT NULL,
  created_at INTEGER NOT NULL
);

CREATE INDEX IF NOT EXISTS sw_runs_parent_idx ON sw_workflow_runs (parent_run_id);
CREATE INDEX IF NOT EXISTS sw_events_root_idx ON sw_workflow_events (root_run_id);
CREATE INDEX IF NOT EXISTS sw_tasks_claim_due_idx ON sw_workflow_tasks (claim_scope, state, not_before, created_at);

-- The UNIQUE (run_id, checkpoint_name) constraint already indexes exactly this; the duplicate
-- cost every step insert a page write. Dropping it loses nothing.
DROP INDEX IF EXISTS sw_steps_run_checkpoint_idx;
