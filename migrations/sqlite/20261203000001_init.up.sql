-- agentq on SQLite (`agentq dev`): the same tables as on Postgres (migrations/*.sql), in
-- SQLite's types. Ids are 16-byte blobs, times are microseconds since the Unix epoch (INTEGER, so
-- comparisons and arithmetic stay exact), JSON is text, and costs are decimal text (SQLite has
-- no exact decimal type; sums are made in Rust).

CREATE TABLE orgs (
    id          BLOB PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    created_at  INTEGER NOT NULL
);

CREATE TABLE api_keys (
    id          BLOB PRIMARY KEY,
    org_id      BLOB NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    key_hash    TEXT NOT NULL UNIQUE,
    key_prefix  TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    revoked_at  INTEGER
);

CREATE TABLE sessions (
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
CREATE INDEX sessions_org_listing ON sessions (org_id, created_at DESC, id DESC);
CREATE INDEX sessions_unfinished ON sessions (status)
    WHERE status IN ('pending', 'running', 'awaiting_approval');

CREATE TABLE steps (
    session_id        BLOB NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    step_index        INTEGER NOT NULL CHECK (step_index >= 0),
    thought           TEXT,
    llm_content       TEXT NOT NULL,
    actions           TEXT NOT NULL DEFAULT '[]',
    is_final          INTEGER NOT NULL,
    final_answer      TEXT,
    observations      TEXT NOT NULL DEFAULT '[]',
    calls_started     INTEGER NOT NULL DEFAULT 0,
    invalid_output    TEXT,
    approval_details  TEXT,
    approval          TEXT CHECK (approval IN ('approved', 'rejected')),
    approval_reason   TEXT,
    approved_by       BLOB REFERENCES api_keys (id) ON DELETE SET NULL,
    approved_at       INTEGER,
    started_at        INTEGER NOT NULL,
    decided_at        INTEGER NOT NULL,
    tool_started_at   INTEGER,
    finished_at       INTEGER,
    PRIMARY KEY (session_id, step_index)
);

CREATE TABLE llm_calls (
    id                     INTEGER PRIMARY KEY AUTOINCREMENT,
    session_id             BLOB NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    step_index             INTEGER NOT NULL,
    model                  TEXT NOT NULL,
    outcome                TEXT NOT NULL CHECK (outcome IN ('ok', 'error')),
    http_status            INTEGER,
    input_tokens           INTEGER NOT NULL DEFAULT 0,
    output_tokens          INTEGER NOT NULL DEFAULT 0,
    cache_read_tokens      INTEGER NOT NULL DEFAULT 0,
    cache_write_tokens     INTEGER NOT NULL DEFAULT 0,
    cache_write_1h_tokens  INTEGER NOT NULL DEFAULT 0,
    cost_usd               TEXT,
    duration_ms            INTEGER NOT NULL,
    error                  TEXT,
    created_at             INTEGER NOT NULL
);
CREATE INDEX llm_calls_session ON llm_calls (session_id, step_index);

CREATE TABLE idempotency_keys (
    org_id        BLOB NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    key           TEXT NOT NULL,
    request_hash  TEXT NOT NULL,
    session_id    BLOB NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    created_at    INTEGER NOT NULL,
    PRIMARY KEY (org_id, key)
);
CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at);

CREATE TABLE session_events (
    session_id  BLOB NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    seq         INTEGER NOT NULL CHECK (seq > 0),
    kind        TEXT NOT NULL CHECK (kind IN ('status', 'step', 'approval', 'done')),
    data        TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (session_id, seq)
);

-- Who runs the reconciler (Postgres uses an advisory lock): a row held by a live holder until
-- `until`, renewed while it lives.
CREATE TABLE leadership (
    name    TEXT PRIMARY KEY,
    holder  TEXT NOT NULL,
    until   INTEGER NOT NULL
);
