-- agentq's durable state. Postgres is the source of truth; Redis only holds copies.

CREATE TABLE orgs (
    id          uuid PRIMARY KEY,
    name        text NOT NULL UNIQUE,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- Only the SHA-256 of a key is stored; the key itself is shown once, at creation.
CREATE TABLE api_keys (
    id          uuid PRIMARY KEY,
    org_id      uuid NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    key_hash    text NOT NULL UNIQUE,
    key_prefix  text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);

CREATE TABLE sessions (
    id                uuid PRIMARY KEY,
    org_id            uuid NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    status            text NOT NULL DEFAULT 'pending'
                      CHECK (status IN ('pending', 'running', 'awaiting_approval',
                                        'completed', 'failed', 'cancelled')),
    model             text NOT NULL,
    -- The validated AgentRunRequest: messages, tools, max_steps.
    request           jsonb NOT NULL,
    max_steps         integer NOT NULL CHECK (max_steps BETWEEN 1 AND 50),
    -- The step a StepJob must carry to be the current one (step protocol, 1 and 7).
    next_step         integer NOT NULL DEFAULT 0,
    final_answer      text,
    error_code        text,
    error_message     text,
    cancel_requested  boolean NOT NULL DEFAULT false,
    -- Fenced lease (step protocol, 2): the holder, its expiry, and a counter bumped at each take.
    lease_owner       text,
    lease_until       timestamptz,
    fence             bigint NOT NULL DEFAULT 0,
    -- Bumped on every change; the Redis snapshot never goes back to an older version.
    version           bigint NOT NULL DEFAULT 0,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX sessions_org_created ON sessions (org_id, created_at DESC);
CREATE INDEX sessions_unfinished ON sessions (updated_at)
    WHERE status IN ('pending', 'running', 'awaiting_approval');

-- One row per step, written by decide (thought/action), act (observation).
CREATE TABLE steps (
    session_id       uuid NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    step_index       integer NOT NULL CHECK (step_index >= 0),
    thought          text,
    -- The model's turn exactly as returned (content blocks), replayed into later prompts.
    llm_content      jsonb NOT NULL,
    action           jsonb,
    is_final         boolean NOT NULL,
    final_answer     text,
    observation      jsonb,
    started_at       timestamptz NOT NULL,
    decided_at       timestamptz NOT NULL DEFAULT now(),
    tool_started_at  timestamptz,
    finished_at      timestamptz,
    PRIMARY KEY (session_id, step_index)
);

-- The cost ledger: every LLM call, useful or wasted, as the provider billed it.
CREATE TABLE llm_calls (
    id                  bigserial PRIMARY KEY,
    session_id          uuid NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    step_index          integer NOT NULL,
    model               text NOT NULL,
    outcome             text NOT NULL CHECK (outcome IN ('ok', 'error')),
    http_status         integer,
    input_tokens        bigint NOT NULL DEFAULT 0,
    output_tokens       bigint NOT NULL DEFAULT 0,
    cache_read_tokens   bigint NOT NULL DEFAULT 0,
    cache_write_tokens  bigint NOT NULL DEFAULT 0,
    -- NULL when the model has no price: unknown, never a silent 0.
    cost_usd            numeric(20, 10),
    duration_ms         bigint NOT NULL,
    error               text,
    created_at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX llm_calls_session ON llm_calls (session_id, step_index);
