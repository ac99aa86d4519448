-- LLM request latencies per user and UTC day, and per organization and UTC day, as histograms
-- (`buckets`: a JSON object of log-spaced bucket → requests; see tally_domain::llm::latency),
-- so that a summary's percentiles read one row per day instead of one per request.
CREATE TABLE llm_latency_daily (
    organization_id  TEXT NOT NULL,
    user_id          TEXT NOT NULL,
    day              INTEGER NOT NULL,
    requests         INTEGER NOT NULL,
    latency_ms_sum   INTEGER NOT NULL,
    buckets          TEXT NOT NULL,
    PRIMARY KEY (organization_id, user_id, day)
);
CREATE TABLE llm_latency_daily_org (
    organization_id  TEXT NOT NULL,
    day              INTEGER NOT NULL,
    requests         INTEGER NOT NULL,
    latency_ms_sum   INTEGER NOT NULL,
    buckets          TEXT NOT NULL,
    PRIMARY KEY (organization_id, day)
);
