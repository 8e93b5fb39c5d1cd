DROP TABLE revoked_access_tokens;
ALTER TABLE clients DROP COLUMN can_introspect;
