-- Webhooks, as on Postgres (migrations/20261203000004_webhooks.up.sql): an org's default URL
-- and signing secret, the outbox written by a trigger on session_events in the transaction of
-- the transition itself, and every attempt. Times in microseconds since the epoch.

ALTER TABLE orgs ADD COLUMN webhook_url TEXT;
ALTER TABLE orgs ADD COLUMN webhook_secret TEXT;

CREATE TABLE webhook_deliveries (
    session_id       BLOB NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    event_seq        INTEGER NOT NULL,
    event_type       TEXT NOT NULL CHECK (event_type IN ('session.awaiting_approval',
                         'session.completed', 'session.failed', 'session.cancelled')),
    org_id           BLOB NOT NULL,
    url              TEXT NOT NULL,
    payload          TEXT,
    state            TEXT NOT NULL DEFAULT 'pending'
                     CHECK (state IN ('pending', 'delivered', 'failed')),
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  INTEGER NOT NULL,
    created_at       INTEGER NOT NULL,
    finished_at      INTEGER,
    PRIMARY KEY (session_id, event_seq)
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at)
    WHERE state = 'pending';

CREATE TABLE webhook_attempts (
    session_id   BLOB NOT NULL,
    event_seq    INTEGER NOT NULL,
    attempt      INTEGER NOT NULL CHECK (attempt > 0),
    at           INTEGER NOT NULL,
    status_code  INTEGER,
    error        TEXT,
    duration_ms  INTEGER NOT NULL,
    PRIMARY KEY (session_id, event_seq, attempt),
    FOREIGN KEY (session_id, event_seq)
        REFERENCES webhook_deliveries (session_id, event_seq) ON DELETE CASCADE
);

CREATE TRIGGER session_events_webhooks AFTER INSERT ON session_events
WHEN (NEW.kind = 'done'
      AND json_extract(NEW.data, '$.status') IN ('completed', 'failed', 'cancelled'))
  OR (NEW.kind = 'status' AND json_extract(NEW.data, '$.status') = 'awaiting_approval')
BEGIN
    INSERT OR IGNORE INTO webhook_deliveries (session_id, event_seq, event_type, org_id, url,
                                              next_attempt_at, created_at)
    SELECT s.id, NEW.seq,
           CASE WHEN NEW.kind = 'done' THEN 'session.' || json_extract(NEW.data, '$.status')
                ELSE 'session.awaiting_approval' END,
           s.org_id, coalesce(json_extract(s.request, '$.webhook_url'), o.webhook_url),
           NEW.created_at, NEW.created_at
    FROM sessions s JOIN orgs o ON o.id = s.org_id
    WHERE s.id = NEW.session_id
      AND coalesce(json_extract(s.request, '$.webhook_url'), o.webhook_url) IS NOT NULL;
END;
