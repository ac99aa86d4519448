-- Seats: audit events with the role counts at their moment, the license ledger, self-hosted
-- servers and what they push. Audit rows and ledger rows are tenant data keyed by organization;
-- servers are small global reference data.

CREATE TABLE audit_events (
    organization_id  TEXT NOT NULL,
    audit_id         TEXT NOT NULL,
    event_time       INTEGER NOT NULL,
    event_type       INTEGER NOT NULL,
    user_id          TEXT,
    role             INTEGER,
    old_role         INTEGER,
    new_role         INTEGER,
    is_bot           INTEGER NOT NULL DEFAULT 0,
    plan_id          TEXT,
    -- JSON {"humans": {"100": n, …}, "bots": n}; NULL when neither sender nor Tally knew them.
    role_counts      TEXT,
    backfilled       INTEGER NOT NULL DEFAULT 0,
    server_id        TEXT,
    received_at      INTEGER NOT NULL,
    -- 0 until the ledger job has turned the row into ledger rows.
    processed        INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (organization_id, audit_id)
) WITHOUT ROWID;
CREATE INDEX audit_events_by_time ON audit_events (organization_id, event_time, audit_id);
-- The seat count at a moment reads the latest row with counts, and the latest on/off switch.
CREATE INDEX audit_events_with_counts ON audit_events (organization_id, event_time, audit_id) WHERE role_counts IS NOT NULL;
CREATE INDEX audit_events_switches ON audit_events (organization_id, event_time, audit_id) WHERE event_type IN (201, 202);
CREATE INDEX audit_events_unprocessed ON audit_events (event_time, organization_id, audit_id) WHERE processed = 0;

CREATE TABLE license_ledger (
    organization_id           TEXT NOT NULL,
    seq                       INTEGER NOT NULL,
    audit_organization_id     TEXT NOT NULL,
    audit_id                  TEXT NOT NULL,
    event_time                INTEGER NOT NULL,
    licenses                  INTEGER NOT NULL,
    licenses_at_next_renewal  INTEGER NOT NULL,
    is_renewal                INTEGER NOT NULL,
    created_at                INTEGER NOT NULL,
    PRIMARY KEY (organization_id, audit_organization_id, audit_id),
    UNIQUE (organization_id, seq)
);

CREATE TABLE servers (
    server_id                   TEXT PRIMARY KEY,
    organization_id             TEXT NOT NULL,
    hostname                    TEXT NOT NULL,
    contact_email               TEXT NOT NULL,
    key_id                      TEXT NOT NULL,
    created_at                  INTEGER NOT NULL,
    last_push_at                INTEGER,
    last_audit_log_id           INTEGER,
    last_realm_count_id         INTEGER,
    last_installation_count_id  INTEGER
);

-- A server's realm, as the organization it became.
CREATE TABLE remote_realms (
    organization_id  TEXT PRIMARY KEY,
    server_id        TEXT NOT NULL,
    remote_id        INTEGER NOT NULL,
    uuid             TEXT NOT NULL DEFAULT '',
    name             TEXT NOT NULL,
    deactivated      INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX remote_realms_by_server ON remote_realms (server_id);

-- realm_counts rows under their realm's organization; installation_counts rows under the
-- server's own organization.
CREATE TABLE remote_counts (
    organization_id  TEXT NOT NULL,
    remote_id        INTEGER NOT NULL,
    server_id        TEXT NOT NULL,
    realm_id         INTEGER,
    property         TEXT NOT NULL,
    subgroup         TEXT,
    end_time         INTEGER NOT NULL,
    value            INTEGER NOT NULL,
    PRIMARY KEY (organization_id, remote_id)
);
