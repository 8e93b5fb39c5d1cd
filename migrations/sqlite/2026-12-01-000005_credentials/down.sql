ALTER TABLE signing_keys DROP COLUMN revoked_at;
DROP INDEX api_keys_parent;
ALTER TABLE api_keys DROP COLUMN parent_grant_id;
ALTER TABLE api_keys DROP COLUMN parent_id;
DROP INDEX clients_registered_by;
ALTER TABLE clients DROP COLUMN registered_by;
