-- The API usage log coalesces identical requests (the same key, method,
-- path, status and client address within one second) into one row that
-- counts them (src/api/usage_log.rs, `UsageLog::record`): a flood of one request
-- costs a row a second, not a row a request. Rows written before stand for
-- one request each.
ALTER TABLE api_key_usage ADD COLUMN requests INTEGER NOT NULL DEFAULT 1 CHECK (requests >= 1);
