DROP TRIGGER revoked_access_tokens_revocation ON revoked_access_tokens;
DROP TRIGGER users_revocation ON users;
DROP TRIGGER clients_revocation ON clients;
DROP TRIGGER grants_revocation ON grants;
DROP FUNCTION dzdesk_notify_revocation();
DROP TABLE revoked_access_tokens;
ALTER TABLE clients DROP COLUMN registration_token_hash;
ALTER TABLE clients DROP COLUMN can_introspect;
