-- The latency histograms of the LLM requests stored before migration 12, from the raw events.
-- Every LLM request counts in `requests`; those with a latency also in the buckets and the sum.
INSERT INTO llm_latency_daily
SELECT organization_id, user_id, day, sum(n), coalesce(sum(s), 0),
    coalesce(jsonb_object_agg(bucket, n) FILTER (WHERE bucket IS NOT NULL), '{}'::jsonb) FROM (
    SELECT organization_id, user_id, date_trunc('day', ts, 'UTC') AS day, tally_latency_bucket(latency_ms) AS bucket,
        count(*) AS n, sum(latency_ms) AS s
    FROM events WHERE usage_type = 'llm_request' GROUP BY 1, 2, 3, 4) b
GROUP BY organization_id, user_id, day;
INSERT INTO llm_latency_daily_org
SELECT organization_id, day, sum(n), coalesce(sum(s), 0),
    coalesce(jsonb_object_agg(bucket, n) FILTER (WHERE bucket IS NOT NULL), '{}'::jsonb) FROM (
    SELECT organization_id, date_trunc('day', ts, 'UTC') AS day, tally_latency_bucket(latency_ms) AS bucket,
        count(*) AS n, sum(latency_ms) AS s
    FROM events WHERE usage_type = 'llm_request' GROUP BY 1, 2, 3) b
GROUP BY organization_id, day;
