DROP INDEX api_key_usage_at_brin;
CREATE INDEX api_key_usage_at ON api_key_usage (at);
