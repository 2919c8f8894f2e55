-- introduced_version: smol-durable 0.2.0
-- Signals: each run's mailbox. `seq` orders it (oldest first) and is never reused.
CREATE TABLE IF NOT EXISTS sw_workflow_signals (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  signal_id TEXT NOT NULL UNIQUE,
  run_id TEXT NOT NULL REFERENCES sw_workflow_runs(run_id),
  root_run_id TEXT NOT NULL,
  name TEXT NOT NULL,
  payload_json TEXT NOT NULL CHECK (json_valid(payload_json)),
  idempotency_key TEXT,
  state TEXT NOT NULL,
  step_id TEXT,
  reason_json TEXT CHECK (reason_json IS NULL OR json_valid(reason_json)),
  created_at INTEGER NOT NULL,
  updated_at INTEGER NOT NULL,
  UNIQUE (run_id, idempotency_key)
);

-- A wait looks for the oldest pending signal of its run with one of its names.
CREATE INDEX IF NOT EXISTS sw_signals_pending_idx ON sw_workflow_signals (run_id, state, name, seq);
-- `waits` lists the wait steps that have not completed.
CREATE INDEX IF NOT EXISTS sw_steps_open_waits_idx ON sw_workflow_steps (state, created_at)
  WHERE step_kind = 'wait';
