-- The hot path's rows need no foreign keys to their runs and steps: a step and its ledger rows
-- are written under the attempt's fence (the run exists and is running), and a task's rows are
-- deleted together, children first. The checks cost a lookup and a share lock on the run's row
-- per key per write: about half of a recorded step's server time (docs/performance.md).
ALTER TABLE sw_budget_ledger
  DROP CONSTRAINT IF EXISTS sw_budget_ledger_step_id_fkey,
  DROP CONSTRAINT IF EXISTS sw_budget_ledger_run_id_fkey,
  DROP CONSTRAINT IF EXISTS sw_budget_ledger_root_run_id_fkey;
ALTER TABLE sw_workflow_steps
  DROP CONSTRAINT IF EXISTS sw_workflow_steps_run_id_fkey,
  DROP CONSTRAINT IF EXISTS sw_workflow_steps_root_run_id_fkey;
-- A root's ledger is read through the unique (root_run_id, source_type, source_id) index.
DROP INDEX IF EXISTS sw_budget_ledger_root_idx;
