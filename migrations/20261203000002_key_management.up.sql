-- Keys people can tell apart and retire: a name, an optional expiry, and when each was last
-- used (set when an API process verifies it, so within AGENTQ_AUTH_CACHE_SECS).
ALTER TABLE api_keys
    ADD COLUMN name text,
    ADD COLUMN expires_at timestamptz,
    ADD COLUMN last_used_at timestamptz;
CREATE INDEX api_keys_org ON api_keys (org_id, created_at);
