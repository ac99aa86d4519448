-- Runs of resumable rebuild jobs (`tally reports rebuild user-reports`): progress (a cursor over
-- organizations), outcome, and the lease that keeps two runs from working at once, also across
-- processes sharing one database. A small global table: a reference table when sharded.
CREATE TABLE job_runs (
    run_id       TEXT PRIMARY KEY,
    job          TEXT NOT NULL,
    status       TEXT NOT NULL,
    cursor       TEXT,
    processed    BIGINT NOT NULL DEFAULT 0,
    started_at   INTEGER NOT NULL,
    finished_at  INTEGER,
    last_error   TEXT,
    lease_owner  TEXT NOT NULL,
    lease_until  INTEGER NOT NULL
);
CREATE UNIQUE INDEX job_runs_one_in_progress ON job_runs (job) WHERE status = 'in_progress';
