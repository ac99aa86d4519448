-- LLM request latencies per user and UTC day, and per organization and UTC day, as histograms
-- (`buckets`: a JSON object of log-spaced bucket → requests; see tally_domain::llm::latency),
-- so that a summary's percentiles read one row per day instead of one per request.
CREATE TABLE llm_latency_daily (
    organization_id  TEXT NOT NULL,
    user_id          TEXT NOT NULL,
    day              TIMESTAMPTZ NOT NULL,
    requests         BIGINT NOT NULL,
    latency_ms_sum   BIGINT NOT NULL,
    buckets          JSONB NOT NULL,
    PRIMARY KEY (organization_id, user_id, day)
);
CREATE TABLE llm_latency_daily_org (
    organization_id  TEXT NOT NULL,
    day              TIMESTAMPTZ NOT NULL,
    requests         BIGINT NOT NULL,
    latency_ms_sum   BIGINT NOT NULL,
    buckets          JSONB NOT NULL,
    PRIMARY KEY (organization_id, day)
);
-- Adds two bucket objects key by key (ingestion merges a batch's histogram into the stored one).
CREATE FUNCTION tally_merge_buckets(a JSONB, b JSONB) RETURNS JSONB LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT coalesce(jsonb_object_agg(key, n), '{}'::jsonb)
    FROM (SELECT key, sum(value::bigint) AS n FROM (SELECT * FROM jsonb_each_text(a) UNION ALL SELECT * FROM jsonb_each_text(b)) kv GROUP BY key) s
$$;
-- The domain's bucket function (tally_domain::llm::latency::bucket_of), for the backfill (migration 13).
CREATE FUNCTION tally_latency_bucket(ms BIGINT) RETURNS INT LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT CASE WHEN ms <= 0 THEN 0 ELSE 1 + ceil(ln(ms::float8) / ln(1.01::float8 / 0.99::float8))::int END
$$;
