-- An org's own API rate limit (requests per second, burst), overriding AGENTQ_RATE_LIMIT_PER_SEC
-- and AGENTQ_RATE_LIMIT_BURST; both NULL for the defaults (the store sets both or neither).
ALTER TABLE orgs ADD COLUMN rate_limit_per_sec INTEGER CHECK (rate_limit_per_sec > 0);
ALTER TABLE orgs ADD COLUMN rate_limit_burst INTEGER CHECK (rate_limit_burst > 0);
