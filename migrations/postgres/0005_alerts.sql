-- Threshold alerts over query templates, their state, and their history.
CREATE TABLE IF NOT EXISTS alerts (
    id               UUID PRIMARY KEY,
    name             TEXT NOT NULL,
    -- The definition as sent (template, params, condition, channels, …).
    spec             JSONB NOT NULL,
    -- Whose permissions the template runs with: the creator's.
    owner_name       TEXT NOT NULL,
    owner_role       TEXT NOT NULL,
    owner_key_id     UUID,
    owner_attributes JSONB NOT NULL DEFAULT '{}',
    -- ok | pending | firing
    state            TEXT NOT NULL DEFAULT 'ok',
    state_since      TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_value       DOUBLE PRECISION,
    last_evaluated_at TIMESTAMPTZ,
    last_notified_at TIMESTAMPTZ,
    last_error       TEXT,
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at       TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS alert_events (
    id          BIGSERIAL PRIMARY KEY,
    alert_id    UUID NOT NULL REFERENCES alerts (id) ON DELETE CASCADE,
    at          TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- pending | firing | renotified | resolved | cancelled | error
    kind        TEXT NOT NULL,
    value       DOUBLE PRECISION,
    message     TEXT NOT NULL,
    -- Per channel: attempts, delivered, last error.
    deliveries  JSONB NOT NULL DEFAULT '[]'
);
CREATE INDEX IF NOT EXISTS alert_events_alert ON alert_events (alert_id, at DESC);
