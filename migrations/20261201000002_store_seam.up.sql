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

-- Every step of a session, in order.
CREATE FUNCTION agentq_steps_json(sid uuid) RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT coalesce(jsonb_agg(agentq_step_object(st) ORDER BY st.step_index), '[]'::jsonb)
    FROM steps st WHERE st.session_id = sid
$$;

-- What each step's LLM calls cost, from the ledger (cost as text: exact decimals).
CREATE FUNCTION agentq_spend_json(sid uuid) RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT coalesce(jsonb_agg(jsonb_build_object(
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
          FROM llm_calls WHERE session_id = sid GROUP BY step_index) c
$$;
