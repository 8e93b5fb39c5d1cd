-- Introspection and revocation (RFC 7662, RFC 7009).
-- Keep in step with migrations/postgres/2026-11-28-000003_introspection/up.sql.

-- Internal DZDESK services may introspect any token.
ALTER TABLE clients ADD COLUMN can_introspect BOOLEAN NOT NULL DEFAULT FALSE;

-- Access tokens revoked one by one (RFC 7009), until they expire anyway.
CREATE TABLE revoked_access_tokens (
    jti        TEXT PRIMARY KEY,
    grant_id   TEXT NOT NULL,
    revoked_at TIMESTAMP NOT NULL,
    expires_at TIMESTAMP NOT NULL
);
