DROP TABLE api_keys;
ALTER TABLE users DROP COLUMN ip_allowlist;
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
    ELSE
        payload := 'j:' || NEW.jti;
    END IF;
    PERFORM pg_notify('dzdesk_revocations', payload);
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;
