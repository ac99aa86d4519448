-- Meters of the OpenMeter-compatible API, per organization: keyed by slug (which is also the
-- usage type they record into), with a unique id; the definition is stored whole as JSON.
CREATE TABLE meters (
    organization_id  TEXT NOT NULL,
    slug             TEXT NOT NULL,
    meter_id         TEXT NOT NULL,
    event_type       TEXT NOT NULL,
    body             JSONB NOT NULL,
    PRIMARY KEY (organization_id, slug),
    UNIQUE (organization_id, meter_id)
);
CREATE INDEX meters_by_event_type ON meters (organization_id, event_type);
