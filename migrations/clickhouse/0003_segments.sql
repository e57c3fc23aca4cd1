-- Segment membership, one row per member per refresh; the latest refresh of a segment is its
-- current membership (older ones of dynamic segments are deleted after each refresh).
CREATE TABLE IF NOT EXISTS ${database}.segment_members
(
    segment_id   UUID,
    computed_at  DateTime64(3, 'UTC'),
    actor_id     String
)
ENGINE = MergeTree
ORDER BY (segment_id, computed_at, actor_id);
