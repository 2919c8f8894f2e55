-- The hot path's rows carry no foreign keys to their runs and steps: a recorded step and its
-- ledger rows are written under the attempt's fence (the run exists and is running), and a
-- task's rows are deleted together, children first. The checks cost a lookup and a share lock
-- on the run's row per key per write: about half of a recorded step's server time
-- (docs/performance.md). What is given up: a deposed worker's late claim of a step (not fenced
-- by its attempt) on a run deleted meanwhile is stored as a row no run owns and no read reaches,
-- where the key refused it.
ALTER TABLE sw_budget_ledger
  DROP CONSTRAINT IF EXISTS sw_budget_ledger_step_id_fkey,
  DROP CONSTRAINT IF EXISTS sw_budget_ledger_run_id_fkey,
  DROP CONSTRAINT IF EXISTS sw_budget_ledger_root_run_id_fkey;
ALTER TABLE sw_workflow_steps
  DROP CONSTRAINT IF EXISTS sw_workflow_steps_run_id_fkey,
  DROP CONSTRAINT IF EXISTS sw_workflow_steps_root_run_id_fkey;
-- One index fewer on every ledger insert: a root's rows are found through the unique
-- (root_run_id, source_type, source_id) index, and `ledger_entries` sorts them itself.
DROP INDEX IF EXISTS sw_budget_ledger_root_idx;
