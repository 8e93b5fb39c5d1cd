-- The API usage log (src/api/usage_log.rs): one row per /v1 request made
-- with an API key, written in batches. Never a header, query string or
-- body. Bounded by the maintenance sweep: 30 days or 10,000 rows per key,
-- whichever is smaller. No foreign key: a batch must not fail because one
-- key was deleted meanwhile; orphans age out with the sweep.
-- Keep in step with migrations/postgres/2026-12-06-000008_api_usage_log/up.sql.
CREATE TABLE api_key_usage (
    -- The rowid: assigned in insertion order.
    id          INTEGER PRIMARY KEY,
    key_id      TEXT NOT NULL,
    at          TIMESTAMP NOT NULL,
    method      TEXT NOT NULL,
    -- The request path without its query string, at most 200 characters.
    path        TEXT NOT NULL,
    status      INTEGER NOT NULL,
    -- As the service resolved it (trusted proxies respected); NULL: unknown.
    client_ip   TEXT,
    duration_ms INTEGER NOT NULL
);
CREATE INDEX api_key_usage_key_at ON api_key_usage (key_id, at DESC, id DESC);
CREATE INDEX api_key_usage_at ON api_key_usage (at);
