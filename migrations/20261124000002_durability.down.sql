DROP TABLE idempotency_keys;
ALTER TABLE steps DROP COLUMN approved_at;
ALTER TABLE steps DROP COLUMN approved_by;
ALTER TABLE steps DROP COLUMN approval_reason;
ALTER TABLE steps DROP COLUMN approval;
ALTER TABLE sessions DROP COLUMN approval_expires_at;
ALTER TABLE sessions DROP COLUMN deadline_at;
