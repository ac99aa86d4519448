-- Seats: audit events with the role counts at their moment, the license ledger, self-hosted
-- servers and what they push. Audit rows and ledger rows are tenant data keyed by organization;
-- servers are small global reference data.

CREATE TABLE audit_events (
    organization_id  TEXT NOT NULL,
    audit_id         TEXT NOT NULL,
    event_time       TIMESTAMPTZ NOT NULL,
    event_type       SMALLINT NOT NULL,
    user_id          TEXT,
    role             SMALLINT,
    old_role         SMALLINT,
    new_role         SMALLINT,
    is_bot           BOOLEAN NOT NULL DEFAULT FALSE,
    plan_id          TEXT,
    -- {"humans": {"100": n, …}, "bots": n}; NULL when neither sender nor Tally knew them.
    role_counts      JSONB,
    backfilled       BOOLEAN NOT NULL DEFAULT FALSE,
    server_id        TEXT,
    received_at      TIMESTAMPTZ NOT NULL,
    -- FALSE until the ledger job has turned the row into ledger rows.
    processed        BOOLEAN NOT NULL DEFAULT FALSE,
    PRIMARY KEY (organization_id, audit_id)
);
CREATE INDEX audit_events_by_time ON audit_events (organization_id, event_time, audit_id);
-- The seat count at a moment reads the latest row with counts, and the latest on/off switch.
CREATE INDEX audit_events_with_counts ON audit_events (organization_id, event_time, audit_id) WHERE role_counts IS NOT NULL;
CREATE INDEX audit_events_switches ON audit_events (organization_id, event_time, audit_id) WHERE event_type IN (201, 202);
CREATE INDEX audit_events_unprocessed ON audit_events (event_time, organization_id, audit_id) WHERE NOT processed;

CREATE TABLE license_ledger (
    organization_id           TEXT NOT NULL,
    seq                       BIGINT NOT NULL,
    audit_organization_id     TEXT NOT NULL,
    audit_id                  TEXT NOT NULL,
    event_time                TIMESTAMPTZ NOT NULL,
    licenses                  BIGINT NOT NULL,
    licenses_at_next_renewal  BIGINT NOT NULL,
    is_renewal                BOOLEAN NOT NULL,
    created_at                TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (organization_id, audit_organization_id, audit_id),
    UNIQUE (organization_id, seq)
);

CREATE TABLE servers (
    server_id                   TEXT PRIMARY KEY,
    organization_id             TEXT NOT NULL,
    hostname                    TEXT NOT NULL,
    contact_email               TEXT NOT NULL,
    key_id                      TEXT NOT NULL,
    created_at                  TIMESTAMPTZ NOT NULL,
    last_push_at                TIMESTAMPTZ,
    last_audit_log_id           BIGINT,
    last_realm_count_id         BIGINT,
    last_installation_count_id  BIGINT
);

-- A server's realm, as the organization it became.
CREATE TABLE remote_realms (
    organization_id  TEXT PRIMARY KEY,
    server_id        TEXT NOT NULL,
    remote_id        BIGINT NOT NULL,
    uuid             TEXT NOT NULL DEFAULT '',
    name             TEXT NOT NULL,
    deactivated      BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE INDEX remote_realms_by_server ON remote_realms (server_id);

-- realm_counts rows under their realm's organization; installation_counts rows under the
-- server's own organization.
CREATE TABLE remote_counts (
    organization_id  TEXT NOT NULL,
    remote_id        BIGINT NOT NULL,
    server_id        TEXT NOT NULL,
    realm_id         BIGINT,
    property         TEXT NOT NULL,
    subgroup         TEXT,
    end_time         TIMESTAMPTZ NOT NULL,
    value            BIGINT NOT NULL,
    PRIMARY KEY (organization_id, remote_id)
);
