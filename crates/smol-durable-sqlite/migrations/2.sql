-- introduced_version: smol-wf 0.1.0
-- Lift the step_kind allow-list (sleep steps came later). SQLite cannot drop a CHECK, so the
-- steps table is rebuilt; the ledger and events tables reference it and are rebuilt too so their
-- foreign keys follow the new table.

ALTER TABLE sw_workflow_steps RENAME TO sw_workflow_steps_before_2;
CREATE TABLE sw_workflow_steps (
  step_id TEXT PRIMARY KEY,
  run_id TEXT NOT NULL REFERENCES sw_workflow_runs(run_id),
  root_run_id TEXT NOT NULL REFERENCES sw_workflow_runs(run_id),
  step_kind TEXT NOT NULL,
  checkpoint_name TEXT NOT NULL,
  input_signature_hash TEXT NOT NULL,
  input_signature_json TEXT NOT NULL CHECK (json_valid(input_signature_json)),
  state TEXT NOT NULL CHECK (state IN ('pending', 'running', 'completed', 'failed', 'cancelled')),
  sequence INTEGER,
  workflow_scope TEXT,
  input_json TEXT NOT NULL CHECK (json_valid(input_json)),
  result_json TEXT CHECK (result_json IS NULL OR json_valid(result_json)),
  failure_reason_json TEXT CHECK (failure_reason_json IS NULL OR json_valid(failure_reason_json)),
  worker_id TEXT,
  lease_expires_at INTEGER,
  attempts INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
  last_attempt_at INTEGER,
  created_at INTEGER NOT NULL,
  updated_at INTEGER NOT NULL,
  UNIQUE (run_id, checkpoint_name)
);
INSERT INTO sw_workflow_steps SELECT * FROM sw_workflow_steps_before_2;

ALTER TABLE sw_budget_ledger RENAME TO sw_budget_ledger_before_2;
CREATE TABLE sw_budget_ledger (
  budget_entry_id TEXT PRIMARY KEY,
  run_id TEXT NOT NULL REFERENCES sw_workflow_runs(run_id),
  root_run_id TEXT NOT NULL REFERENCES sw_workflow_runs(run_id),
  step_id TEXT REFERENCES sw_workflow_steps(step_id),
  source_type TEXT NOT NULL,
  source_id TEXT NOT NULL,
  output_tokens INTEGER NOT NULL DEFAULT 0 CHECK (output_tokens >= 0),
  usage_json TEXT CHECK (usage_json IS NULL OR json_valid(usage_json)),
  created_at INTEGER NOT NULL,
  UNIQUE (root_run_id, source_type, source_id)
);
INSERT INTO sw_budget_ledger SELECT * FROM sw_budget_ledger_before_2;

ALTER TABLE sw_workflow_events RENAME TO sw_workflow_events_before_2;
CREATE TABLE sw_workflow_events (
  event_id TEXT PRIMARY KEY,
  run_id TEXT NOT NULL REFERENCES sw_workflow_runs(run_id),
  attempt_id TEXT REFERENCES sw_workflow_attempts(attempt_id),
  step_id TEXT REFERENCES sw_workflow_steps(step_id),
  event_type TEXT NOT NULL,
  payload_json TEXT NOT NULL CHECK (json_valid(payload_json)),
  created_at INTEGER NOT NULL
);
INSERT INTO sw_workflow_events SELECT * FROM sw_workflow_events_before_2;

DROP TABLE sw_workflow_events_before_2;
DROP TABLE sw_budget_ledger_before_2;
DROP TABLE sw_workflow_steps_before_2;

CREATE INDEX IF NOT EXISTS sw_steps_run_checkpoint_idx ON sw_workflow_steps (run_id, checkpoint_name);
CREATE INDEX IF NOT EXISTS sw_steps_run_signature_idx ON sw_workflow_steps (run_id, input_signature_hash);
CREATE INDEX IF NOT EXISTS sw_steps_root_idx ON sw_workflow_steps (root_run_id, created_at);
CREATE INDEX IF NOT EXISTS sw_budget_ledger_root_idx ON sw_budget_ledger (root_run_id, created_at);
CREATE INDEX IF NOT EXISTS sw_events_run_created_idx ON sw_workflow_events (run_id, created_at);
CREATE INDEX IF NOT EXISTS sw_events_step_created_idx ON sw_workflow_events (step_id, created_at);
