DROP TABLE revoked_access_tokens;
ALTER TABLE clients DROP COLUMN registration_token_hash;
ALTER TABLE clients DROP COLUMN can_introspect;
