-- The per-user hourly roll-up is keyed by user first (a user's series is one range scan) and an
-- organization-wide hourly roll-up without the user dimension serves organization and team
-- series. Raw events keep only the dedup key and the time index: per-user edge queries filter
-- the organization's events of a partial hour.
DROP INDEX events_by_user;
DROP INDEX usage_hourly_by_user;
ALTER TABLE usage_hourly DROP CONSTRAINT usage_hourly_pkey;
ALTER TABLE usage_hourly ADD PRIMARY KEY (organization_id, user_id, hour, usage_type, team_id, model, provider);

CREATE TABLE usage_hourly_org (
    organization_id  TEXT NOT NULL,
    hour             TIMESTAMPTZ NOT NULL,
    usage_type       TEXT NOT NULL,
    team_id          TEXT NOT NULL,
    model            TEXT NOT NULL,
    provider         TEXT NOT NULL,
    count            BIGINT NOT NULL,
    sum              DOUBLE PRECISION NOT NULL,
    min              DOUBLE PRECISION NOT NULL,
    max              DOUBLE PRECISION NOT NULL,
    last_ts          TIMESTAMPTZ NOT NULL,
    last_value       DOUBLE PRECISION NOT NULL,
    llm_successes    BIGINT NOT NULL,
    llm_failures     BIGINT NOT NULL,
    input_tokens     BIGINT NOT NULL,
    output_tokens    BIGINT NOT NULL,
    cost_nanos       BIGINT NOT NULL,
    latency_ms_sum   BIGINT NOT NULL,
    PRIMARY KEY (organization_id, hour, usage_type, team_id, model, provider)
);
-- The latest value of a cell: the one with the latest time, ties to the larger value (as Aggregate::merge).
INSERT INTO usage_hourly_org
SELECT organization_id, hour, usage_type, team_id, model, provider, sum(count), sum(sum), min(min), max(max), max(last_ts),
    (array_agg(last_value ORDER BY last_ts DESC, last_value DESC))[1],
    sum(llm_successes), sum(llm_failures), sum(input_tokens), sum(output_tokens), sum(cost_nanos), sum(latency_ms_sum)
FROM usage_hourly GROUP BY organization_id, hour, usage_type, team_id, model, provider;
