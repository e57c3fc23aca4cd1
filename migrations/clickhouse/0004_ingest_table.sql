-- Larger Buffer flushes: after 3-10 s, or 100k-1M rows, or 50-256 MB (were 1-5 s, 10k-1M rows,
-- 10-256 MB). Fewer, larger parts in `events` and in every rollup mean fewer background merges,
-- which were the largest part of ClickHouse's CPU per event under sustained ingestion. Dropping a
-- Buffer table flushes it first; rows in flight are re-sent from the gateway's write-ahead log.
DROP TABLE IF EXISTS ${database}.events_buffer;

CREATE TABLE IF NOT EXISTS ${database}.events_buffer AS ${database}.events
ENGINE = Buffer(${database}, events, 2, 3, 10, 100000, 1000000, 50000000, 268435456);

-- The table the gateway inserts into. Row formats (RowBinary, the `clickhouse` crate's default)
-- cost ClickHouse a temporary column and a dictionary lookup for every value it reads into a
-- LowCardinality column, which made parsing the inserts the largest part of ClickHouse's work
-- per event. This table has the columns of `events` in the same order, with plain String where
-- `events` has LowCardinality(String); it stores nothing (Null engine): the materialized view
-- below passes every inserted block on to the Buffer table in the same insert, converting those
-- columns one block at a time. Acknowledgement semantics do not change: an insert succeeds only
-- once its rows are in `events_buffer`.
--
-- A column added to `events` is added here too (same position), and the view re-created.
CREATE TABLE IF NOT EXISTS ${database}.events_ingest
(
    event_id        UUID,
    event           String,
    timestamp       DateTime64(3, 'UTC'),
    received_at     DateTime64(3, 'UTC'),
    user_id         String,
    anonymous_id    String,
    actor_id        String,
    session_id      String,
    platform        String,
    properties      String,
    item_id         String,
    developer_id    String,
    revenue         Float64,
    currency        String,
    operation       String,
    status          String,
    duration_ms     Nullable(Float64),
    ip              String,
    country         String,
    region          String,
    city            String,
    locale          String,
    user_agent      String,
    browser         String,
    browser_version String,
    os              String,
    os_version      String,
    device_type     String,
    device_model    String,
    is_bot          UInt8,
    app_version     String,
    library         String,
    page_url        String,
    page_path       String,
    page_title      String,
    referrer        String,
    referrer_host   String,
    channel         String,
    utm_source      String,
    utm_medium      String,
    utm_campaign    String,
    utm_term        String,
    utm_content     String,
    ingest_segment  UInt64
)
ENGINE = Null;

CREATE MATERIALIZED VIEW IF NOT EXISTS ${database}.events_ingest_mv TO ${database}.events_buffer
AS SELECT * FROM ${database}.events_ingest;
