ALTER TABLE api_key_usage DROP COLUMN requests;
