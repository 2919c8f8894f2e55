-- The logical schema of the SQLite store (smol-workflows' tables plus smol-durable's additions)
-- with native types: BIGINT epoch-millisecond times, JSONB documents. Runs inside the migration
-- transaction with search_path set to the store's schema.

CREATE TABLE sw_workflow_tasks (
  task_id TEXT PRIMARY KEY,
  task_name TEXT NOT NULL DEFAULT 'workflow.run' CHECK (task_name = 'workflow.run'),
  state TEXT NOT NULL CHECK (state IN ('pending', 'running', 'completed', 'failed', 'cancelled')),
  params_json JSONB NOT NULL,
  submitted_by_owner_id TEXT NOT NULL,
  claimed_by_owner_id TEXT,
  claim_scope TEXT NOT NULL DEFAULT 'local' CHECK (claim_scope IN ('local', 'runner')),
  idempotency_scope TEXT,
  idempotency_key TEXT,
  lease_expires_at BIGINT,
  not_before BIGINT,
  created_at BIGINT NOT NULL,
  updated_at BIGINT NOT NULL,
  completed_payload_json JSONB,
  failure_reason_json JSONB,
  max_attempts BIGINT NOT NULL DEFAULT 3 CHECK (max_attempts > 0)
);

CREATE TABLE sw_workflow_runs (
  run_id TEXT PRIMARY KEY,
  task_id TEXT NOT NULL REFERENCES sw_workflow_tasks(task_id),
  root_run_id TEXT NOT NULL REFERENCES sw_workflow_runs(run_id),
  parent_run_id TEXT REFERENCES sw_workflow_runs(run_id),
  parent_step_id TEXT,
  state TEXT NOT NULL CHECK (state IN ('pending', 'running', 'completed', 'failed', 'cancelled')),
  workflow_run_json JSONB NOT NULL,
  args_json JSONB NOT NULL,
  budget_total BIGINT,
  budget_spent BIGINT NOT NULL DEFAULT 0,
  cancel_requested_at BIGINT,
  created_at BIGINT NOT NULL,
  updated_at BIGINT NOT NULL,
  completed_payload_json JSONB,
  failure_reason_json JSONB
);

CREATE TABLE sw_workflow_attempts (
  attempt_id TEXT PRIMARY KEY,
  run_id TEXT NOT NULL REFERENCES sw_workflow_runs(run_id),
  task_id TEXT NOT NULL REFERENCES sw_workflow_tasks(task_id),
  attempt BIGINT NOT NULL CHECK (attempt > 0),
  worker_id TEXT NOT NULL,
  state TEXT NOT NULL CHECK (state IN ('running', 'completed', 'failed', 'cancelled')),
  lease_expires_at BIGINT,
  started_at BIGINT NOT NULL,
  completed_at BIGINT,
  failure_reason_json JSONB,
  UNIQUE (task_id, attempt)
);

CREATE TABLE sw_workflow_steps (
  step_id TEXT PRIMARY KEY,
  run_id TEXT NOT NULL REFERENCES sw_workflow_runs(run_id),
  root_run_id TEXT NOT NULL REFERENCES sw_workflow_runs(run_id),
  step_kind TEXT NOT NULL,
  checkpoint_name TEXT NOT NULL,
  input_signature_hash TEXT NOT NULL,
  input_signature_json TEXT NOT NULL,
  state TEXT NOT NULL CHECK (state IN ('pending', 'running', 'completed', 'failed', 'cancelled')),
  input_json JSONB NOT NULL,
  result_json JSONB,
  failure_reason_json JSONB,
  worker_id TEXT,
  lease_expires_at BIGINT,
  attempts BIGINT NOT NULL DEFAULT 0 CHECK (attempts >= 0),
  last_attempt_at BIGINT,
  created_at BIGINT NOT NULL,
  updated_at BIGINT NOT NULL,
  -- Set by a caller waiting on this step: finishing it then sends a notification. Only then,
  -- because every NOTIFY serializes commits on a database-wide lock.
  notify_on_finish BOOLEAN NOT NULL DEFAULT FALSE,
  UNIQUE (run_id, checkpoint_name)
);

CREATE TABLE sw_budget_ledger (
  budget_entry_id TEXT PRIMARY KEY,
  run_id TEXT NOT NULL REFERENCES sw_workflow_runs(run_id),
  root_run_id TEXT NOT NULL REFERENCES sw_workflow_runs(run_id),
  step_id TEXT REFERENCES sw_workflow_steps(step_id),
  source_type TEXT NOT NULL,
  source_id TEXT NOT NULL,
  output_tokens BIGINT NOT NULL DEFAULT 0 CHECK (output_tokens >= 0),
  usage_json JSONB,
  created_at BIGINT NOT NULL,
  UNIQUE (root_run_id, source_type, source_id)
);

-- seq orders a run's events; one writer per attempt appends them in order. Events are a log
-- written two per step: no foreign keys (each would cost a lookup per event), and
-- `delete_task` removes them by run like the rows they point at.
CREATE TABLE sw_workflow_events (
  seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  event_id TEXT NOT NULL UNIQUE,
  run_id TEXT NOT NULL,
  root_run_id TEXT NOT NULL,
  attempt_id TEXT,
  step_id TEXT,
  event_type TEXT NOT NULL,
  payload_json JSONB NOT NULL,
  created_at BIGINT NOT NULL
);

CREATE TABLE sw_workflow_owners (
  owner_id TEXT PRIMARY KEY,
  process_id BIGINT,
  hostname TEXT,
  started_at BIGINT NOT NULL,
  heartbeat_at BIGINT NOT NULL,
  state TEXT NOT NULL CHECK (state IN ('active', 'stale', 'closed'))
);

CREATE TABLE sw_workflow_scripts (
  script_hash TEXT PRIMARY KEY,
  source TEXT NOT NULL,
  created_at BIGINT NOT NULL
);

CREATE UNIQUE INDEX sw_tasks_idempotency_idx
  ON sw_workflow_tasks (idempotency_scope, idempotency_key)
  WHERE idempotency_scope IS NOT NULL AND idempotency_key IS NOT NULL;
-- Workers look for the oldest claimable runner task; finished tasks are not in this index.
CREATE INDEX sw_tasks_claim_idx ON sw_workflow_tasks (claim_scope, created_at, task_id)
  WHERE state IN ('pending', 'running');
CREATE INDEX sw_runs_task_idx ON sw_workflow_runs (task_id);
CREATE INDEX sw_runs_root_idx ON sw_workflow_runs (root_run_id, created_at);
CREATE INDEX sw_runs_parent_idx ON sw_workflow_runs (parent_run_id);
CREATE INDEX sw_runs_created_idx ON sw_workflow_runs (created_at DESC, run_id DESC);
CREATE INDEX sw_attempts_task_idx ON sw_workflow_attempts (task_id, attempt);
CREATE INDEX sw_steps_root_idx ON sw_workflow_steps (root_run_id, state);
CREATE INDEX sw_budget_ledger_root_idx ON sw_budget_ledger (root_run_id, created_at);
CREATE INDEX sw_budget_ledger_run_idx ON sw_budget_ledger (run_id);
CREATE INDEX sw_events_run_idx ON sw_workflow_events (run_id, seq);
CREATE INDEX sw_events_root_idx ON sw_workflow_events (root_run_id, seq);
