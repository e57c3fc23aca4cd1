-- API keys. Only the SHA-256 of the secret is stored; the secret is shown once at creation.
CREATE TABLE IF NOT EXISTS api_keys (
    id          UUID PRIMARY KEY,
    name        TEXT NOT NULL,
    role        TEXT NOT NULL,
    key_hash    BYTEA NOT NULL UNIQUE,
    -- First characters of the secret, to recognise a key in listings without revealing it.
    key_prefix  TEXT NOT NULL,
    -- Claims used by row filters, e.g. {"developer_id": "42"}.
    attributes  JSONB NOT NULL DEFAULT '{}'::jsonb,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    revoked_at  TIMESTAMPTZ
);

-- Names identify keys for humans (`chgate keys revoke NAME`), so they are unique among active keys.
CREATE UNIQUE INDEX IF NOT EXISTS api_keys_active_name ON api_keys (name) WHERE revoked_at IS NULL;
