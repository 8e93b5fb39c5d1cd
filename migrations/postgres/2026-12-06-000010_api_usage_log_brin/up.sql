-- The usage log's age sweep (DELETE ... WHERE at < $1, hourly) by a BRIN
-- index instead of a B-tree: rows arrive in time order, so a few pages of
-- block ranges find them, and an insert costs next to nothing to index. The
-- B-tree it replaces was a third of the index work of every batch the
-- writer inserts under load.
-- SQLite has no BRIN: migrations/sqlite/2026-12-06-000010_api_usage_log_brin
-- keeps its B-tree.
DROP INDEX api_key_usage_at;
CREATE INDEX api_key_usage_at_brin ON api_key_usage USING brin (at);
