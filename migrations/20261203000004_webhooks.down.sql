DROP TRIGGER session_events_webhooks ON session_events;
DROP FUNCTION agentq_webhook_outbox();
DROP TABLE webhook_attempts;
DROP TABLE webhook_deliveries;
ALTER TABLE orgs
    DROP COLUMN webhook_secret,
    DROP COLUMN webhook_url;
