-- PostgreSQL's migration of this name makes the usage log's index on `at` a
-- BRIN index. SQLite has none: its B-tree stays (kept in step by name only).
SELECT 1;
