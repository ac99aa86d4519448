-- Each organization's usage per UTC month and usage type: the aggregate of its events (so that
-- monthly series that split by nothing finer read one row per organization, month and type) and
-- the sum of its users' latest values of the month (how gauges such as storage in use add up
-- across users). Ingestion moves that sum by each user's change: a user's monthly row remembers
-- the latest value its last update replaced (`replaced_value`, read under the upsert's row lock),
-- and the upsert returns both.
ALTER TABLE user_usage_monthly ADD COLUMN replaced_value REAL NOT NULL DEFAULT 0;
CREATE TABLE usage_monthly_org_type (
    organization_id  TEXT NOT NULL,
    month            INTEGER NOT NULL,
    usage_type       TEXT NOT NULL,
    count            INTEGER NOT NULL,
    sum              REAL NOT NULL,
    min              REAL NOT NULL,
    max              REAL NOT NULL,
    last_ts          INTEGER NOT NULL,
    last_value       REAL NOT NULL,
    llm_successes    INTEGER NOT NULL,
    llm_failures     INTEGER NOT NULL,
    input_tokens     INTEGER NOT NULL,
    output_tokens    INTEGER NOT NULL,
    cost_nanos       INTEGER NOT NULL,
    latency_ms_sum   INTEGER NOT NULL,
    latest_sum       REAL NOT NULL,
    PRIMARY KEY (organization_id, month, usage_type)
) WITHOUT ROWID;
-- From the organizations' finer monthly cells (the latest value of a month: its latest cell's,
-- ties to the larger value, as Aggregate::merge), and the users' latest values.
INSERT INTO usage_monthly_org_type
SELECT organization_id, month, usage_type, sum(count), sum(sum), min(min), max(max), max(last_ts), max(latest),
    sum(llm_successes), sum(llm_failures), sum(input_tokens), sum(output_tokens), sum(cost_nanos), sum(latency_ms_sum), 0
FROM (
    SELECT m.*, first_value(last_value) OVER (
        PARTITION BY organization_id, month, usage_type ORDER BY last_ts DESC, last_value DESC) AS latest
    FROM usage_monthly_org m
) o
GROUP BY organization_id, month, usage_type;
UPDATE usage_monthly_org_type SET latest_sum = u.latest_sum FROM (
    SELECT organization_id, unixepoch(month) * 1000000 AS month, usage_type, sum(last_value) AS latest_sum
    FROM user_usage_monthly GROUP BY organization_id, month, usage_type) u
WHERE usage_monthly_org_type.organization_id = u.organization_id AND usage_monthly_org_type.month = u.month
    AND usage_monthly_org_type.usage_type = u.usage_type;
