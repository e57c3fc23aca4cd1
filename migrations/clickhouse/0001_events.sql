-- Raw events: one row per accepted event, enriched by the gateway.
-- `actor_id` is who counts as "a user" in every metric: user_id when known, else anonymous_id.
CREATE TABLE IF NOT EXISTS ${database}.events
(
    event_id        UUID,
    event           LowCardinality(String),
    timestamp       DateTime64(3, 'UTC'),
    received_at     DateTime64(3, 'UTC'),
    user_id         String,
    anonymous_id    String,
    actor_id        String,
    session_id      String,
    platform        LowCardinality(String),
    -- JSON object of the remaining properties, after PII rules were applied.
    properties      String,
    -- Well-known properties lifted into columns for filters, row-level security and rollups.
    item_id         String,
    developer_id    String,
    revenue         Float64,
    currency        LowCardinality(String),
    operation       LowCardinality(String),
    status          LowCardinality(String),
    duration_ms     Nullable(Float64),
    -- Context and enrichment.
    ip              String,
    country         LowCardinality(String),
    region          LowCardinality(String),
    city            String,
    locale          LowCardinality(String),
    user_agent      String,
    browser         LowCardinality(String),
    browser_version LowCardinality(String),
    os              LowCardinality(String),
    os_version      LowCardinality(String),
    device_type     LowCardinality(String),
    device_model    LowCardinality(String),
    is_bot          UInt8,
    app_version     LowCardinality(String),
    library         LowCardinality(String),
    page_url        String,
    page_path       String,
    page_title      String,
    referrer        String,
    referrer_host   LowCardinality(String),
    channel         LowCardinality(String),
    utm_source      LowCardinality(String),
    utm_medium      LowCardinality(String),
    utm_campaign    LowCardinality(String),
    utm_term        String,
    utm_content     String,
    -- Write-ahead-log segment the row came from; lets the gateway verify a segment is stored
    -- before it deletes the segment (0 when the WAL is off).
    ingest_segment  UInt64,
    INDEX idx_ingest_segment ingest_segment TYPE minmax GRANULARITY 1,
    INDEX idx_user_id user_id TYPE bloom_filter(0.01) GRANULARITY 4,
    INDEX idx_developer_id developer_id TYPE bloom_filter(0.01) GRANULARITY 4,
    INDEX idx_item_id item_id TYPE bloom_filter(0.01) GRANULARITY 4,
    INDEX idx_event_id event_id TYPE bloom_filter(0.001) GRANULARITY 4
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(timestamp)
ORDER BY (event, toDate(timestamp), actor_id, timestamp);

-- The gateway writes here; ClickHouse flushes into `events` by time or size. Its contents live in
-- memory until flushed, so the gateway's write-ahead log, not this table, makes writes durable.
CREATE TABLE IF NOT EXISTS ${database}.events_buffer AS ${database}.events
ENGINE = Buffer(${database}, events, 2, 1, 5, 10000, 1000000, 10000000, 268435456);

-- Latest traits per user from `identify` calls.
CREATE TABLE IF NOT EXISTS ${database}.user_properties
(
    user_id     String,
    traits      String,
    updated_at  DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(updated_at)
ORDER BY user_id;
