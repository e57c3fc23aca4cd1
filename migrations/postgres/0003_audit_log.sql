-- Who did what, when, from where and why (152-FZ): template runs, BI queries, exports, admin
-- changes and authentication failures. Append-only; old rows are deleted after audit.retention_days.
CREATE TABLE IF NOT EXISTS audit_log (
    id           BIGSERIAL PRIMARY KEY,
    at           TIMESTAMPTZ NOT NULL DEFAULT now(),
    request_id   TEXT NOT NULL DEFAULT '',
    principal    TEXT NOT NULL DEFAULT '',
    role         TEXT NOT NULL DEFAULT '',
    key_id       UUID,
    ip           TEXT NOT NULL DEFAULT '',
    user_agent   TEXT NOT NULL DEFAULT '',
    action       TEXT NOT NULL,
    resource     TEXT NOT NULL DEFAULT '',
    params       JSONB,
    sql_hash     TEXT,
    sql_text     TEXT,
    outcome      TEXT NOT NULL,
    status       INTEGER NOT NULL,
    rows         BIGINT,
    bytes        BIGINT,
    duration_ms  DOUBLE PRECISION NOT NULL DEFAULT 0,
    reason       TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS audit_log_at ON audit_log (at);
CREATE INDEX IF NOT EXISTS audit_log_principal ON audit_log (principal, at);
CREATE INDEX IF NOT EXISTS audit_log_action ON audit_log (action, at);
