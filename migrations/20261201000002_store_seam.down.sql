DROP INDEX sessions_unfinished;
CREATE INDEX sessions_unfinished ON sessions (updated_at)
    WHERE status IN ('pending', 'running', 'awaiting_approval');
ALTER TABLE steps RESET (fillfactor);
ALTER TABLE sessions RESET (fillfactor);
DROP FUNCTION agentq_spend_json(uuid);
DROP FUNCTION agentq_steps_json(uuid);
DROP FUNCTION agentq_step_object(steps);
ALTER TABLE sessions DROP COLUMN repaired_at;
