-- Users, browser sessions and server-side secrets.
-- Keep in step with migrations/postgres/2026-11-28-000001_foundation/up.sql.

CREATE TABLE users (
    id            TEXT PRIMARY KEY,
    -- Stored normalised (trimmed, lower-case), so the unique index is case-insensitive.
    email         TEXT NOT NULL UNIQUE,
    role          TEXT NOT NULL CHECK (role IN ('admin', 'agent')),
    password_hash TEXT NOT NULL,
    disabled      BOOLEAN NOT NULL DEFAULT FALSE,
    created_at    TIMESTAMP NOT NULL,
    updated_at    TIMESTAMP NOT NULL
);

CREATE TABLE sessions (
    -- Hex SHA-256 of the cookie value: the value itself is never stored.
    id         TEXT PRIMARY KEY,
    user_id    TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at TIMESTAMP NOT NULL,
    expires_at TIMESTAMP NOT NULL
);
CREATE INDEX sessions_user_id_idx ON sessions (user_id);

-- Keys generated on first start and shared by every instance on this database
-- (the CSRF HMAC key, for one).
CREATE TABLE server_secrets (
    name       TEXT PRIMARY KEY,
    secret     BLOB NOT NULL,
    created_at TIMESTAMP NOT NULL
);
