-- Every terminal transition tells whoever listens, at its commit: `agentq_session_ended` with
-- "<session id> <version>". The API uses it to bring a stale hot copy up to date when the
-- process that ended the session died between its commit and its snapshot write (that
-- session never changes again, so nothing else would). The `done` event is written in the
-- transition's own transaction, so no transition's SQL changed.
CREATE FUNCTION agentq_notify_ended() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('agentq_session_ended',
        NEW.session_id::text || ' ' || (SELECT s.version FROM sessions s WHERE s.id = NEW.session_id));
    RETURN NULL;
END
$$;

CREATE TRIGGER session_events_ended AFTER INSERT ON session_events
    FOR EACH ROW WHEN (NEW.kind = 'done')
    EXECUTE FUNCTION agentq_notify_ended();
