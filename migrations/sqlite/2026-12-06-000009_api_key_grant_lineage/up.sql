-- Every key of a lineage that began with a key minted under an OAuth grant
-- names that grant (parent_grant_id), so that it dies with it: keys minted
-- by such a key before 2026-12-06 were stored without it, and rotation
-- copies the column. UNION, not UNION ALL: a cycle (there should be none)
-- ends the recursion. Only NULLs are filled in.
-- Keep in step with migrations/postgres/2026-12-06-000009_api_key_grant_lineage/up.sql.
WITH RECURSIVE lineage(id, grant_id) AS (
    SELECT id, parent_grant_id FROM api_keys WHERE parent_grant_id IS NOT NULL
    UNION
    SELECT k.id, l.grant_id FROM api_keys k JOIN lineage l ON k.parent_id = l.id
)
UPDATE api_keys SET parent_grant_id = lineage.grant_id
FROM lineage
WHERE api_keys.id = lineage.id AND api_keys.parent_grant_id IS NULL;
