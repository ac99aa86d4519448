-- The organization-wide roll-up per UTC calendar month (`month` at its first instant), so that
-- monthly series over many organizations read one row per month and dimension instead of one
-- per hour. Derived from the hourly cells here, kept by ingestion from now on.
CREATE TABLE usage_monthly_org (
    organization_id  TEXT NOT NULL,
    month            TIMESTAMPTZ NOT NULL,
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
    PRIMARY KEY (organization_id, month, usage_type, team_id, model, provider)
);
-- The latest value of a month: its latest cell's, ties to the larger value (as Aggregate::merge).
INSERT INTO usage_monthly_org
SELECT organization_id, month, usage_type, team_id, model, provider, sum(count), sum(sum), min(min), max(max), max(last_ts), max(latest),
    sum(llm_successes), sum(llm_failures), sum(input_tokens), sum(output_tokens), sum(cost_nanos), sum(latency_ms_sum)
FROM (
    SELECT h.*, first_value(last_value) OVER (
        PARTITION BY organization_id, month, usage_type, team_id, model, provider ORDER BY last_ts DESC, last_value DESC) AS latest
    FROM (SELECT *, date_trunc('month', hour, 'UTC') AS month FROM usage_hourly_org) h
) m
GROUP BY organization_id, month, usage_type, team_id, model, provider;
