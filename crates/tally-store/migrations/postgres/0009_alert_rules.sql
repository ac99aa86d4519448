-- Threshold rules, notification channels and their outbox. Alerts of every source (reports and
-- rules) share one table: an alert names its source, the rule behind it if any, and a key that
-- says what "the same alert" means, so at most one alert per key is open.

ALTER TABLE alerts ADD COLUMN source TEXT NOT NULL DEFAULT 'churn_report';
ALTER TABLE alerts ALTER COLUMN source DROP DEFAULT;
ALTER TABLE alerts ADD COLUMN rule_id TEXT;
ALTER TABLE alerts ADD COLUMN alert_key TEXT;
UPDATE alerts SET alert_key = alert_type || ':' || user_id;
ALTER TABLE alerts ALTER COLUMN alert_key SET NOT NULL;
ALTER TABLE alerts ADD COLUMN team_id TEXT;
ALTER TABLE alerts ALTER COLUMN user_id DROP NOT NULL;
ALTER TABLE alerts ALTER COLUMN report_date DROP NOT NULL;
DROP INDEX alerts_one_open;
CREATE UNIQUE INDEX alerts_one_open ON alerts (organization_id, alert_key) WHERE status = 'open';
CREATE INDEX alerts_open_by_rule ON alerts (organization_id, rule_id) WHERE status = 'open';

-- Reference tables: rules (a plan's rule spans organizations) and channels.
CREATE TABLE alert_rules (
    rule_id     TEXT PRIMARY KEY,
    owner_id    TEXT,
    body        JSONB NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL
);

CREATE TABLE notification_channels (
    channel_id  TEXT PRIMARY KEY,
    owner_id    TEXT,
    body        JSONB NOT NULL,
    secret      TEXT,
    created_at  TIMESTAMPTZ NOT NULL
);

CREATE TABLE rule_states (
    organization_id  TEXT NOT NULL,
    rule_id          TEXT NOT NULL,
    subject          TEXT NOT NULL,
    window_start     TIMESTAMPTZ,
    level            BIGINT,
    value            TEXT NOT NULL,
    evaluated_at     TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (organization_id, rule_id, subject)
);
CREATE INDEX rule_states_by_rule ON rule_states (rule_id);

CREATE TABLE notification_deliveries (
    organization_id  TEXT NOT NULL,
    delivery_id      TEXT NOT NULL,
    channel_id       TEXT NOT NULL,
    alert_id         TEXT NOT NULL,
    event_type       TEXT NOT NULL,
    payload          JSONB NOT NULL,
    status           TEXT NOT NULL,
    attempts         BIGINT NOT NULL,
    attempt_log      JSONB NOT NULL,
    next_attempt_at  TIMESTAMPTZ NOT NULL,
    created_at       TIMESTAMPTZ NOT NULL,
    delivered_at     TIMESTAMPTZ,
    PRIMARY KEY (organization_id, delivery_id)
);
CREATE INDEX deliveries_due ON notification_deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX deliveries_by_time ON notification_deliveries (created_at);
CREATE INDEX deliveries_by_id ON notification_deliveries (delivery_id);
