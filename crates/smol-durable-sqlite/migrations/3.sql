-- introduced_version: smol-wf 0.3.4
-- Newest-first history listings walk this index instead of sorting every run.

CREATE INDEX IF NOT EXISTS sw_runs_created_idx ON sw_workflow_runs (created_at DESC, run_id);
