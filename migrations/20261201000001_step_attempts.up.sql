-- Hardening (issue 12): how many deliveries of the session's current step took its lease. Reset
-- when the step advances or waits for a human; past AGENTQ_STEP_MAX_ATTEMPTS the session fails
-- step_retries_exhausted instead of repeating a step that fails the same way every time.
ALTER TABLE sessions ADD COLUMN step_attempts integer NOT NULL DEFAULT 0;
