-- The credentials module (src/credentials/). Keep in step with
-- migrations/postgres/2026-12-01-000005_credentials/up.sql (SQLite has no
-- LISTEN/NOTIFY: instances poll the signing keys instead).

ALTER TABLE clients ADD COLUMN registered_by TEXT;
CREATE INDEX clients_registered_by ON clients (registered_by) WHERE registered_by IS NOT NULL;

ALTER TABLE api_keys ADD COLUMN parent_id TEXT REFERENCES api_keys (id) ON DELETE CASCADE;
CREATE INDEX api_keys_parent ON api_keys (parent_id) WHERE parent_id IS NOT NULL;

ALTER TABLE signing_keys ADD COLUMN revoked_at TIMESTAMP;
