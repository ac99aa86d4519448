-- The LLM price table (reference data) and its version, raised by every change; events record
-- the version that priced them when Tally computed their cost at ingest.
CREATE TABLE llm_prices (
    model  TEXT PRIMARY KEY,
    body   TEXT NOT NULL
);
CREATE TABLE llm_price_table (
    singleton  INTEGER PRIMARY KEY CHECK (singleton = 1),
    version    BIGINT NOT NULL
);
INSERT INTO llm_price_table (singleton, version) VALUES (1, 0);
ALTER TABLE events ADD COLUMN price_version BIGINT;
