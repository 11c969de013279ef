ALTER TABLE orgs DROP COLUMN rate_limit_burst;
ALTER TABLE orgs DROP COLUMN rate_limit_per_sec;
