-- OpenID Connect (issue 15): what an ID token says about the sign-in behind
-- a code and its grant. auth_time: when the user signed in (the browser
-- session's start); sid: the session's OIDC id (oauth::oidc::sid_of, not
-- the session row's id); nonce: the authorization request's, returned in
-- the code exchange's ID token only. NULL on rows from before OIDC.
-- Keep in step with migrations/sqlite/2026-12-06-000013_openid/up.sql.
ALTER TABLE authorization_codes ADD COLUMN nonce TEXT;
ALTER TABLE authorization_codes ADD COLUMN auth_time TIMESTAMP;
ALTER TABLE authorization_codes ADD COLUMN sid TEXT;
ALTER TABLE grants ADD COLUMN auth_time TIMESTAMP;
ALTER TABLE grants ADD COLUMN sid TEXT;
