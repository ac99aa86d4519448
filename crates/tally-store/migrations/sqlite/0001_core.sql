-- Tally core schema (SQLite). Times are INTEGER microseconds since the Unix epoch, money is
-- INTEGER nano-units. Tenant tables key on organization_id first (see DESIGN.md, scale path).

CREATE TABLE usage_types (
    key          TEXT PRIMARY KEY,
    name         TEXT NOT NULL,
    unit         TEXT NOT NULL,
    aggregation  TEXT NOT NULL,
    description  TEXT NOT NULL DEFAULT ''
);

CREATE TABLE plans (
    plan_id     TEXT PRIMARY KEY,
    body        TEXT NOT NULL,
    created_at  INTEGER NOT NULL
);

CREATE TABLE api_keys (
    key_id      TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    scope       TEXT NOT NULL,
    digest      TEXT NOT NULL UNIQUE,
    created_at  INTEGER NOT NULL,
    revoked_at  INTEGER
);

CREATE TABLE organizations (
    organization_id  TEXT PRIMARY KEY,
    name             TEXT NOT NULL,
    is_active        INTEGER NOT NULL DEFAULT 1,
    metadata         TEXT NOT NULL DEFAULT '{}',
    created_at       INTEGER NOT NULL
);

CREATE TABLE teams (
    organization_id  TEXT NOT NULL,
    team_id          TEXT NOT NULL,
    name             TEXT NOT NULL,
    metadata         TEXT NOT NULL DEFAULT '{}',
    created_at       INTEGER NOT NULL,
    PRIMARY KEY (organization_id, team_id)
);
CREATE INDEX teams_by_id ON teams (team_id);

CREATE TABLE users (
    organization_id  TEXT NOT NULL,
    user_id          TEXT NOT NULL,
    username         TEXT NOT NULL,
    email            TEXT NOT NULL DEFAULT '',
    first_name       TEXT NOT NULL DEFAULT '',
    last_name        TEXT NOT NULL DEFAULT '',
    role             INTEGER NOT NULL DEFAULT 400,
    is_bot           INTEGER NOT NULL DEFAULT 0,
    is_active        INTEGER NOT NULL DEFAULT 1,
    is_superuser     INTEGER NOT NULL DEFAULT 0,
    date_joined      INTEGER NOT NULL,
    last_login       INTEGER,
    last_activity    INTEGER,
    metadata         TEXT NOT NULL DEFAULT '{}',
    PRIMARY KEY (organization_id, user_id)
);
CREATE INDEX users_by_id ON users (user_id);

CREATE TABLE subscriptions (
    organization_id       TEXT NOT NULL,
    subscription_id       TEXT NOT NULL,
    plan_id               TEXT NOT NULL,
    status                TEXT NOT NULL,
    current_period_start  INTEGER NOT NULL,
    current_period_end    INTEGER NOT NULL,
    trial_end             INTEGER,
    add_ons               TEXT NOT NULL DEFAULT '{}',
    created_at            INTEGER NOT NULL,
    PRIMARY KEY (organization_id, subscription_id)
);
CREATE INDEX subscriptions_by_id ON subscriptions (subscription_id);

CREATE TABLE events (
    organization_id  TEXT NOT NULL,
    event_id         TEXT NOT NULL,
    ts               INTEGER NOT NULL,
    user_id          TEXT NOT NULL,
    team_id          TEXT,
    usage_type       TEXT NOT NULL,
    quantity         REAL NOT NULL,
    properties       TEXT,
    model            TEXT,
    provider         TEXT,
    status           TEXT,
    input_tokens     INTEGER,
    output_tokens    INTEGER,
    cost_nanos       INTEGER,
    latency_ms       INTEGER,
    received_at      INTEGER NOT NULL,
    UNIQUE (organization_id, event_id)
);
CREATE INDEX events_by_time ON events (organization_id, ts);
CREATE INDEX events_by_user ON events (organization_id, user_id, ts);

-- The aggregate columns, shared by the three roll-up tables:
-- count, sum, min, max, last_ts/last_value (latest gauge value), LLM successes/failures,
-- tokens, cost and latency sums.
CREATE TABLE usage_hourly (
    organization_id  TEXT NOT NULL,
    hour             INTEGER NOT NULL,
    usage_type       TEXT NOT NULL,
    team_id          TEXT NOT NULL,
    user_id          TEXT NOT NULL,
    model            TEXT NOT NULL,
    provider         TEXT NOT NULL,
    count            INTEGER NOT NULL,
    sum              REAL NOT NULL,
    min              REAL NOT NULL,
    max              REAL NOT NULL,
    last_ts          INTEGER NOT NULL,
    last_value       REAL NOT NULL,
    llm_successes    INTEGER NOT NULL,
    llm_failures     INTEGER NOT NULL,
    input_tokens     INTEGER NOT NULL,
    output_tokens    INTEGER NOT NULL,
    cost_nanos       INTEGER NOT NULL,
    latency_ms_sum   INTEGER NOT NULL,
    PRIMARY KEY (organization_id, hour, usage_type, team_id, user_id, model, provider)
) WITHOUT ROWID;
CREATE INDEX usage_hourly_by_user ON usage_hourly (organization_id, user_id, hour);

CREATE TABLE user_usage (
    organization_id  TEXT NOT NULL,
    user_id          TEXT NOT NULL,
    usage_type       TEXT NOT NULL,
    count            INTEGER NOT NULL,
    sum              REAL NOT NULL,
    min              REAL NOT NULL,
    max              REAL NOT NULL,
    last_ts          INTEGER NOT NULL,
    last_value       REAL NOT NULL,
    llm_successes    INTEGER NOT NULL,
    llm_failures     INTEGER NOT NULL,
    input_tokens     INTEGER NOT NULL,
    output_tokens    INTEGER NOT NULL,
    cost_nanos       INTEGER NOT NULL,
    latency_ms_sum   INTEGER NOT NULL,
    PRIMARY KEY (organization_id, user_id, usage_type)
) WITHOUT ROWID;

CREATE TABLE user_usage_monthly (
    organization_id  TEXT NOT NULL,
    user_id          TEXT NOT NULL,
    usage_type       TEXT NOT NULL,
    month            TEXT NOT NULL,
    count            INTEGER NOT NULL,
    sum              REAL NOT NULL,
    min              REAL NOT NULL,
    max              REAL NOT NULL,
    last_ts          INTEGER NOT NULL,
    last_value       REAL NOT NULL,
    llm_successes    INTEGER NOT NULL,
    llm_failures     INTEGER NOT NULL,
    input_tokens     INTEGER NOT NULL,
    output_tokens    INTEGER NOT NULL,
    cost_nanos       INTEGER NOT NULL,
    latency_ms_sum   INTEGER NOT NULL,
    PRIMARY KEY (organization_id, user_id, usage_type, month)
) WITHOUT ROWID;
