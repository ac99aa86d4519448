-- The organization-wide roll-up per UTC day (`day` at midnight), so that series whose buckets
-- are whole UTC days (days, weeks, months of a range that does not start on the first) read one
-- row per day and dimension instead of one per hour. Derived from the hourly cells here, kept by
-- ingestion from now on.
CREATE TABLE usage_daily_org (
    organization_id  TEXT NOT NULL,
    day              INTEGER NOT NULL,
    usage_type       TEXT NOT NULL,
    team_id          TEXT NOT NULL,
    model            TEXT NOT NULL,
    provider         TEXT NOT NULL,
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
    PRIMARY KEY (organization_id, day, usage_type, team_id, model, provider)
) WITHOUT ROWID;
-- The latest value of a day: its latest cell's, ties to the larger value (as Aggregate::merge).
INSERT INTO usage_daily_org
SELECT organization_id, day, usage_type, team_id, model, provider, sum(count), sum(sum), min(min), max(max), max(last_ts), max(latest),
    sum(llm_successes), sum(llm_failures), sum(input_tokens), sum(output_tokens), sum(cost_nanos), sum(latency_ms_sum)
FROM (
    SELECT h.*, first_value(last_value) OVER (
        PARTITION BY organization_id, day, usage_type, team_id, model, provider ORDER BY last_ts DESC, last_value DESC) AS latest
    FROM (SELECT *, unixepoch(hour / 1000000, 'unixepoch', 'start of day') * 1000000 AS day FROM usage_hourly_org) h
) d
GROUP BY organization_id, day, usage_type, team_id, model, provider;
