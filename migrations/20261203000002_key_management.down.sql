DROP INDEX api_keys_org;
ALTER TABLE api_keys
    DROP COLUMN last_used_at,
    DROP COLUMN expires_at,
    DROP COLUMN name;
