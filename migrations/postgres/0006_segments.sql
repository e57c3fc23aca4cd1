-- Audience segments: definitions, whose permissions they are computed with, and size history.
CREATE TABLE IF NOT EXISTS segments (
    id               UUID PRIMARY KEY,
    name             TEXT NOT NULL,
    description      TEXT NOT NULL DEFAULT '',
    criteria         JSONB NOT NULL,
    -- dynamic (refreshed on its schedule or on demand) | static (membership frozen at creation)
    kind             TEXT NOT NULL,
    schedule         TEXT,
    owner_name       TEXT NOT NULL,
    owner_role       TEXT NOT NULL,
    owner_key_id     UUID,
    owner_attributes JSONB NOT NULL DEFAULT '{}',
    computed_at      TIMESTAMPTZ,
    size             BIGINT,
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at       TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS segment_sizes (
    segment_id   UUID NOT NULL REFERENCES segments (id) ON DELETE CASCADE,
    computed_at  TIMESTAMPTZ NOT NULL,
    size         BIGINT NOT NULL,
    duration_ms  DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (segment_id, computed_at)
);
