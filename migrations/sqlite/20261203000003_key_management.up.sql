-- Keys people can tell apart and retire: a name, an optional expiry, and when each was last
-- used (set when an API process verifies it, so within AGENTQ_AUTH_CACHE_SECS). Times in
-- microseconds since the epoch, as everywhere in this schema.
ALTER TABLE api_keys ADD COLUMN name TEXT;
ALTER TABLE api_keys ADD COLUMN expires_at INTEGER;
ALTER TABLE api_keys ADD COLUMN last_used_at INTEGER;
CREATE INDEX api_keys_org ON api_keys (org_id, created_at);
