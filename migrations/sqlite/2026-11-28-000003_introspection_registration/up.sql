-- Introspection, revocation and dynamic registration (RFC 7662, 7009, 7591, 7592).
-- Keep in step with migrations/postgres/2026-11-28-000003_introspection_registration/up.sql.

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

-- No notification triggers here: SQLite has no LISTEN/NOTIFY, so on SQLite
-- introspection always reads the database (see the PostgreSQL migration).
