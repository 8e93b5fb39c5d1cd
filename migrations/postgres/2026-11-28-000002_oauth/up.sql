-- OAuth 2.0: clients, remembered consent, grants (token families),
-- authorization codes, refresh tokens, signing keys.
-- Keep in step with migrations/sqlite/2026-11-28-000002_oauth/up.sql.

CREATE TABLE clients (
    id            TEXT PRIMARY KEY,
    name          TEXT NOT NULL,
    confidential  BOOLEAN NOT NULL,
    -- Hex SHA-256 of the dzs_ secret; NULL for public clients.
    secret_hash   TEXT,
    -- Newline-separated, each exactly as registered (matched by exact string).
    redirect_uris TEXT NOT NULL,
    -- Space-separated.
    scopes        TEXT NOT NULL,
    grant_types   TEXT NOT NULL,
    require_pkce  BOOLEAN NOT NULL DEFAULT FALSE,
    disabled      BOOLEAN NOT NULL DEFAULT FALSE,
    created_at    TIMESTAMP NOT NULL,
    updated_at    TIMESTAMP NOT NULL
);

-- What a user has approved for a client (remembered consent).
CREATE TABLE consents (
    user_id    TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    client_id  TEXT NOT NULL REFERENCES clients (id) ON DELETE CASCADE,
    scopes     TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL,
    PRIMARY KEY (user_id, client_id)
);

-- A grant: the family of tokens that one authorization code (or one
-- client_credentials request) started. Revoking it revokes every refresh
-- token of the family, and access tokens carry its id.
CREATE TABLE grants (
    id         TEXT PRIMARY KEY,
    client_id  TEXT NOT NULL REFERENCES clients (id) ON DELETE CASCADE,
    -- NULL for client_credentials grants: the subject is the client.
    user_id    TEXT REFERENCES users (id) ON DELETE CASCADE,
    scopes     TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL,
    revoked_at TIMESTAMP
);
CREATE INDEX grants_client_id_idx ON grants (client_id);
CREATE INDEX grants_user_id_idx ON grants (user_id);

CREATE TABLE authorization_codes (
    -- Hex SHA-256 of the code.
    id                    TEXT PRIMARY KEY,
    client_id             TEXT NOT NULL REFERENCES clients (id) ON DELETE CASCADE,
    user_id               TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    redirect_uri          TEXT NOT NULL,
    scopes                TEXT NOT NULL,
    code_challenge        TEXT,
    code_challenge_method TEXT,
    created_at            TIMESTAMP NOT NULL,
    expires_at            TIMESTAMP NOT NULL,
    -- Set once, atomically, by the one redemption that wins.
    used_at               TIMESTAMP,
    -- The grant that redemption started (to revoke it on replay).
    grant_id              TEXT REFERENCES grants (id) ON DELETE SET NULL
);

CREATE TABLE refresh_tokens (
    -- Hex SHA-256 of the dzr_ token.
    id         TEXT PRIMARY KEY,
    grant_id   TEXT NOT NULL REFERENCES grants (id) ON DELETE CASCADE,
    scopes     TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL,
    expires_at TIMESTAMP NOT NULL,
    -- Set when rotated; presenting it again revokes the grant.
    used_at    TIMESTAMP
);
CREATE INDEX refresh_tokens_grant_id_idx ON refresh_tokens (grant_id);

CREATE TABLE signing_keys (
    kid         TEXT PRIMARY KEY,
    algorithm   TEXT NOT NULL,
    -- PKCS#8 DER of the private key.
    private_key BYTEA NOT NULL,
    -- The public JWK (JSON), as published at /.well-known/jwks.json.
    public_jwk  TEXT NOT NULL,
    created_at  TIMESTAMP NOT NULL,
    -- When a newer key took over signing; published until every token it
    -- signed has expired.
    retired_at  TIMESTAMP
);
