-- LLM behaviours (issue 8): parallel tool calls, invalid model output, 1-hour cache writes.

-- Every tool call of the model's turn, in order (`action` stays the first), their results in the
-- same order (`observation` stays the first), and how many have started: a call whose start is
-- recorded but whose result is not had its outcome lost to a crash.
ALTER TABLE steps ADD COLUMN actions jsonb NOT NULL DEFAULT '[]';
ALTER TABLE steps ADD COLUMN observations jsonb NOT NULL DEFAULT '[]';
ALTER TABLE steps ADD COLUMN calls_started integer NOT NULL DEFAULT 0;
-- What the model said when it was not what we asked for (kept when the session fails on it).
ALTER TABLE steps ADD COLUMN invalid_output text;

-- Cache writes with a 1-hour TTL are priced apart from 5-minute ones (a part of cache_write_tokens).
ALTER TABLE llm_calls ADD COLUMN cache_write_1h_tokens bigint NOT NULL DEFAULT 0;
