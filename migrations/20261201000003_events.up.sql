-- See inside (issue 14): every session's events, durable, numbered per session, so a client can
-- follow a session live and resume after a dropped connection or an API restart from where it
-- was, losing nothing and seeing nothing twice. Each transition writes its events in the same
-- statement as the change itself, numbered from sessions.event_seq.

ALTER TABLE sessions ADD COLUMN event_seq bigint NOT NULL DEFAULT 0;
-- The W3C traceparent of the request that created the session: every step's job carries it, so
-- one session is one trace across the API and the workers.
ALTER TABLE sessions ADD COLUMN traceparent text;

CREATE TABLE session_events (
    session_id  uuid NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    -- 1, 2, 3, ... per session: the SSE event id.
    seq         bigint NOT NULL CHECK (seq > 0),
    kind        text NOT NULL CHECK (kind IN ('status', 'step', 'approval', 'done')),
    data        jsonb NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (session_id, seq)
);

-- A session's totals as clients see them (schemas::Totals), from the ledger.
CREATE FUNCTION agentq_totals_json(sid uuid) RETURNS jsonb LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN (SELECT jsonb_build_object(
        'steps', (SELECT count(*) FROM steps WHERE session_id = sid),
        'input_tokens', coalesce(sum(input_tokens), 0),
        'output_tokens', coalesce(sum(output_tokens), 0),
        'cache_read_tokens', coalesce(sum(cache_read_tokens), 0),
        'cache_write_tokens', coalesce(sum(cache_write_tokens), 0),
        'cost_usd', CASE WHEN bool_or(cost_usd IS NULL) THEN NULL
                         ELSE trim_scale(coalesce(sum(cost_usd), 0))::text END,
        'llm_calls', count(*))
    FROM llm_calls WHERE session_id = sid);
END
$$;

-- The listing: an org's sessions, newest first, by keyset.
CREATE INDEX sessions_org_listing ON sessions (org_id, created_at DESC, id DESC);
DROP INDEX sessions_org_created;
