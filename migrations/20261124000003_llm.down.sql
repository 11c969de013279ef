ALTER TABLE llm_calls DROP COLUMN cache_write_1h_tokens;
ALTER TABLE steps DROP COLUMN invalid_output;
ALTER TABLE steps DROP COLUMN calls_started;
ALTER TABLE steps DROP COLUMN observations;
ALTER TABLE steps DROP COLUMN actions;
