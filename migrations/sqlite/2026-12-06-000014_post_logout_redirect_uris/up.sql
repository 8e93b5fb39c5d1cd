-- OpenID Connect RP-Initiated Logout 1.0 (issue 15): where a client may send
-- the browser after a logout it started, registered like redirect URIs
-- (exact strings, newline-separated; empty: nowhere, the OP's own page).
-- Keep in step with migrations/postgres/2026-12-06-000014_post_logout_redirect_uris/up.sql.
ALTER TABLE clients ADD COLUMN post_logout_redirect_uris TEXT NOT NULL DEFAULT '';
