-- Threshold rules, notification channels and their outbox. Alerts of every source (reports and
-- rules) share one table: an alert names its source, the rule behind it if any, and a key that
-- says what "the same alert" means, so at most one alert per key is open.

CREATE TABLE alerts_v2 (
    organization_id  TEXT NOT NULL,   -- '' for system alerts
    alert_id         TEXT NOT NULL,
    source           TEXT NOT NULL,   -- churn_report | rule | system
    rule_id          TEXT,
    alert_key        TEXT NOT NULL,
    user_id          TEXT,
    team_id          TEXT,
    alert_type       TEXT NOT NULL,
    severity         TEXT NOT NULL,
    status           TEXT NOT NULL,   -- open | resolved
    report_date      TEXT,            -- the report that opened it, if a report did
    details          TEXT NOT NULL,
    opened_at        INTEGER NOT NULL,
    resolved_at      INTEGER,
    resolution       TEXT,            -- auto | manual
    action_taken     TEXT,
    PRIMARY KEY (organization_id, alert_id)
);
INSERT INTO alerts_v2
SELECT organization_id, alert_id, 'churn_report', NULL, alert_type || ':' || user_id, user_id, NULL, alert_type, severity, status,
       report_date, details, opened_at, resolved_at, resolution, action_taken
FROM alerts;
DROP TABLE alerts;
ALTER TABLE alerts_v2 RENAME TO alerts;
CREATE UNIQUE INDEX alerts_one_open ON alerts (organization_id, alert_key) WHERE status = 'open';
CREATE INDEX alerts_by_id ON alerts (alert_id);
CREATE INDEX alerts_by_time ON alerts (opened_at);
CREATE INDEX alerts_open_by_rule ON alerts (organization_id, rule_id) WHERE status = 'open';

-- Reference tables: rules (a plan's rule spans organizations) and channels.
CREATE TABLE alert_rules (
    rule_id     TEXT PRIMARY KEY,
    owner_id    TEXT,                 -- the managing organization; NULL for operators
    body        TEXT NOT NULL,
    updated_at  INTEGER NOT NULL
);

CREATE TABLE notification_channels (
    channel_id  TEXT PRIMARY KEY,
    owner_id    TEXT,
    body        TEXT NOT NULL,
    secret      TEXT,
    created_at  INTEGER NOT NULL
);

-- What the last evaluation of a rule for a subject left: the window and the level reached.
CREATE TABLE rule_states (
    organization_id  TEXT NOT NULL,   -- '' for the all scope
    rule_id          TEXT NOT NULL,
    subject          TEXT NOT NULL,
    window_start     INTEGER,
    level            INTEGER,
    value            TEXT NOT NULL,
    evaluated_at     INTEGER NOT NULL,
    PRIMARY KEY (organization_id, rule_id, subject)
);
CREATE INDEX rule_states_by_rule ON rule_states (rule_id);

-- The outbox: written in the transaction that opens or resolves an alert, emptied by the
-- delivery worker. `next_attempt_at` doubles as the claim: a claimed row is pushed a lease ahead.
CREATE TABLE notification_deliveries (
    organization_id  TEXT NOT NULL,
    delivery_id      TEXT NOT NULL,
    channel_id       TEXT NOT NULL,
    alert_id         TEXT NOT NULL,
    event_type       TEXT NOT NULL,
    payload          TEXT NOT NULL,
    status           TEXT NOT NULL,   -- pending | delivered | failed
    attempts         INTEGER NOT NULL,
    attempt_log      TEXT NOT NULL,
    next_attempt_at  INTEGER NOT NULL,
    created_at       INTEGER NOT NULL,
    delivered_at     INTEGER,
    PRIMARY KEY (organization_id, delivery_id)
);
CREATE INDEX deliveries_due ON notification_deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX deliveries_by_time ON notification_deliveries (created_at);
CREATE INDEX deliveries_by_id ON notification_deliveries (delivery_id);
