-- Signals: each run's mailbox. `seq` orders it (oldest first) and is never reused.
CREATE TABLE sw_workflow_signals (
  seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  signal_id TEXT NOT NULL UNIQUE,
  run_id TEXT NOT NULL REFERENCES sw_workflow_runs(run_id),
  root_run_id TEXT NOT NULL,
  name TEXT NOT NULL,
  payload_json JSONB NOT NULL,
  idempotency_key TEXT,
  state TEXT NOT NULL,
  step_id TEXT,
  reason_json JSONB,
  created_at BIGINT NOT NULL,
  updated_at BIGINT NOT NULL,
  UNIQUE (run_id, idempotency_key)
);

-- A wait looks for the oldest pending signal of its run with one of its names.
CREATE INDEX sw_signals_pending_idx ON sw_workflow_signals (run_id, name, seq)
  WHERE state = 'pending';
-- `waits` lists the wait steps that have not completed.
CREATE INDEX sw_steps_open_waits_idx ON sw_workflow_steps (created_at)
  WHERE step_kind = 'wait' AND state <> 'completed';
