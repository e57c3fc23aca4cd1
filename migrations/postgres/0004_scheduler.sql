-- Scheduled jobs (alerts, reports, segment refreshes) and every run of them.
--
-- One runner at a time across gateway instances: a due job is claimed with
-- SELECT … FOR UPDATE SKIP LOCKED and moved to its next occurrence in the same transaction,
-- and each occurrence has at most one run (UNIQUE (job_id, scheduled_for)).
CREATE TABLE IF NOT EXISTS scheduled_jobs (
    id           UUID PRIMARY KEY,
    kind         TEXT NOT NULL,
    target       UUID NOT NULL,
    schedule     TEXT NOT NULL,
    next_run_at  TIMESTAMPTZ NOT NULL,
    enabled      BOOLEAN NOT NULL DEFAULT TRUE,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (kind, target)
);
CREATE INDEX IF NOT EXISTS scheduled_jobs_due ON scheduled_jobs (next_run_at) WHERE enabled;

CREATE TABLE IF NOT EXISTS job_runs (
    id             BIGSERIAL PRIMARY KEY,
    job_id         UUID REFERENCES scheduled_jobs (id) ON DELETE SET NULL,
    kind           TEXT NOT NULL,
    target         UUID NOT NULL,
    -- The occurrence this run is for (the request time for manual runs).
    scheduled_for  TIMESTAMPTZ NOT NULL,
    -- schedule | manual
    trigger        TEXT NOT NULL,
    -- Occurrences skipped because the gateway was down (they are not run one by one).
    missed         INTEGER NOT NULL DEFAULT 0,
    instance       TEXT NOT NULL,
    started_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    finished_at    TIMESTAMPTZ,
    -- running | ok | failed
    status         TEXT NOT NULL,
    error          TEXT,
    rows           BIGINT,
    -- What the run produced, by kind (a report's file, an alert's state).
    result         JSONB
);
CREATE UNIQUE INDEX IF NOT EXISTS job_runs_occurrence ON job_runs (job_id, scheduled_for) WHERE trigger = 'schedule';
CREATE INDEX IF NOT EXISTS job_runs_target ON job_runs (kind, target, started_at DESC);
