DROP TRIGGER session_events_ended ON session_events;
DROP FUNCTION agentq_notify_ended();
