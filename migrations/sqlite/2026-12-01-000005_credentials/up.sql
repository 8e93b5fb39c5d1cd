-- The credentials module (src/credentials/). Keep in step with
-- migrations/postgres/2026-12-01-000005_credentials/up.sql (SQLite has no
-- LISTEN/NOTIFY: instances poll the signing keys instead).

ALTER TABLE clients ADD COLUMN registered_by TEXT;
CREATE INDEX clients_registered_by ON clients (registered_by) WHERE registered_by IS NOT NULL;

ALTER TABLE api_keys ADD COLUMN parent_id TEXT;
CREATE INDEX api_keys_parent ON api_keys (parent_id) WHERE parent_id IS NOT NULL;
-- The OAuth grant whose access token minted this key: while the grant is
-- revoked or gone (the app was disconnected), the key is refused. No foreign
-- keys here, so that SQLite can drop these columns again (down.sql).
ALTER TABLE api_keys ADD COLUMN parent_grant_id TEXT;

ALTER TABLE signing_keys ADD COLUMN revoked_at TIMESTAMP;
