-- Daily reports: churn-risk rows per subscriber and day, the alerts they raise, and the runs.

CREATE TABLE churn_scores (
    organization_id     TEXT NOT NULL,
    report_date         DATE NOT NULL,
    user_id             TEXT NOT NULL,
    score               DOUBLE PRECISION NOT NULL,
    risk_level          TEXT NOT NULL,
    details             JSONB NOT NULL,
    login_count         BIGINT NOT NULL,
    login_trend         TEXT NOT NULL,
    days_until_renewal  BIGINT,
    schema_version      BIGINT NOT NULL,
    computed_at         TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (organization_id, report_date, user_id)
);
CREATE INDEX churn_scores_by_date ON churn_scores (report_date, score);
-- The high-risk list of a day: one range of this index.
CREATE INDEX churn_scores_by_level ON churn_scores (report_date, risk_level, score);
CREATE INDEX churn_scores_by_user ON churn_scores (organization_id, user_id, report_date);

CREATE TABLE alerts (
    organization_id  TEXT NOT NULL,
    alert_id         TEXT NOT NULL,
    user_id          TEXT NOT NULL,
    alert_type       TEXT NOT NULL,
    severity         TEXT NOT NULL,
    status           TEXT NOT NULL,   -- open | resolved
    report_date      DATE NOT NULL,   -- the report that opened it
    details          JSONB NOT NULL,
    opened_at        TIMESTAMPTZ NOT NULL,
    resolved_at      TIMESTAMPTZ,
    resolution       TEXT,            -- auto | manual
    action_taken     TEXT,
    PRIMARY KEY (organization_id, alert_id)
);
-- At most one open alert per user and type.
CREATE UNIQUE INDEX alerts_one_open ON alerts (organization_id, user_id, alert_type) WHERE status = 'open';
CREATE INDEX alerts_by_id ON alerts (alert_id);
CREATE INDEX alerts_by_time ON alerts (opened_at);

CREATE TABLE report_runs (
    run_id           TEXT PRIMARY KEY,
    report           TEXT NOT NULL,
    report_date      DATE NOT NULL,
    organization_id  TEXT,
    status           TEXT NOT NULL,   -- succeeded | failed
    rows_written     BIGINT NOT NULL,
    alerts_opened    BIGINT NOT NULL,
    alerts_resolved  BIGINT NOT NULL,
    started_at       TIMESTAMPTZ NOT NULL,
    duration_ms      BIGINT NOT NULL,
    error            TEXT
);
CREATE INDEX report_runs_by_date ON report_runs (report, report_date);
