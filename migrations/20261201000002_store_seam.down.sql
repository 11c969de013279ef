DROP FUNCTION agentq_spend_json(uuid);
DROP FUNCTION agentq_steps_json(uuid);
DROP FUNCTION agentq_step_object(steps);
ALTER TABLE sessions DROP COLUMN repaired_at;
