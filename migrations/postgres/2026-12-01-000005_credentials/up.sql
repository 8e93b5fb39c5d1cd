-- The credentials module (src/credentials/): who registered a client, which
-- key minted a key, signing keys revoked outright, and notifications that
-- carry what the revocation view needs.
-- Keep in step with migrations/sqlite/2026-12-01-000005_credentials/up.sql.

-- The user whose credential registered the client (RFC 7591): when that
-- user loses admin or is disabled, the client is disabled.
ALTER TABLE clients ADD COLUMN registered_by TEXT;
CREATE INDEX clients_registered_by ON clients (registered_by) WHERE registered_by IS NOT NULL;

-- The API key that minted this one: revoking a key revokes its children.
ALTER TABLE api_keys ADD COLUMN parent_id TEXT;
CREATE INDEX api_keys_parent ON api_keys (parent_id) WHERE parent_id IS NOT NULL;
-- The OAuth grant whose access token minted this key: while the grant is
-- revoked or gone (the app was disconnected), the key is refused. No foreign
-- keys here, so that SQLite can drop these columns again (down.sql).
ALTER TABLE api_keys ADD COLUMN parent_grant_id TEXT;

-- `keys rotate --revoke-previous`: a key believed stolen leaves the JWKS at
-- once and every token it signed stops verifying.
ALTER TABLE signing_keys ADD COLUMN revoked_at TIMESTAMP;

-- Notifications (see src/credentials/revocation_view.rs):
--   j:<jti>:<exp>  an access token was revoked; exp in epoch seconds, so
--                  the view can forget it once it has expired anyway
--   s:<kid>        a signing key was added, retired or revoked
CREATE OR REPLACE FUNCTION dzdesk_notify_revocation() RETURNS trigger AS $$
DECLARE
    payload TEXT;
BEGIN
    IF TG_TABLE_NAME = 'grants' THEN
        payload := 'g:' || OLD.id;
    ELSIF TG_TABLE_NAME = 'clients' THEN
        payload := 'c:' || OLD.id;
    ELSIF TG_TABLE_NAME = 'users' THEN
        payload := 'u:' || OLD.id;
    ELSIF TG_TABLE_NAME = 'api_keys' THEN
        payload := 'k:' || OLD.id;
    ELSIF TG_TABLE_NAME = 'signing_keys' THEN
        payload := 's:' || COALESCE(NEW.kid, OLD.kid);
    ELSE
        payload := 'j:' || NEW.jti || ':' || floor(extract(epoch FROM NEW.expires_at))::BIGINT;
    END IF;
    PERFORM pg_notify('dzdesk_revocations', payload);
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER signing_keys_revocation AFTER INSERT OR UPDATE OR DELETE ON signing_keys
    FOR EACH ROW EXECUTE FUNCTION dzdesk_notify_revocation();
CREATE TRIGGER signing_keys_truncate AFTER TRUNCATE ON signing_keys
    FOR EACH STATEMENT EXECUTE FUNCTION dzdesk_notify_truncate();
