-- client rotate-secret: the secret being replaced keeps working until
-- previous_secret_expires_at (the operator's grace; NULL: no previous
-- secret). Stored as its SHA-256, like secret_hash.
-- cors_origins: the browser origins (scheme://host[:port]) allowed to call
-- the token and revocation endpoints and /v1 with this client's tokens,
-- newline-separated; empty: derived from the registered redirect URIs.
-- Keep in step with migrations/sqlite/2026-12-06-000012_client_secret_grace_origins/up.sql.
ALTER TABLE clients ADD COLUMN previous_secret_hash TEXT;
ALTER TABLE clients ADD COLUMN previous_secret_expires_at TIMESTAMP;
ALTER TABLE clients ADD COLUMN cors_origins TEXT NOT NULL DEFAULT '';
