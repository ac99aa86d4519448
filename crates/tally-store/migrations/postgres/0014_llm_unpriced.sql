-- LLM requests stored without a cost (none given, none priced), counted per organization and
-- model as they are ingested, so that the list of models to price reads one row per model
-- instead of scanning every request. Derived from events like the other roll-ups.
CREATE TABLE llm_unpriced (
    organization_id  TEXT NOT NULL,
    model            TEXT NOT NULL,
    requests         BIGINT NOT NULL,
    last_seen        TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (organization_id, model)
);
INSERT INTO llm_unpriced
SELECT organization_id, COALESCE(model, ''), count(*), max(ts) FROM events
WHERE usage_type = 'llm_request' AND cost_nanos IS NULL GROUP BY organization_id, COALESCE(model, '');
