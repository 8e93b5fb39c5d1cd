-- Plans (seed: "Rate Limits"): every account and client starts on Standard.
-- rate_limit: requests per minute, for the enterprise plan only.
ALTER TABLE users ADD COLUMN plan TEXT NOT NULL DEFAULT 'standard'
    CHECK (plan IN ('standard', 'professional', 'enterprise'));
ALTER TABLE users ADD COLUMN rate_limit BIGINT;
ALTER TABLE clients ADD COLUMN plan TEXT NOT NULL DEFAULT 'standard'
    CHECK (plan IN ('standard', 'professional', 'enterprise'));
ALTER TABLE clients ADD COLUMN rate_limit BIGINT;
