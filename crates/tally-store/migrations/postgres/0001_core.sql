-- Tally core schema (PostgreSQL). Times are TIMESTAMPTZ, money is BIGINT nano-units.
-- Tenant tables key on organization_id first (see DESIGN.md, scale path).

CREATE TABLE usage_types (
    key          TEXT PRIMARY KEY,
    name         TEXT NOT NULL,
    unit         TEXT NOT NULL,
    aggregation  TEXT NOT NULL,
    description  TEXT NOT NULL DEFAULT ''
);

CREATE TABLE plans (
    plan_id     TEXT PRIMARY KEY,
    body        JSONB NOT NULL,
    created_at TIMESTAMPTZ NOT NULL
);

CREATE TABLE api_keys (
    key_id      TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    scope       TEXT NOT NULL,
    digest      TEXT NOT NULL UNIQUE,
    created_at TIMESTAMPTZ NOT NULL,
    revoked_at TIMESTAMPTZ
);

CREATE TABLE organizations (
    organization_id  TEXT PRIMARY KEY,
    name             TEXT NOT NULL,
    is_active        BOOLEAN NOT NULL DEFAULT TRUE,
    metadata         JSONB NOT NULL DEFAULT '{}',
    created_at TIMESTAMPTZ NOT NULL
);

CREATE TABLE teams (
    organization_id  TEXT NOT NULL,
    team_id          TEXT NOT NULL,
    name             TEXT NOT NULL,
    metadata         JSONB NOT NULL DEFAULT '{}',
    created_at TIMESTAMPTZ NOT NULL,
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
    role             SMALLINT NOT NULL DEFAULT 400,
    is_bot           BOOLEAN NOT NULL DEFAULT FALSE,
    is_active        BOOLEAN NOT NULL DEFAULT TRUE,
    is_superuser     BOOLEAN NOT NULL DEFAULT FALSE,
    date_joined TIMESTAMPTZ NOT NULL,
    last_login TIMESTAMPTZ,
    last_activity TIMESTAMPTZ,
    metadata         JSONB NOT NULL DEFAULT '{}',
    PRIMARY KEY (organization_id, user_id)
);
CREATE INDEX users_by_id ON users (user_id);

CREATE TABLE subscriptions (
    organization_id       TEXT NOT NULL,
    subscription_id       TEXT NOT NULL,
    plan_id               TEXT NOT NULL,
    status                TEXT NOT NULL,
    current_period_start TIMESTAMPTZ NOT NULL,
    current_period_end TIMESTAMPTZ NOT NULL,
    trial_end TIMESTAMPTZ,
    add_ons               JSONB NOT NULL DEFAULT '{}',
    created_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (organization_id, subscription_id)
);
CREATE INDEX subscriptions_by_id ON subscriptions (subscription_id);

CREATE TABLE events (
    organization_id  TEXT NOT NULL,
    event_id         TEXT NOT NULL,
    ts               TIMESTAMPTZ NOT NULL,
    user_id          TEXT NOT NULL,
    team_id          TEXT,
    usage_type       TEXT NOT NULL,
    quantity         DOUBLE PRECISION NOT NULL,
    properties       JSONB,
    model            TEXT,
    provider         TEXT,
    status           TEXT,
    input_tokens BIGINT,
    output_tokens BIGINT,
    cost_nanos BIGINT,
    latency_ms BIGINT,
    received_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (organization_id, event_id)
);
CREATE INDEX events_by_time ON events (organization_id, ts);
CREATE INDEX events_by_user ON events (organization_id, user_id, ts);

-- The aggregate columns, shared by the three roll-up tables:
-- count, sum, min, max, last_ts/last_value (latest gauge value), LLM successes/failures,
-- tokens, cost and latency sums.
CREATE TABLE usage_hourly (
    organization_id  TEXT NOT NULL,
    hour             TIMESTAMPTZ NOT NULL,
    usage_type       TEXT NOT NULL,
    team_id          TEXT NOT NULL,
    user_id          TEXT NOT NULL,
    model            TEXT NOT NULL,
    provider         TEXT NOT NULL,
    count BIGINT NOT NULL,
    sum              DOUBLE PRECISION NOT NULL,
    min              DOUBLE PRECISION NOT NULL,
    max              DOUBLE PRECISION NOT NULL,
    last_ts TIMESTAMPTZ NOT NULL,
    last_value       DOUBLE PRECISION NOT NULL,
    llm_successes BIGINT NOT NULL,
    llm_failures BIGINT NOT NULL,
    input_tokens BIGINT NOT NULL,
    output_tokens BIGINT NOT NULL,
    cost_nanos BIGINT NOT NULL,
    latency_ms_sum BIGINT NOT NULL,
    PRIMARY KEY (organization_id, hour, usage_type, team_id, user_id, model, provider)
);
CREATE INDEX usage_hourly_by_user ON usage_hourly (organization_id, user_id, hour);

CREATE TABLE user_usage (
    organization_id  TEXT NOT NULL,
    user_id          TEXT NOT NULL,
    usage_type       TEXT NOT NULL,
    count BIGINT NOT NULL,
    sum              DOUBLE PRECISION NOT NULL,
    min              DOUBLE PRECISION NOT NULL,
    max              DOUBLE PRECISION NOT NULL,
    last_ts TIMESTAMPTZ NOT NULL,
    last_value       DOUBLE PRECISION NOT NULL,
    llm_successes BIGINT NOT NULL,
    llm_failures BIGINT NOT NULL,
    input_tokens BIGINT NOT NULL,
    output_tokens BIGINT NOT NULL,
    cost_nanos BIGINT NOT NULL,
    latency_ms_sum BIGINT NOT NULL,
    PRIMARY KEY (organization_id, user_id, usage_type)
);

CREATE TABLE user_usage_monthly (
    organization_id  TEXT NOT NULL,
    user_id          TEXT NOT NULL,
    usage_type       TEXT NOT NULL,
    month            DATE NOT NULL,
    count BIGINT NOT NULL,
    sum              DOUBLE PRECISION NOT NULL,
    min              DOUBLE PRECISION NOT NULL,
    max              DOUBLE PRECISION NOT NULL,
    last_ts TIMESTAMPTZ NOT NULL,
    last_value       DOUBLE PRECISION NOT NULL,
    llm_successes BIGINT NOT NULL,
    llm_failures BIGINT NOT NULL,
    input_tokens BIGINT NOT NULL,
    output_tokens BIGINT NOT NULL,
    cost_nanos BIGINT NOT NULL,
    latency_ms_sum BIGINT NOT NULL,
    PRIMARY KEY (organization_id, user_id, usage_type, month)
);
