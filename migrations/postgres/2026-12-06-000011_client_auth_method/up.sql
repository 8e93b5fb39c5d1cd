-- RFC 7591 2 / RFC 7592: the token_endpoint_auth_method a client registered
-- with, as registered (client_secret_basic, client_secret_post or none), so
-- that reading the registration gives it back. Existing rows: none for
-- public clients, client_secret_basic (the RFC 7591 default) for the rest.
-- Keep in step with migrations/sqlite/2026-12-06-000011_client_auth_method/up.sql.
ALTER TABLE clients ADD COLUMN token_endpoint_auth_method TEXT NOT NULL DEFAULT 'client_secret_basic';
UPDATE clients SET token_endpoint_auth_method = 'none' WHERE NOT confidential;
