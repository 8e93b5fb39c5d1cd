-- API keys and the per-account IP allowlist.
-- Keep in step with migrations/sqlite/2026-11-28-000004_api_keys/up.sql.

-- Per account: the addresses its API keys may be used from (seed: "IP
-- Allowlisting"). Newline-separated canonical CIDRs; empty: no restriction.
ALTER TABLE users ADD COLUMN ip_allowlist TEXT NOT NULL DEFAULT '';

-- API keys (seed: "API Keys"). The key itself (dzd_ + 44 base62) is never
-- stored: only its hex SHA-256 and a short display prefix.
CREATE TABLE api_keys (
    id           TEXT PRIMARY KEY,
    user_id      TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name         TEXT NOT NULL,
    key_hash     TEXT NOT NULL UNIQUE,
    prefix       TEXT NOT NULL,
    -- Space-separated.
    scopes       TEXT NOT NULL,
    created_at   TIMESTAMP NOT NULL,
    expires_at   TIMESTAMP,
    -- Written at most once a minute per key (src/api/usage.rs).
    last_used_at TIMESTAMP,
    revoked_at   TIMESTAMP
);
CREATE INDEX api_keys_user_id_idx ON api_keys (user_id);

-- The revocation view (src/oauth/revocation_view.rs) also caches API keys:
-- a key that is revoked, changed or deleted notifies k:<key id>. A user's
-- change (disabled, role, allowlist) already notifies u:<user id>. Writing
-- last_used_at notifies nothing.
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

CREATE TRIGGER api_keys_revocation
    AFTER UPDATE OF user_id, key_hash, scopes, expires_at, revoked_at OR DELETE ON api_keys
    FOR EACH ROW EXECUTE FUNCTION dzdesk_notify_revocation();
CREATE TRIGGER api_keys_truncate AFTER TRUNCATE ON api_keys
    FOR EACH STATEMENT EXECUTE FUNCTION dzdesk_notify_truncate();
