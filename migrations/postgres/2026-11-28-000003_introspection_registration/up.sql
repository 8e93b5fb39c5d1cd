-- Introspection, revocation and dynamic registration (RFC 7662, 7009, 7591, 7592).
-- Keep in step with migrations/sqlite/2026-11-28-000003_introspection_registration/up.sql.

-- Internal DZDESK services may introspect any token.
ALTER TABLE clients ADD COLUMN can_introspect BOOLEAN NOT NULL DEFAULT FALSE;

-- Hex SHA-256 of the RFC 7592 registration access token (dynamically
-- registered clients only).
ALTER TABLE clients ADD COLUMN registration_token_hash TEXT;

-- Access tokens revoked one by one (RFC 7009), until they expire anyway.
CREATE TABLE revoked_access_tokens (
    jti        TEXT PRIMARY KEY,
    grant_id   TEXT NOT NULL,
    revoked_at TIMESTAMP NOT NULL,
    expires_at TIMESTAMP NOT NULL
);

-- The in-process revocation view of each instance (src/oauth/revocation_view.rs)
-- listens on this channel. Every change that can make a token inactive
-- notifies it, whoever makes the change (the service, the CLI, plain SQL):
--   g:<grant id>   a grant was revoked or deleted
--   c:<client id>  a client was disabled, changed or deleted
--   u:<user id>    a user was disabled, changed or deleted
--   j:<jti>        an access token was revoked
--   x:<table>      a table was truncated (forget everything)
-- PostgreSQL delivers a notification when the transaction commits.
CREATE FUNCTION dzdesk_notify_revocation() RETURNS trigger AS $$
DECLARE
    payload TEXT;
BEGIN
    IF TG_TABLE_NAME = 'grants' THEN
        payload := 'g:' || OLD.id;
    ELSIF TG_TABLE_NAME = 'clients' THEN
        payload := 'c:' || OLD.id;
    ELSIF TG_TABLE_NAME = 'users' THEN
        payload := 'u:' || OLD.id;
    ELSE
        payload := 'j:' || NEW.jti;
    END IF;
    PERFORM pg_notify('dzdesk_revocations', payload);
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER grants_revocation AFTER UPDATE OR DELETE ON grants
    FOR EACH ROW EXECUTE FUNCTION dzdesk_notify_revocation();
CREATE TRIGGER clients_revocation AFTER UPDATE OR DELETE ON clients
    FOR EACH ROW EXECUTE FUNCTION dzdesk_notify_revocation();
CREATE TRIGGER users_revocation AFTER UPDATE OR DELETE ON users
    FOR EACH ROW EXECUTE FUNCTION dzdesk_notify_revocation();
CREATE TRIGGER revoked_access_tokens_revocation AFTER INSERT ON revoked_access_tokens
    FOR EACH ROW EXECUTE FUNCTION dzdesk_notify_revocation();

-- TRUNCATE fires no row trigger: say "forget everything" (x:).
CREATE FUNCTION dzdesk_notify_truncate() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('dzdesk_revocations', 'x:' || TG_TABLE_NAME);
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER grants_truncate AFTER TRUNCATE ON grants
    FOR EACH STATEMENT EXECUTE FUNCTION dzdesk_notify_truncate();
CREATE TRIGGER clients_truncate AFTER TRUNCATE ON clients
    FOR EACH STATEMENT EXECUTE FUNCTION dzdesk_notify_truncate();
CREATE TRIGGER users_truncate AFTER TRUNCATE ON users
    FOR EACH STATEMENT EXECUTE FUNCTION dzdesk_notify_truncate();
