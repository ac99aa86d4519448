-- The latency histograms of the LLM requests stored before migration 12, from the raw events.
-- The function tally_latency_bucket is the domain's bucket function, registered on every connection.
-- Every LLM request counts in `requests`; those with a latency also in the buckets and the sum.
INSERT INTO llm_latency_daily
SELECT organization_id, user_id, day, sum(n), coalesce(sum(s), 0), json_group_object(bucket, n) FILTER (WHERE bucket IS NOT NULL) FROM (
    SELECT organization_id, user_id, ts - ts % 86400000000 AS day,
        CASE WHEN latency_ms IS NOT NULL THEN CAST(tally_latency_bucket(latency_ms) AS TEXT) END AS bucket,
        count(*) AS n, sum(latency_ms) AS s
    FROM events WHERE usage_type = 'llm_request' GROUP BY 1, 2, 3, 4)
GROUP BY organization_id, user_id, day;
INSERT INTO llm_latency_daily_org
SELECT organization_id, day, sum(n), coalesce(sum(s), 0), json_group_object(bucket, n) FILTER (WHERE bucket IS NOT NULL) FROM (
    SELECT organization_id, ts - ts % 86400000000 AS day,
        CASE WHEN latency_ms IS NOT NULL THEN CAST(tally_latency_bucket(latency_ms) AS TEXT) END AS bucket,
        count(*) AS n, sum(latency_ms) AS s
    FROM events WHERE usage_type = 'llm_request' GROUP BY 1, 2, 3)
GROUP BY organization_id, day;
