-- A cap on each org's active sessions (issue 17): over it a new session waits `queued` and is
-- started, oldest first, as the org's sessions end. The count and the insert happen under a lock
-- on the org's row, so the cap holds however many API processes create at once.

ALTER TABLE sessions DROP CONSTRAINT sessions_status_check;
ALTER TABLE sessions ADD CONSTRAINT sessions_status_check
    CHECK (status IN ('queued', 'pending', 'running', 'awaiting_approval',
                      'completed', 'failed', 'cancelled'));
-- The cap the session was created under (NULL: none). A queued session starts when its org has
-- fewer active sessions than this.
ALTER TABLE sessions ADD COLUMN max_active integer CHECK (max_active > 0);
-- An org's own cap, overriding AGENTQ_ORG_MAX_ACTIVE_SESSIONS: NULL for the default, 0 for none.
ALTER TABLE orgs ADD COLUMN max_active_sessions integer CHECK (max_active_sessions >= 0);

DROP INDEX sessions_unfinished;
CREATE INDEX sessions_unfinished ON sessions (status)
    WHERE status IN ('queued', 'pending', 'running', 'awaiting_approval');
-- An org's active and queued sessions, for the count under the cap.
CREATE INDEX sessions_org_active ON sessions (org_id, status)
    WHERE status IN ('queued', 'pending', 'running', 'awaiting_approval');

-- Creates a session with its first event, claiming its Idempotency-Key. With a cap, takes the
-- org's row lock first: each statement of a function sees what committed before it began, so
-- the count after the lock includes every session another create committed while this one
-- waited (one SQL statement could not: its snapshot is taken before the wait). Returns the new
-- session's status, 'busy' when it was refused for want of a slot (p_queue false), or NULL when
-- the key was already claimed (then nothing is created).
CREATE FUNCTION agentq_create_session(
    p_id uuid, p_org uuid, p_model text, p_request jsonb, p_max_steps integer,
    p_deadline timestamptz, p_key text, p_hash text, p_now timestamptz, p_traceparent text,
    p_max_active integer, p_queue boolean
) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    v_status text := 'pending';
BEGIN
    -- A repeat of a keyed request is answered with its session, busy or not.
    IF p_key IS NOT NULL
       AND EXISTS (SELECT 1 FROM idempotency_keys WHERE org_id = p_org AND key = p_key) THEN
        RETURN NULL;
    END IF;
    IF p_max_active IS NOT NULL THEN
        PERFORM 1 FROM orgs WHERE id = p_org FOR NO KEY UPDATE;
        IF EXISTS (SELECT 1 FROM sessions WHERE org_id = p_org AND status = 'queued')
           OR (SELECT count(*) FROM (
                   SELECT 1 FROM sessions
                   WHERE org_id = p_org AND status IN ('pending', 'running', 'awaiting_approval')
                   LIMIT p_max_active) active) >= p_max_active THEN
            IF NOT p_queue THEN
                RETURN 'busy';
            END IF;
            v_status := 'queued';
        END IF;
    END IF;
    INSERT INTO sessions (id, org_id, status, model, request, max_steps, deadline_at, created_at,
                          updated_at, event_seq, traceparent, max_active)
    VALUES (p_id, p_org, v_status, p_model, p_request, p_max_steps, p_deadline, p_now, p_now, 1,
            p_traceparent, p_max_active);
    INSERT INTO session_events (session_id, seq, kind, data, created_at)
    VALUES (p_id, 1, 'status', jsonb_build_object('status', v_status, 'error', NULL), p_now);
    IF p_key IS NOT NULL THEN
        -- The key points at the session, so it goes in after it; a concurrent request with the
        -- same key that claimed it first wins, and this session is taken back.
        INSERT INTO idempotency_keys (org_id, key, request_hash, session_id)
        VALUES (p_org, p_key, p_hash, p_id)
        ON CONFLICT (org_id, key) DO NOTHING;
        IF NOT FOUND THEN
            DELETE FROM sessions WHERE id = p_id;
            RETURN NULL;
        END IF;
    END IF;
    RETURN v_status;
END
$$;

-- Starts queued sessions (of p_org, or of every org), oldest first, while their org has fewer
-- active sessions than the cap each was created under; at most p_limit. Orgs are locked in id
-- order, as creates lock them, one at a time. Returns each started session's new fields.
CREATE FUNCTION agentq_promote_queued(p_org uuid, p_limit integer)
RETURNS TABLE (id uuid, status text, next_step integer, final_answer text, error_code text,
               error_message text, cancel_requested boolean, version bigint,
               approval_expires_at timestamptz, updated_at timestamptz, org_id uuid,
               traceparent text)
LANGUAGE plpgsql AS $$
DECLARE
    v_org uuid;
    v_active integer;
    v_left integer := p_limit;
    q record;
BEGIN
    FOR v_org IN
        SELECT DISTINCT s.org_id FROM sessions s
        WHERE s.status = 'queued' AND (p_org IS NULL OR s.org_id = p_org)
        ORDER BY s.org_id
    LOOP
        EXIT WHEN v_left <= 0;
        PERFORM 1 FROM orgs o WHERE o.id = v_org FOR NO KEY UPDATE;
        SELECT count(*) INTO v_active FROM sessions s
        WHERE s.org_id = v_org AND s.status IN ('pending', 'running', 'awaiting_approval');
        FOR q IN
            SELECT s.id, s.max_active FROM sessions s
            WHERE s.org_id = v_org AND s.status = 'queued'
            ORDER BY s.created_at, s.id
        LOOP
            EXIT WHEN v_left <= 0 OR v_active >= coalesce(q.max_active, 2147483647);
            -- The clock, not the transaction's start: the event is later than the end that
            -- freed the slot, whenever this transaction began.
            RETURN QUERY
            WITH started AS (
                UPDATE sessions s SET status = 'pending', event_seq = s.event_seq + 1,
                    version = s.version + 1, updated_at = clock_timestamp()
                WHERE s.id = q.id AND s.status = 'queued'
                RETURNING s.id, s.status, s.next_step, s.final_answer, s.error_code,
                          s.error_message, s.cancel_requested, s.version,
                          s.approval_expires_at, s.updated_at, s.org_id, s.traceparent,
                          s.event_seq
            ), event AS (
                INSERT INTO session_events (session_id, seq, kind, data, created_at)
                SELECT st.id, st.event_seq, 'status', '{"status": "pending", "error": null}'::jsonb,
                       st.updated_at
                FROM started st
            )
            SELECT st.id, st.status, st.next_step, st.final_answer, st.error_code,
                   st.error_message, st.cancel_requested, st.version, st.approval_expires_at,
                   st.updated_at, st.org_id, st.traceparent
            FROM started st;
            IF FOUND THEN
                v_active := v_active + 1;
                v_left := v_left - 1;
            END IF;
        END LOOP;
    END LOOP;
END
$$;
