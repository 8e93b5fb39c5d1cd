-- API keys and the per-account IP allowlist.
-- Keep in step with migrations/postgres/2026-11-28-000004_api_keys/up.sql.

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

-- No notification triggers: SQLite has no LISTEN/NOTIFY (see the PostgreSQL migration).
