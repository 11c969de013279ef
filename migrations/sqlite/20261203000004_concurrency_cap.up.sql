-- no-transaction
-- A cap on each org's active sessions (issue 17): a new status, `queued`, and the cap a session
-- was created under. SQLite cannot change a CHECK constraint in place, so the sessions table is
-- rebuilt (SQLite's documented procedure: foreign keys off, copy, drop, rename, one
-- transaction). The tables that point at sessions keep their rows and point at the new table.
PRAGMA foreign_keys = OFF;
BEGIN IMMEDIATE;
CREATE TABLE sessions_new (
    id                   BLOB PRIMARY KEY,
    org_id               BLOB NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    status               TEXT NOT NULL DEFAULT 'pending'
                         CHECK (status IN ('queued', 'pending', 'running', 'awaiting_approval',
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
    updated_at           INTEGER NOT NULL,
    -- The cap the session was created under (NULL: none). A queued session starts when its org
    -- has fewer active sessions than this.
    max_active           INTEGER CHECK (max_active > 0)
);
INSERT INTO sessions_new (
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
ALTER TABLE sessions_new RENAME TO sessions;
CREATE INDEX sessions_org_listing ON sessions (org_id, created_at DESC, id DESC);
CREATE INDEX sessions_unfinished ON sessions (status)
    WHERE status IN ('queued', 'pending', 'running', 'awaiting_approval');
-- An org's active and queued sessions, for the count under the cap.
CREATE INDEX sessions_org_active ON sessions (org_id, status)
    WHERE status IN ('queued', 'pending', 'running', 'awaiting_approval');
-- An org's own cap, overriding AGENTQ_ORG_MAX_ACTIVE_SESSIONS: NULL for the default, 0 for none.
ALTER TABLE orgs ADD COLUMN max_active_sessions INTEGER CHECK (max_active_sessions >= 0);
COMMIT;
PRAGMA foreign_keys = ON;
