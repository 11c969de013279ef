-- no-transaction
-- Back to the sessions table without `queued` (queued sessions never started: they end
-- cancelled) and without the cap, rebuilt as the up migration was.
PRAGMA foreign_keys = OFF;
BEGIN IMMEDIATE;
UPDATE sessions SET status = 'cancelled' WHERE status = 'queued';
CREATE TABLE sessions_old (
    id                   BLOB PRIMARY KEY,
    org_id               BLOB NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    status               TEXT NOT NULL DEFAULT 'pending'
                         CHECK (status IN ('pending', 'running', 'awaiting_approval',
                                           'completed', 'failed', 'cancelled')),
    model                TEXT NOT NULL,
    request              TEXT NOT NULL,
    max_steps            INTEGER NOT NULL CHECK (max_steps BETWEEN 1 AND 50),
    next_step            INTEGER NOT NULL DEFAULT 0,
    final_answer         TEXT,
    error_code           TEXT,
    error_message        TEXT,
    cancel_requested     INTEGER NOT NULL DEFAULT 0,
    lease_owner          TEXT,
    lease_until          INTEGER,
    fence                INTEGER NOT NULL DEFAULT 0,
    version              INTEGER NOT NULL DEFAULT 0,
    step_attempts        INTEGER NOT NULL DEFAULT 0,
    -- The last event's number (session_events.seq).
    event_seq            INTEGER NOT NULL DEFAULT 0,
    deadline_at          INTEGER NOT NULL,
    approval_expires_at  INTEGER,
    repaired_at          INTEGER,
    traceparent          TEXT,
    created_at           INTEGER NOT NULL,
    updated_at           INTEGER NOT NULL
);
INSERT INTO sessions_old (
    id, org_id, status, model, request, max_steps, next_step, final_answer, error_code,
    error_message, cancel_requested, lease_owner, lease_until, fence, version, step_attempts,
    event_seq, deadline_at, approval_expires_at, repaired_at, traceparent, created_at,
    updated_at)
SELECT
    id, org_id, status, model, request, max_steps, next_step, final_answer, error_code,
    error_message, cancel_requested, lease_owner, lease_until, fence, version, step_attempts,
    event_seq, deadline_at, approval_expires_at, repaired_at, traceparent, created_at,
    updated_at
FROM sessions;
DROP TABLE sessions;
ALTER TABLE sessions_old RENAME TO sessions;
CREATE INDEX sessions_org_listing ON sessions (org_id, created_at DESC, id DESC);
CREATE INDEX sessions_unfinished ON sessions (status)
    WHERE status IN ('pending', 'running', 'awaiting_approval');
ALTER TABLE orgs DROP COLUMN max_active_sessions;
COMMIT;
PRAGMA foreign_keys = ON;
