-- A user's LLM request history and latencies from one index: the partial index on LLM requests
-- also holds the latency, so a summary's percentiles need no visit to the events themselves.
DROP INDEX events_llm_by_user;
CREATE INDEX events_llm_by_user ON events (organization_id, user_id, ts, latency_ms) WHERE usage_type = 'llm_request';
