-- An organization's cells for a series are a few thousand rows that upserts have scattered over
-- the heap, one page per few rows, and a page not in shared buffers costs a read. Read from an
-- index that holds every column they select (an index-only scan), they sit on consecutive leaf
-- pages in key order instead: measured on a 2-million-event store, an organization's 90 days of
-- daily cells and of per-user `storage_bytes` cells read cold in 2.0 and 1.0 ms instead of 4.6
-- and 5.9 ms. Index-only scans need the visibility map, which `VACUUM` keeps (Tally vacuums its
-- tables hourly, see `refresh_statistics`). The price: an update that changes an included column
-- is no longer HOT, and per-user hourly cells get a second index.

-- The daily cells' key, now covering every column a read selects.
ALTER TABLE usage_daily_org DROP CONSTRAINT usage_daily_org_pkey;
ALTER TABLE usage_daily_org ADD PRIMARY KEY (organization_id, day, usage_type, team_id, model, provider)
    INCLUDE (count, sum, min, max, last_ts, last_value, llm_successes, llm_failures, input_tokens, output_tokens, cost_nanos, latency_ms_sum);

-- Per-user cells of an organization by usage type and hour, as series read them for figures that
-- look at each user (latest values, distinct users, breakdowns by user); the key
-- (organization_id, user_id, hour, …) would read every type's cells of every user.
CREATE INDEX usage_hourly_by_type ON usage_hourly (organization_id, usage_type, hour)
    INCLUDE (user_id, team_id, model, provider, count, sum, min, max, last_ts, last_value,
             llm_successes, llm_failures, input_tokens, output_tokens, cost_nanos, latency_ms_sum);
