-- Reports: definitions (the spec as clients gave it, whose permissions they run with) and the
-- files of their runs (runs themselves are job_runs of kind 'report').
CREATE TABLE IF NOT EXISTS reports (
    id               UUID PRIMARY KEY,
    spec             JSONB NOT NULL,
    owner_name       TEXT NOT NULL,
    owner_role       TEXT NOT NULL,
    owner_key_id     UUID,
    owner_attributes JSONB NOT NULL DEFAULT '{}',
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at       TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS report_files (
    run_id        BIGINT PRIMARY KEY REFERENCES job_runs (id) ON DELETE CASCADE,
    report_id     UUID NOT NULL REFERENCES reports (id) ON DELETE CASCADE,
    filename      TEXT NOT NULL,
    content_type  TEXT NOT NULL,
    size          BIGINT NOT NULL,
    content       BYTEA NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS report_files_created ON report_files (created_at);
