-- A user's LLM requests per UTC day, model and provider, with the histogram of their latencies
-- (`buckets`, as in llm_latency_daily_org), so that summaries and breakdowns over long ranges
-- read one row per day and model instead of one per hour. It replaces the per-user latency days.
-- Derived from the per-user hourly cells and the raw requests here, kept by ingestion from now on.
CREATE TABLE llm_daily (
    organization_id  TEXT NOT NULL,
    user_id          TEXT NOT NULL,
    day              INTEGER NOT NULL,
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
    buckets          TEXT NOT NULL,
    PRIMARY KEY (organization_id, user_id, day, model, provider)
) WITHOUT ROWID;
-- The latest value of a day: its latest cell's, ties to the larger value (as Aggregate::merge).
INSERT INTO llm_daily
SELECT organization_id, user_id, day, model, provider, sum(count), sum(sum), min(min), max(max), max(last_ts), max(latest),
    sum(llm_successes), sum(llm_failures), sum(input_tokens), sum(output_tokens), sum(cost_nanos), sum(latency_ms_sum), '{}'
FROM (
    SELECT h.*, first_value(last_value) OVER (
        PARTITION BY organization_id, user_id, day, model, provider ORDER BY last_ts DESC, last_value DESC) AS latest
    FROM (SELECT *, hour - hour % 86400000000 AS day FROM usage_hourly WHERE usage_type = 'llm_request') h
) d
GROUP BY organization_id, user_id, day, model, provider;
-- The buckets from the requests that reported a latency (tally_latency_bucket is the domain's
-- bucket function, registered on every connection).
UPDATE llm_daily SET buckets = b.buckets FROM (
    SELECT organization_id, user_id, day, model, provider, json_group_object(bucket, n) AS buckets FROM (
        SELECT organization_id, user_id, ts - ts % 86400000000 AS day, COALESCE(model, '') AS model,
            COALESCE(provider, '') AS provider, CAST(tally_latency_bucket(latency_ms) AS TEXT) AS bucket, count(*) AS n
        FROM events WHERE usage_type = 'llm_request' AND latency_ms IS NOT NULL GROUP BY 1, 2, 3, 4, 5, 6)
    GROUP BY organization_id, user_id, day, model, provider) b
WHERE llm_daily.organization_id = b.organization_id AND llm_daily.user_id = b.user_id AND llm_daily.day = b.day
    AND llm_daily.model = b.model AND llm_daily.provider = b.provider;
DROP TABLE llm_latency_daily;
