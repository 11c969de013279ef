-- Durability (issue 5): approvals, deadlines, idempotent creation.

-- A session must finish before its deadline; the worker and the reconciler enforce it.
ALTER TABLE sessions ADD COLUMN deadline_at timestamptz NOT NULL DEFAULT now() + interval '15 minutes';
-- While awaiting approval: when the pending approval lapses.
ALTER TABLE sessions ADD COLUMN approval_expires_at timestamptz;

-- A human's decision on a step's tool call, with who made it (API key) and when.
ALTER TABLE steps ADD COLUMN approval text CHECK (approval IN ('approved', 'rejected'));
ALTER TABLE steps ADD COLUMN approval_reason text;
ALTER TABLE steps ADD COLUMN approved_by uuid REFERENCES api_keys (id) ON DELETE SET NULL;
ALTER TABLE steps ADD COLUMN approved_at timestamptz;

-- `Idempotency-Key` on POST /v1/agents/run: the same key and body return the same session.
CREATE TABLE idempotency_keys (
    org_id        uuid NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    key           text NOT NULL,
    request_hash  text NOT NULL,
    session_id    uuid NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (org_id, key)
);
CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at);
