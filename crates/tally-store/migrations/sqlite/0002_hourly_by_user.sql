-- The per-user hourly roll-up is keyed by user first (a user's series is one range scan) and an
-- organization-wide hourly roll-up without the user dimension serves organization and team
-- series. Raw events keep only the dedup key and the time index: per-user edge queries filter
-- the organization's events of a partial hour.
DROP INDEX events_by_user;
DROP INDEX usage_hourly_by_user;
ALTER TABLE usage_hourly RENAME TO usage_hourly_old;

CREATE TABLE usage_hourly (
    organization_id  TEXT NOT NULL,
    user_id          TEXT NOT NULL,
    hour             INTEGER NOT NULL,
    usage_type       TEXT NOT NULL,
    team_id          TEXT NOT NULL,
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
    PRIMARY KEY (organization_id, user_id, hour, usage_type, team_id, model, provider)
) WITHOUT ROWID;
INSERT INTO usage_hourly SELECT organization_id, user_id, hour, usage_type, team_id, model, provider, count, sum, min, max,
    last_ts, last_value, llm_successes, llm_failures, input_tokens, output_tokens, cost_nanos, latency_ms_sum
    FROM usage_hourly_old;
DROP TABLE usage_hourly_old;

CREATE TABLE usage_hourly_org (
    organization_id  TEXT NOT NULL,
    hour             INTEGER NOT NULL,
    usage_type       TEXT NOT NULL,
    team_id          TEXT NOT NULL,
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
    PRIMARY KEY (organization_id, hour, usage_type, team_id, model, provider)
) WITHOUT ROWID;
-- The latest value of a cell: the one with the latest time, ties to the larger value (as Aggregate::merge).
INSERT INTO usage_hourly_org
SELECT organization_id, hour, usage_type, team_id, model, provider, sum(count), sum(sum), min(min), max(max), max(last_ts),
    (SELECT h.last_value FROM usage_hourly h WHERE h.organization_id = g.organization_id AND h.hour = g.hour
        AND h.usage_type = g.usage_type AND h.team_id = g.team_id AND h.model = g.model AND h.provider = g.provider
        ORDER BY h.last_ts DESC, h.last_value DESC LIMIT 1),
    sum(llm_successes), sum(llm_failures), sum(input_tokens), sum(output_tokens), sum(cost_nanos), sum(latency_ms_sum)
FROM usage_hourly g GROUP BY organization_id, hour, usage_type, team_id, model, provider;
