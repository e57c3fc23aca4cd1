-- Business-critical events (signup, purchase, refund by default), mirrored from ingestion and
-- normalized. Every write is idempotent on event_id, so replays after a crash change nothing.

CREATE TABLE IF NOT EXISTS business_events (
    event_id     UUID PRIMARY KEY,
    event        TEXT NOT NULL,
    user_id      TEXT NOT NULL,
    occurred_at  TIMESTAMPTZ NOT NULL,
    received_at  TIMESTAMPTZ NOT NULL,
    properties   JSONB NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX IF NOT EXISTS business_events_user ON business_events (user_id, occurred_at);

CREATE TABLE IF NOT EXISTS users (
    user_id        TEXT PRIMARY KEY,
    first_seen_at  TIMESTAMPTZ NOT NULL,
    signed_up_at   TIMESTAMPTZ,
    country        TEXT NOT NULL DEFAULT '',
    platform       TEXT NOT NULL DEFAULT '',
    updated_at     TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS products (
    item_id        TEXT PRIMARY KEY,
    developer_id   TEXT NOT NULL DEFAULT '',
    name           TEXT NOT NULL DEFAULT '',
    first_seen_at  TIMESTAMPTZ NOT NULL,
    updated_at     TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS orders (
    event_id     UUID PRIMARY KEY REFERENCES business_events (event_id),
    kind         TEXT NOT NULL CHECK (kind IN ('purchase', 'refund')),
    order_id     TEXT NOT NULL DEFAULT '',
    user_id      TEXT NOT NULL REFERENCES users (user_id),
    item_id      TEXT REFERENCES products (item_id),
    amount       NUMERIC(18, 4) NOT NULL CHECK (amount >= 0),
    currency     CHAR(3) NOT NULL,
    occurred_at  TIMESTAMPTZ NOT NULL
);
CREATE INDEX IF NOT EXISTS orders_user ON orders (user_id, occurred_at);
CREATE INDEX IF NOT EXISTS orders_item ON orders (item_id, occurred_at);
