-- Finalized values of closed periods, beside the rollups whose distinct counts are `uniq` states.
-- Merging states is what costs when a range is long (90 days of dau_daily: 3,600 states merged
-- per call); a closed period's count does not change unless rows arrive for it, so the gateway's
-- finalizer (src/rollups) stores it once with a fingerprint of the rows it was computed from: a
-- count that every row added to the rollup raises. Templates use a finalized value only while the
-- rollup's fingerprint for that key is the same, and merge states for the rest (today, a day
-- touched by late events since): the answer is always the states' answer.

-- The fingerprint of dau_daily: its events, counted in the same row as the users state.
ALTER TABLE ${database}.dau_daily
    ADD COLUMN IF NOT EXISTS events SimpleAggregateFunction(sum, UInt64);

ALTER TABLE ${database}.dau_daily_mv MODIFY QUERY
SELECT toDate(timestamp) AS day, platform, country, uniqState(actor_id) AS users, toUInt64(count()) AS events
FROM ${database}.events
WHERE is_bot = 0
GROUP BY day, platform, country;

-- Distinct users per period: by day for each filter of the dau template (all, a platform, a
-- country, both), and by week and month for revenue's ARPU. `platform`/`country` are empty
-- where the level does not filter on them.
CREATE TABLE IF NOT EXISTS ${database}.dau_final
(
    granularity   LowCardinality(String),
    by_platform   UInt8,
    by_country    UInt8,
    period        Date,
    platform      LowCardinality(String),
    country       LowCardinality(String),
    users         UInt64,
    fingerprint   UInt64,
    finalized_at  DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(finalized_at)
ORDER BY (granularity, by_platform, by_country, period, platform, country);

-- Revenue per period and currency (day, week, month).
CREATE TABLE IF NOT EXISTS ${database}.revenue_final
(
    granularity   LowCardinality(String),
    period        Date,
    currency      LowCardinality(String),
    revenue       Decimal(38, 4),
    orders        UInt64,
    payers        UInt64,
    fingerprint   UInt64,
    finalized_at  DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(finalized_at)
ORDER BY (granularity, period, currency);

-- Operations per period and operation (hour, day, month).
CREATE TABLE IF NOT EXISTS ${database}.ops_final
(
    granularity   LowCardinality(String),
    operation     LowCardinality(String),
    period        DateTime('UTC'),
    ops           UInt64,
    errors        UInt64,
    unique_users  UInt64,
    duration_sum  Float64,
    duration_n    UInt64,
    p95_ms        Nullable(Float64),
    fingerprint   UInt64,
    finalized_at  DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(finalized_at)
ORDER BY (granularity, operation, period);
