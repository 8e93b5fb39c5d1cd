ALTER TABLE clients DROP COLUMN rate_limit;
ALTER TABLE clients DROP COLUMN plan;
ALTER TABLE users DROP COLUMN rate_limit;
ALTER TABLE users DROP COLUMN plan;
