-- Rollups kept up to date by materialized views on `events` (they see rows when the Buffer table
-- flushes them into `events`). Bots (is_bot = 1) are excluded from user metrics.

-- Daily active users by platform and country.
CREATE TABLE IF NOT EXISTS ${database}.dau_daily
(
    day       Date,
    platform  LowCardinality(String),
    country   LowCardinality(String),
    users     AggregateFunction(uniq, String)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(day)
ORDER BY (day, platform, country);

CREATE MATERIALIZED VIEW IF NOT EXISTS ${database}.dau_daily_mv TO ${database}.dau_daily AS
SELECT toDate(timestamp) AS day, platform, country, uniqState(actor_id) AS users
FROM ${database}.events
WHERE is_bot = 0
GROUP BY day, platform, country;

-- Hourly event counts by event and platform (bots included, flagged separately).
CREATE TABLE IF NOT EXISTS ${database}.events_hourly
(
    hour      DateTime('UTC'),
    event     LowCardinality(String),
    platform  LowCardinality(String),
    events    SimpleAggregateFunction(sum, UInt64),
    bot_events SimpleAggregateFunction(sum, UInt64),
    users     AggregateFunction(uniq, String)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(hour)
ORDER BY (event, hour, platform);

CREATE MATERIALIZED VIEW IF NOT EXISTS ${database}.events_hourly_mv TO ${database}.events_hourly AS
SELECT
    toStartOfHour(timestamp) AS hour,
    event,
    platform,
    toUInt64(count()) AS events,
    toUInt64(countIf(is_bot = 1)) AS bot_events,
    uniqState(actor_id) AS users
FROM ${database}.events
GROUP BY hour, event, platform;

-- Daily revenue by currency and platform: purchases add, refunds subtract; exact decimal sums.
CREATE TABLE IF NOT EXISTS ${database}.revenue_daily
(
    day        Date,
    currency   LowCardinality(String),
    platform   LowCardinality(String),
    gross      SimpleAggregateFunction(sum, Decimal(38, 4)),
    refunded   SimpleAggregateFunction(sum, Decimal(38, 4)),
    orders     SimpleAggregateFunction(sum, UInt64),
    refunds    SimpleAggregateFunction(sum, UInt64),
    payers     AggregateFunction(uniq, String)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(day)
ORDER BY (day, currency, platform);

CREATE MATERIALIZED VIEW IF NOT EXISTS ${database}.revenue_daily_mv TO ${database}.revenue_daily AS
SELECT
    toDate(timestamp) AS day,
    currency,
    platform,
    sumIf(toDecimal128(revenue, 4), event = 'purchase') AS gross,
    sumIf(toDecimal128(revenue, 4), event = 'refund') AS refunded,
    toUInt64(countIf(event = 'purchase')) AS orders,
    toUInt64(countIf(event = 'refund')) AS refunds,
    uniqStateIf(actor_id, event = 'purchase') AS payers
FROM ${database}.events
WHERE event IN ('purchase', 'refund') AND is_bot = 0
GROUP BY day, currency, platform;

-- First and last time each user was seen, with the platform and country of the first event.
CREATE TABLE IF NOT EXISTS ${database}.user_first_seen
(
    actor_id        String,
    first_seen      SimpleAggregateFunction(min, DateTime64(3, 'UTC')),
    last_seen       SimpleAggregateFunction(max, DateTime64(3, 'UTC')),
    first_platform  AggregateFunction(argMin, String, DateTime64(3, 'UTC')),
    first_country   AggregateFunction(argMin, String, DateTime64(3, 'UTC'))
)
ENGINE = AggregatingMergeTree
ORDER BY actor_id;

CREATE MATERIALIZED VIEW IF NOT EXISTS ${database}.user_first_seen_mv TO ${database}.user_first_seen AS
SELECT
    actor_id,
    min(timestamp) AS first_seen,
    max(timestamp) AS last_seen,
    argMinState(toString(platform), timestamp) AS first_platform,
    argMinState(toString(country), timestamp) AS first_country
FROM ${database}.events
WHERE is_bot = 0
GROUP BY actor_id;

-- Operation rollups for events carrying `operation`, `status` and `duration_ms` (connector usage).
-- An operation counts as an error when its status is one of error, failed, failure, timeout.
CREATE TABLE IF NOT EXISTS ${database}.ops_hourly
(
    period        DateTime('UTC'),
    operation     LowCardinality(String),
    ops           SimpleAggregateFunction(sum, UInt64),
    errors        SimpleAggregateFunction(sum, UInt64),
    users         AggregateFunction(uniq, String),
    duration_sum  SimpleAggregateFunction(sum, Float64),
    duration_n    SimpleAggregateFunction(sum, UInt64),
    duration_q    AggregateFunction(quantilesTDigest(0.5, 0.95, 0.99), Float64)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(period)
ORDER BY (operation, period);

CREATE TABLE IF NOT EXISTS ${database}.ops_daily AS ${database}.ops_hourly
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(period)
ORDER BY (operation, period);

CREATE TABLE IF NOT EXISTS ${database}.ops_monthly AS ${database}.ops_hourly
ENGINE = AggregatingMergeTree
PARTITION BY toYear(period)
ORDER BY (operation, period);

CREATE MATERIALIZED VIEW IF NOT EXISTS ${database}.ops_hourly_mv TO ${database}.ops_hourly AS
SELECT
    toStartOfHour(timestamp) AS period,
    operation,
    toUInt64(count()) AS ops,
    toUInt64(countIf(status IN ('error', 'failed', 'failure', 'timeout'))) AS errors,
    uniqState(actor_id) AS users,
    sum(ifNull(duration_ms, 0)) AS duration_sum,
    toUInt64(count(duration_ms)) AS duration_n,
    quantilesTDigestStateIf(0.5, 0.95, 0.99)(assumeNotNull(duration_ms), isNotNull(duration_ms)) AS duration_q
FROM ${database}.events
WHERE operation != ''
GROUP BY period, operation;

CREATE MATERIALIZED VIEW IF NOT EXISTS ${database}.ops_daily_mv TO ${database}.ops_daily AS
SELECT
    toDateTime(toStartOfDay(timestamp), 'UTC') AS period,
    operation,
    toUInt64(count()) AS ops,
    toUInt64(countIf(status IN ('error', 'failed', 'failure', 'timeout'))) AS errors,
    uniqState(actor_id) AS users,
    sum(ifNull(duration_ms, 0)) AS duration_sum,
    toUInt64(count(duration_ms)) AS duration_n,
    quantilesTDigestStateIf(0.5, 0.95, 0.99)(assumeNotNull(duration_ms), isNotNull(duration_ms)) AS duration_q
FROM ${database}.events
WHERE operation != ''
GROUP BY period, operation;

CREATE MATERIALIZED VIEW IF NOT EXISTS ${database}.ops_monthly_mv TO ${database}.ops_monthly AS
SELECT
    toDateTime(toStartOfMonth(timestamp), 'UTC') AS period,
    operation,
    toUInt64(count()) AS ops,
    toUInt64(countIf(status IN ('error', 'failed', 'failure', 'timeout'))) AS errors,
    uniqState(actor_id) AS users,
    sum(ifNull(duration_ms, 0)) AS duration_sum,
    toUInt64(count(duration_ms)) AS duration_n,
    quantilesTDigestStateIf(0.5, 0.95, 0.99)(assumeNotNull(duration_ms), isNotNull(duration_ms)) AS duration_q
FROM ${database}.events
WHERE operation != ''
GROUP BY period, operation;
