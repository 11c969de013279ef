CREATE INDEX sessions_org_created ON sessions (org_id, created_at DESC);
DROP INDEX sessions_org_listing;
DROP FUNCTION agentq_totals_json(uuid);
DROP TABLE session_events;
ALTER TABLE sessions DROP COLUMN event_seq;
ALTER TABLE sessions DROP COLUMN traceparent;
