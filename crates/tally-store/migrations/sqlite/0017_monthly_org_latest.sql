-- Each organization's sum of its users' latest values per UTC month and usage type (how gauges
-- such as storage in use add up across users), so that monthly series of gauges over many
-- organizations read one row per organization and month instead of every user's hours.
-- Ingestion moves the sum by each user's change: a user's monthly row remembers the latest value
-- its last update replaced (`replaced_value`, read under the upsert's row lock), and the upsert
-- returns both.
ALTER TABLE user_usage_monthly ADD COLUMN replaced_value REAL NOT NULL DEFAULT 0;
CREATE TABLE usage_monthly_org_latest (
    organization_id  TEXT NOT NULL,
    month            INTEGER NOT NULL,
    usage_type       TEXT NOT NULL,
    count            INTEGER NOT NULL,
    last_ts          INTEGER NOT NULL,
    latest_sum       REAL NOT NULL,
    PRIMARY KEY (organization_id, month, usage_type)
) WITHOUT ROWID;
INSERT INTO usage_monthly_org_latest
SELECT organization_id, unixepoch(month) * 1000000, usage_type, sum(count), max(last_ts), sum(last_value)
FROM user_usage_monthly GROUP BY organization_id, month, usage_type;
