-- Each user's events of a day as one array of UInt64 keys, for the paths template: milliseconds
-- since the epoch in the high 44 bits and the low 20 bits of cityHash64(event) (the template maps
-- them back to the names of the range, and reads `events` instead when two names of the range
-- share those bits). Reading these arrays instead of grouping every event of a range by user is
-- what brings paths over 30 days of 100 M events under 3 s (docs/benchmarks.md). Bots excluded.
-- A key repeated (a row inserted twice) changes no path: a repeated event at the same instant
-- collapses into one step.
CREATE TABLE IF NOT EXISTS ${database}.user_day_events
(
    day       Date,
    user_key  UInt64,
    keys      AggregateFunction(groupArray, UInt64)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(day)
ORDER BY (day, user_key);

CREATE MATERIALIZED VIEW IF NOT EXISTS ${database}.user_day_events_mv TO ${database}.user_day_events AS
SELECT
    toDate(timestamp) AS day,
    cityHash64(actor_id) AS user_key,
    groupArrayState(bitShiftLeft(toUInt64(toUnixTimestamp64Milli(timestamp)), 20) + bitAnd(cityHash64(toString(event)), 1048575)) AS keys
FROM ${database}.events
WHERE is_bot = 0
GROUP BY day, user_key;

-- The events stored before the view existed (those inserted meanwhile may be counted twice,
-- which no path shows); groups past 2 GB spill to disk.
INSERT INTO ${database}.user_day_events
SELECT
    toDate(timestamp) AS day,
    cityHash64(actor_id) AS user_key,
    groupArrayState(bitShiftLeft(toUInt64(toUnixTimestamp64Milli(timestamp)), 20) + bitAnd(cityHash64(toString(event)), 1048575)) AS keys
FROM ${database}.events
WHERE is_bot = 0
GROUP BY day, user_key
SETTINGS max_bytes_before_external_group_by = 2000000000;
