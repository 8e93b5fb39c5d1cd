-- Pushed authorization requests (RFC 9126, issue 15).
-- Keep in step with migrations/postgres/2026-12-06-000015_pushed_authorization_requests/up.sql.

-- RFC 9126 6: "require_pushed_authorization_requests": the client's
-- authorization requests are refused unless pushed.
ALTER TABLE clients ADD COLUMN require_par BOOLEAN NOT NULL DEFAULT FALSE;

-- A pushed request, from POST /oauth/par until its authorization request
-- ends (a redirect to the client). The request_uri is never stored: the id
-- is the hex SHA-256 of its random part.
CREATE TABLE pushed_requests (
    id           TEXT PRIMARY KEY,
    client_id    TEXT NOT NULL REFERENCES clients (id) ON DELETE CASCADE,
    -- The pushed parameters, application/x-www-form-urlencoded.
    params       TEXT NOT NULL,
    -- NULL until a browser takes the request_uri (single use); then the
    -- hex SHA-256 of that browser's binding cookie, and only that browser
    -- may continue (sign-in, consent) until expires_at.
    browser_hash TEXT,
    -- Set when the taken request sent its browser to sign in again
    -- (prompt=login, max_age): only a sign-in at or after it satisfies
    -- the request. The pushed parameters themselves never change.
    reauth_after TIMESTAMP,
    created_at   TIMESTAMP NOT NULL,
    -- Pushed: 60 s to start; taken: the time left to sign in and consent.
    expires_at   TIMESTAMP NOT NULL
);
CREATE INDEX pushed_requests_expires_at_idx ON pushed_requests (expires_at);
CREATE INDEX pushed_requests_client_id_idx ON pushed_requests (client_id);
