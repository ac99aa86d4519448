-- The organization-wide roll-up per UTC week (`week` at Monday midnight, as series weeks
-- start), so that weekly series read one row per week and dimension instead of seven daily
-- ones. Derived from the daily cells here, kept by ingestion from now on.
CREATE TABLE usage_weekly_org (
    organization_id  TEXT NOT NULL,
    week             INTEGER NOT NULL,
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
    PRIMARY KEY (organization_id, week, usage_type, team_id, model, provider)
) WITHOUT ROWID;
-- A day's Monday: day 0 of the Unix epoch (1970-01-01) was a Thursday. The latest value of a
-- week is its latest day's, ties to the larger value (as Aggregate::merge).
INSERT INTO usage_weekly_org
SELECT organization_id, week, usage_type, team_id, model, provider, sum(count), sum(sum), min(min), max(max), max(last_ts), max(latest),
    sum(llm_successes), sum(llm_failures), sum(input_tokens), sum(output_tokens), sum(cost_nanos), sum(latency_ms_sum)
FROM (
    SELECT d.*, first_value(last_value) OVER (
        PARTITION BY organization_id, week, usage_type, team_id, model, provider ORDER BY last_ts DESC, last_value DESC) AS latest
    FROM (SELECT *, (day / 86400000000 - (day / 86400000000 + 3) % 7) * 86400000000 AS week FROM usage_daily_org) d
) w
GROUP BY organization_id, week, usage_type, team_id, model, provider;
