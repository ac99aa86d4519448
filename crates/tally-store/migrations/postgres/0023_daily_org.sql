-- The organization-wide roll-up per UTC day (`day` at midnight), so that series whose buckets
-- are whole UTC days (days, weeks, months of a range that does not start on the first) read one
-- row per day and dimension instead of one per hour. Derived from the hourly cells here, kept by
-- ingestion from now on; updated in place like the other roll-ups (migration 20).
CREATE TABLE usage_daily_org (
    organization_id  TEXT NOT NULL,
    day              TIMESTAMPTZ NOT NULL,
    usage_type       TEXT NOT NULL,
    team_id          TEXT NOT NULL,
    model            TEXT NOT NULL,
    provider         TEXT NOT NULL,
    count            BIGINT NOT NULL,
    sum              DOUBLE PRECISION NOT NULL,
    min              DOUBLE PRECISION NOT NULL,
    max              DOUBLE PRECISION NOT NULL,
    last_ts          TIMESTAMPTZ NOT NULL,
    last_value       DOUBLE PRECISION NOT NULL,
    llm_successes    BIGINT NOT NULL,
    llm_failures     BIGINT NOT NULL,
    input_tokens     BIGINT NOT NULL,
    output_tokens    BIGINT NOT NULL,
    cost_nanos       BIGINT NOT NULL,
    latency_ms_sum   BIGINT NOT NULL,
    PRIMARY KEY (organization_id, day, usage_type, team_id, model, provider)
) WITH (fillfactor = 80);
-- The latest value of a day: its latest cell's, ties to the larger value (as Aggregate::merge).
INSERT INTO usage_daily_org
SELECT organization_id, day, usage_type, team_id, model, provider, sum(count), sum(sum), min(min), max(max), max(last_ts), max(latest),
    sum(llm_successes), sum(llm_failures), sum(input_tokens), sum(output_tokens), sum(cost_nanos), sum(latency_ms_sum)
FROM (
    SELECT h.*, first_value(last_value) OVER (
        PARTITION BY organization_id, day, usage_type, team_id, model, provider ORDER BY last_ts DESC, last_value DESC) AS latest
    FROM (SELECT *, date_trunc('day', hour, 'UTC') AS day FROM usage_hourly_org) h
) d
GROUP BY organization_id, day, usage_type, team_id, model, provider;
