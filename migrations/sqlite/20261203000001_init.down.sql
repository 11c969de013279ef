DROP TABLE leadership;
DROP TABLE session_events;
DROP TABLE idempotency_keys;
DROP TABLE llm_calls;
DROP TABLE steps;
DROP TABLE sessions;
DROP TABLE api_keys;
DROP TABLE orgs;
