DROP TRIGGER session_events_webhooks;
DROP TABLE webhook_attempts;
DROP TABLE webhook_deliveries;
ALTER TABLE orgs DROP COLUMN webhook_secret;
ALTER TABLE orgs DROP COLUMN webhook_url;
