-- The store seam (issue 13): a whole session read in one round trip, and repairs that don't
-- touch what a poll shows.

-- When the reconciler last re-enqueued the session; it used to bump updated_at instead, which a
-- poll shows.
ALTER TABLE sessions ADD COLUMN repaired_at timestamptz;

-- One step as the store's domain type reads it (StepRecord).
CREATE FUNCTION agentq_step_object(st steps) RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'index', st.step_index,
        'thought', st.thought,
        'llm_content', st.llm_content,
        'actions', st.actions,
        'is_final', st.is_final,
        'final_answer', st.final_answer,
        'observations', st.observations,
        'calls_started', st.calls_started,
        'invalid_output', st.invalid_output,
        'reviews', st.approval_details,
        'approval', CASE WHEN st.approved_at IS NOT NULL THEN jsonb_build_object(
            'approved', st.approval = 'approved',
            'reason', st.approval_reason,
            'decided_by', st.approved_by,
            'decided_at', st.approved_at) END,
        'started_at', st.started_at,
        'finished_at', st.finished_at)
$$;

-- Every step of a session, in order. PL/pgSQL, not SQL: a connection plans it once, where a
-- SQL function with a FROM clause is parsed and planned at every call.
CREATE FUNCTION agentq_steps_json(sid uuid) RETURNS jsonb LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN (SELECT coalesce(jsonb_agg(agentq_step_object(st) ORDER BY st.step_index), '[]'::jsonb)
            FROM steps st WHERE st.session_id = sid);
END
$$;

-- What each step's LLM calls cost, from the ledger (cost as text: exact decimals).
CREATE FUNCTION agentq_spend_json(sid uuid) RETURNS jsonb LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN (SELECT coalesce(jsonb_agg(jsonb_build_object(
        'step', c.step_index,
        'calls', c.calls,
        'input_tokens', c.input_tokens,
        'output_tokens', c.output_tokens,
        'cache_read_tokens', c.cache_read_tokens,
        'cache_write_tokens', c.cache_write_tokens,
        'cache_write_1h_tokens', c.cache_write_1h_tokens,
        'unpriced', c.unpriced,
        'cost_usd', c.cost_usd::text) ORDER BY c.step_index), '[]'::jsonb)
    FROM (SELECT step_index, count(*) AS calls,
                 sum(input_tokens) AS input_tokens, sum(output_tokens) AS output_tokens,
                 sum(cache_read_tokens) AS cache_read_tokens,
                 sum(cache_write_tokens) AS cache_write_tokens,
                 sum(cache_write_1h_tokens) AS cache_write_1h_tokens,
                 bool_or(cost_usd IS NULL) AS unpriced, sum(cost_usd) AS cost_usd
          FROM llm_calls WHERE session_id = sid GROUP BY step_index) c);
END
$$;

-- Most writes of a running session change only fields no index covers (lease, fence, version,
-- next step, updated_at), so with room on the page Postgres updates the row in place (a HOT
-- update, no index entry written). The reconciler's index on unfinished sessions therefore no
-- longer covers updated_at, which every transition changes; it finds the few unfinished
-- sessions by status and sorts them itself.
ALTER TABLE sessions SET (fillfactor = 70);
ALTER TABLE steps SET (fillfactor = 80);
DROP INDEX sessions_unfinished;
CREATE INDEX sessions_unfinished ON sessions (status)
    WHERE status IN ('pending', 'running', 'awaiting_approval');
