-- introduced_version: smol-durable 0.2.0
-- The write path of a step (docs/performance.md). Events are a log, not state: an event may
-- name a step whose row is written later (an agent call's claim is deferred to its
-- completion), so `step_id` no longer references sw_workflow_steps. The table is rebuilt (SQLite cannot drop a constraint) with
-- its rowids, which number the events (`seq`).
CREATE TABLE sw_workflow_events_6 (
  event_id TEXT PRIMARY KEY,
  run_id TEXT NOT NULL REFERENCES sw_workflow_runs(run_id),
  attempt_id TEXT REFERENCES sw_workflow_attempts(attempt_id),
  step_id TEXT,
  event_type TEXT NOT NULL,
  payload_json TEXT NOT NULL CHECK (json_valid(payload_json)),
  created_at INTEGER NOT NULL,
  root_run_id TEXT
);
INSERT INTO sw_workflow_events_6 (rowid, event_id, run_id, attempt_id, step_id, event_type,
  payload_json, created_at, root_run_id)
  SELECT rowid, event_id, run_id, attempt_id, step_id, event_type, payload_json, created_at,
  root_run_id FROM sw_workflow_events;
DROP TABLE sw_workflow_events;
ALTER TABLE sw_workflow_events_6 RENAME TO sw_workflow_events;
CREATE INDEX sw_events_run_created_idx ON sw_workflow_events (run_id, created_at);
CREATE INDEX sw_events_root_idx ON sw_workflow_events (root_run_id);

-- Indexes no query reads, each another b-tree written by every step: events by step, steps by
-- signature (a step is found by its checkpoint), ledger rows by root (the unique key starts
-- with the root run).
DROP INDEX IF EXISTS sw_steps_run_signature_idx;
DROP INDEX IF EXISTS sw_budget_ledger_root_idx;
