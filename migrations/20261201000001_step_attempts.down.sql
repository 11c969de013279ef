ALTER TABLE sessions DROP COLUMN step_attempts;
