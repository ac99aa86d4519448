-- Latency histograms kept as the text of their JSON object instead of JSONB. A summary reads
-- every day of a user's histogram (a heavy user's 90 days: about 0.5 MB), and turning JSONB
-- back into text cost the server about 5 ms of the read; text is sent as stored. Ingestion's
-- merge parses the stored object instead (one object per day touched by a batch).
ALTER TABLE llm_daily ALTER COLUMN buckets TYPE TEXT USING buckets::text;
ALTER TABLE llm_latency_daily_org ALTER COLUMN buckets TYPE TEXT USING buckets::text;
CREATE FUNCTION tally_merge_buckets(a TEXT, b TEXT) RETURNS TEXT LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT tally_merge_buckets(a::jsonb, b::jsonb)::text
$$;
