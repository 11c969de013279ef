ALTER TABLE orgs
    DROP CONSTRAINT orgs_rate_limit_whole,
    DROP COLUMN rate_limit_burst,
    DROP COLUMN rate_limit_per_sec;
