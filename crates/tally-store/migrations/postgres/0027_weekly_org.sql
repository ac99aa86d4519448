-- The organization-wide roll-up per UTC week (`week` at Monday midnight, as series weeks
-- start), so that weekly series read one row per week and dimension instead of seven daily
-- ones: an organization's 90 days by type and team were about 3,400 daily rows grouped on the
-- server, half of the read's time. Derived from the daily cells here, kept by ingestion from
-- now on; updated in place (migration 20), with a key that covers every column a read selects
-- (migration 24).
CREATE TABLE usage_weekly_org (
    organization_id  TEXT NOT NULL,
    week             TIMESTAMPTZ NOT NULL,
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
    PRIMARY KEY (organization_id, week, usage_type, team_id, model, provider)
        INCLUDE (count, sum, min, max, last_ts, last_value, llm_successes, llm_failures, input_tokens, output_tokens, cost_nanos, latency_ms_sum)
) WITH (fillfactor = 80);
-- The latest value of a week: its latest day's, ties to the larger value (as Aggregate::merge).
INSERT INTO usage_weekly_org
SELECT organization_id, week, usage_type, team_id, model, provider, sum(count), sum(sum), min(min), max(max), max(last_ts), max(latest),
    sum(llm_successes), sum(llm_failures), sum(input_tokens), sum(output_tokens), sum(cost_nanos), sum(latency_ms_sum)
FROM (
    SELECT d.*, first_value(last_value) OVER (
        PARTITION BY organization_id, week, usage_type, team_id, model, provider ORDER BY last_ts DESC, last_value DESC) AS latest
    FROM (SELECT *, date_trunc('week', day, 'UTC') AS week FROM usage_daily_org) d
) w
GROUP BY organization_id, week, usage_type, team_id, model, provider;
