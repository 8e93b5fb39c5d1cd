DROP TRIGGER signing_keys_truncate ON signing_keys;
DROP TRIGGER signing_keys_revocation ON signing_keys;
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
    ELSE
        payload := 'j:' || NEW.jti;
    END IF;
    PERFORM pg_notify('dzdesk_revocations', payload);
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;
ALTER TABLE signing_keys DROP COLUMN revoked_at;
DROP INDEX api_keys_parent;
ALTER TABLE api_keys DROP COLUMN parent_grant_id;
ALTER TABLE api_keys DROP COLUMN parent_id;
DROP INDEX clients_registered_by;
ALTER TABLE clients DROP COLUMN registered_by;
