DROP FUNCTION agentq_promote_queued(uuid, integer);
DROP FUNCTION agentq_create_session(uuid, uuid, text, jsonb, integer, timestamptz, text, text,
                                    timestamptz, text, integer, boolean);
DROP INDEX sessions_org_active;
DROP INDEX sessions_unfinished;
CREATE INDEX sessions_unfinished ON sessions (status)
    WHERE status IN ('pending', 'running', 'awaiting_approval');
-- Queued sessions never started: they end cancelled, which the older schema knows.
UPDATE sessions SET status = 'cancelled' WHERE status = 'queued';
ALTER TABLE orgs DROP COLUMN max_active_sessions;
ALTER TABLE sessions DROP COLUMN max_active;
ALTER TABLE sessions DROP CONSTRAINT sessions_status_check;
ALTER TABLE sessions ADD CONSTRAINT sessions_status_check
    CHECK (status IN ('pending', 'running', 'awaiting_approval',
                      'completed', 'failed', 'cancelled'));
