-- Webhooks (issue 17, point 5): agentq POSTs a signed event when a session waits for approval
-- and when it ends, to the run's webhook_url (kept in sessions.request) or else its org's.
--
-- The outbox is written by a trigger on session_events: every transition already inserts its
-- events in the same transaction as the change, so the delivery exists exactly when the
-- transition committed, and no transition's statement had to change. The worker's sender
-- claims due deliveries, records each attempt and retries on a schedule.

-- An org's default webhook URL, and the secret every message to it (or to a run's own URL) is
-- signed with (`whsec_` + base64 of 32 random bytes; made when first needed).
ALTER TABLE orgs
    ADD COLUMN webhook_url text,
    ADD COLUMN webhook_secret text;

-- One message per announced event; its webhook-id is derived from (session_id, event_seq).
CREATE TABLE webhook_deliveries (
    session_id       uuid NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    event_seq        bigint NOT NULL,
    event_type       text NOT NULL CHECK (event_type IN ('session.awaiting_approval',
                         'session.completed', 'session.failed', 'session.cancelled')),
    org_id           uuid NOT NULL,
    url              text NOT NULL,
    -- The body, fixed at the first attempt so every retry sends (and signs) the same bytes.
    payload          jsonb,
    state            text NOT NULL DEFAULT 'pending'
                     CHECK (state IN ('pending', 'delivered', 'failed')),
    -- Attempts claimed so far; the claim takes the next number, and only the attempt holding
    -- the latest number may settle the delivery.
    attempts         integer NOT NULL DEFAULT 0,
    -- When the next attempt is due (while pending); a claim pushes it out by its lease.
    next_attempt_at  timestamptz NOT NULL,
    created_at       timestamptz NOT NULL,
    finished_at      timestamptz,
    PRIMARY KEY (session_id, event_seq)
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at)
    WHERE state = 'pending';

CREATE TABLE webhook_attempts (
    session_id   uuid NOT NULL,
    event_seq    bigint NOT NULL,
    attempt      integer NOT NULL CHECK (attempt > 0),
    at           timestamptz NOT NULL,
    -- The receiver's answer, or why there was none.
    status_code  integer,
    error        text,
    duration_ms  bigint NOT NULL,
    PRIMARY KEY (session_id, event_seq, attempt),
    FOREIGN KEY (session_id, event_seq)
        REFERENCES webhook_deliveries (session_id, event_seq) ON DELETE CASCADE
);

-- The outbox: a `done` event, or a `status` event saying awaiting_approval, of a session with a
-- webhook URL (its run's, else its org's) gets a delivery, due at once.
CREATE FUNCTION agentq_webhook_outbox() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO webhook_deliveries (session_id, event_seq, event_type, org_id, url,
                                    next_attempt_at, created_at)
    SELECT s.id, NEW.seq,
           CASE WHEN NEW.kind = 'done' THEN 'session.' || (NEW.data ->> 'status')
                ELSE 'session.awaiting_approval' END,
           s.org_id, coalesce(s.request ->> 'webhook_url', o.webhook_url),
           NEW.created_at, NEW.created_at
    FROM sessions s JOIN orgs o ON o.id = s.org_id
    WHERE s.id = NEW.session_id
      AND coalesce(s.request ->> 'webhook_url', o.webhook_url) IS NOT NULL
    ON CONFLICT DO NOTHING;
    RETURN NULL;
END
$$;

CREATE TRIGGER session_events_webhooks AFTER INSERT ON session_events
    FOR EACH ROW
    WHEN ((NEW.kind = 'done'
           AND NEW.data ->> 'status' IN ('completed', 'failed', 'cancelled'))
          OR (NEW.kind = 'status' AND NEW.data ->> 'status' = 'awaiting_approval'))
    EXECUTE FUNCTION agentq_webhook_outbox();
