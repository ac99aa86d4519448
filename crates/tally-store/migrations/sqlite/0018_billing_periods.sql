-- Each user's usage in its organization's current billing period, kept ready so that report
-- filters and orderings on current-period figures read one row per user and type instead of
-- summing the period's hourly cells. `billing_periods` names the period those rows cover: the
-- rows of an organization always equal its hourly cells whose hour falls in that period.
-- Ingestion adds to them; a period that changes (a subscription's, or the calendar month's)
-- is refilled from the hourly cells, and readers fall back to the hourly cells meanwhile.
CREATE TABLE billing_periods (
    organization_id  TEXT NOT NULL PRIMARY KEY,
    period_start     INTEGER NOT NULL,
    period_end       INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE user_usage_period (
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
