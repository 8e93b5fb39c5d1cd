-- API key rotation (src/api/keys.rs, rotate): the key that replaced this
-- one. A rotated key keeps working until its expires_at, which rotation
-- lowers to the end of the grace period; a key with replaced_by set cannot
-- be rotated again (409) and does not count against the account's key cap.
-- Rotation writes expires_at in the same UPDATE, so on PostgreSQL the
-- api_keys trigger of 2026-11-28-000004 notifies k:<id> and every
-- instance's revocation view forgets the key's cached status.
-- Keep in step with migrations/postgres/2026-12-06-000007_api_key_rotation/up.sql.
ALTER TABLE api_keys ADD COLUMN replaced_by TEXT;
