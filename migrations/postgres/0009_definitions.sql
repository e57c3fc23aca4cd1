-- Stored, scheduled definitions of every kind (alert, report, segment, and kinds added later) in
-- one table: the spec as the client sent it and whose permissions it runs with. What a kind keeps
-- besides its definition stays in its own table, keyed by the definition: an alert's state
-- (`alerts`), a segment's latest computation (`segments`), a report's files (`report_files`).
CREATE TABLE IF NOT EXISTS definitions (
    id               UUID PRIMARY KEY,
    -- The scheduler's job kind: alert | report | segment | …
    kind             TEXT NOT NULL,
    name             TEXT NOT NULL,
    spec             JSONB NOT NULL,
    owner_name       TEXT NOT NULL,
    owner_role       TEXT NOT NULL,
    owner_key_id     UUID,
    owner_attributes JSONB NOT NULL DEFAULT '{}',
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at       TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS definitions_kind ON definitions (kind, created_at);

INSERT INTO definitions (id, kind, name, spec, owner_name, owner_role, owner_key_id, owner_attributes, created_at, updated_at)
SELECT id, 'alert', name, spec, owner_name, owner_role, owner_key_id, owner_attributes, created_at, updated_at
FROM alerts
ON CONFLICT (id) DO NOTHING;

INSERT INTO definitions (id, kind, name, spec, owner_name, owner_role, owner_key_id, owner_attributes, created_at, updated_at)
SELECT id, 'report', COALESCE(spec->>'name', ''), spec, owner_name, owner_role, owner_key_id, owner_attributes, created_at, updated_at
FROM reports
ON CONFLICT (id) DO NOTHING;

INSERT INTO definitions (id, kind, name, spec, owner_name, owner_role, owner_key_id, owner_attributes, created_at, updated_at)
SELECT id, 'segment', name,
       jsonb_build_object('name', name, 'description', description, 'criteria', criteria, 'kind', kind, 'schedule', schedule),
       owner_name, owner_role, owner_key_id, owner_attributes, created_at, updated_at
FROM segments
ON CONFLICT (id) DO NOTHING;

-- An alert's state, and a segment's latest computation, belong to their definition.
ALTER TABLE alerts
    DROP COLUMN IF EXISTS name,
    DROP COLUMN IF EXISTS spec,
    DROP COLUMN IF EXISTS owner_name,
    DROP COLUMN IF EXISTS owner_role,
    DROP COLUMN IF EXISTS owner_key_id,
    DROP COLUMN IF EXISTS owner_attributes,
    DROP COLUMN IF EXISTS created_at,
    DROP COLUMN IF EXISTS updated_at,
    ADD CONSTRAINT alerts_definition FOREIGN KEY (id) REFERENCES definitions (id) ON DELETE CASCADE;

ALTER TABLE segments
    DROP COLUMN IF EXISTS name,
    DROP COLUMN IF EXISTS description,
    DROP COLUMN IF EXISTS criteria,
    DROP COLUMN IF EXISTS kind,
    DROP COLUMN IF EXISTS schedule,
    DROP COLUMN IF EXISTS owner_name,
    DROP COLUMN IF EXISTS owner_role,
    DROP COLUMN IF EXISTS owner_key_id,
    DROP COLUMN IF EXISTS owner_attributes,
    DROP COLUMN IF EXISTS created_at,
    DROP COLUMN IF EXISTS updated_at,
    ADD CONSTRAINT segments_definition FOREIGN KEY (id) REFERENCES definitions (id) ON DELETE CASCADE;

ALTER TABLE report_files
    DROP CONSTRAINT IF EXISTS report_files_report_id_fkey,
    ADD CONSTRAINT report_files_definition FOREIGN KEY (report_id) REFERENCES definitions (id) ON DELETE CASCADE;
DROP TABLE IF EXISTS reports;
