-- An org's own API rate limit (requests per second, burst), overriding AGENTQ_RATE_LIMIT_PER_SEC
-- and AGENTQ_RATE_LIMIT_BURST; both NULL for the defaults.
ALTER TABLE orgs
    ADD COLUMN rate_limit_per_sec integer CHECK (rate_limit_per_sec > 0),
    ADD COLUMN rate_limit_burst integer CHECK (rate_limit_burst > 0),
    ADD CONSTRAINT orgs_rate_limit_whole CHECK ((rate_limit_per_sec IS NULL) = (rate_limit_burst IS NULL));
