/*---
description = """
The most common transitions between events. Each user's events with from <= timestamp < to (UTC,
bots excluded) are taken in time order, events of the same millisecond by event name (v1 left their
order to chance), and split into sessions at gaps over 30 minutes; repeated consecutive events are
collapsed; with start_event a session's path starts at its first start_event (sessions without it
are skipped). The first `depth` events of each path form steps; for each step the top `limit`
transitions source -> target are listed with the distinct users who made them.

As PostHog's paths: a session ends after 30 minutes without an event, repeated consecutive events
count once (a page reloaded three times is one step), and a session that crosses `from` or `to` is
cut there. On purpose: a transition counts distinct users, not sessions (a user making it in two
sessions counts once), and a user is an actor_id (user_id, else anonymous_id; identities are not
merged, as PostHog merges them into persons)."""
roles = ["admin", "analyst", "marketer", "service"]
cache_ttl_secs = 600
max_execution_secs = 60
columns = { step = "UInt8", source = "String", target = "String", users = "UInt64" }

[params.from]
type = "DateTime"
required = true

[params.to]
type = "DateTime"
required = true

[params.start_event]
type = "String"

[params.depth]
type = "UInt8"
default = 4
min = 2
max = 6

[params.limit]
type = "UInt16"
default = 10
min = 1
max = 100

[[examples]]
name = "paths from the home page, last week"
params = { from = "today-7d", to = "now", start_event = "page_view", depth = 4 }

[[examples]]
name = "all paths, yesterday"
params = { from = "today-1d", to = "today" }
---*/
{#- Events become UInt64 keys: ms since the epoch in the high bits, the event's rank among the
    range's event names (sorted; up to 2^20 - 1 of them) in the low 20 bits, so one integer sort
    orders them by time and events of the same millisecond by name; sorting (time, name) tuples
    took most of the query's time. Users are grouped by a 64-bit hash of actor_id (cityHash64:
    hashing is a quarter of sipHash64's cost), cheaper than grouping the strings; two users share a
    hash with odds of about n^2 / 2^65 (1e-8 for a million users).
    The keys of each user's day come from user_day_events (written at ingestion: milliseconds and
    the low 20 bits of the name's cityHash64), mapped to the range's ranks and filtered to
    [from, to): grouping those arrays by user costs a fraction of grouping every event of the range.
    When two names of the range share those 20 bits, the same keys are built from `events`. -#}
WITH
event_names AS
(
    {#- Every event name of the range, from the hourly rollup (which counts bots too, and whole
        hours: a superset of the names the range's events carry; a name no event of the range has
        is never looked up). -#}
    SELECT arraySort(groupUniqArray(toString(event))) AS names
    FROM events_hourly
    WHERE hour >= toStartOfHour({from:DateTime}) AND hour < {to:DateTime}
),
codes AS
(
    {#- The low 20 bits of each name's cityHash64, as user_day_events stores them; when two names
        of the range share them, the events are read instead. -#}
    SELECT names, arrayMap(n -> bitAnd(cityHash64(n), 1048575), names) AS name_codes,
           length(arrayDistinct(name_codes)) = length(names) AS distinct_codes
    FROM event_names
),
keyed AS
(
    SELECT
        user_key AS user,
        arrayMap(k -> bitShiftLeft(bitShiftRight(k, 20), 20) + transform(bitAnd(k, 1048575), (SELECT name_codes FROM codes), arrayEnumerate((SELECT names FROM codes)), 0),
                 arrayFilter(k -> bitShiftRight(k, 20) >= toUInt64(toUnixTimestamp({from:DateTime})) * 1000
                                  AND bitShiftRight(k, 20) < toUInt64(toUnixTimestamp({to:DateTime})) * 1000,
                             groupArrayMerge(keys))) AS unsorted
    FROM user_day_events
    WHERE day >= toDate({from:DateTime}) AND day <= toDate({to:DateTime}) AND (SELECT distinct_codes FROM codes)
    GROUP BY user_key
    UNION ALL
    SELECT
        cityHash64(actor_id) AS user,
        groupArray(bitShiftLeft(toUInt64(toUnixTimestamp64Milli(timestamp)), 20)
            + transform(event, (SELECT names FROM codes), arrayEnumerate((SELECT names FROM codes)), 0)) AS unsorted
    FROM events
    WHERE timestamp >= {from:DateTime} AND timestamp < {to:DateTime} AND is_bot = 0 AND NOT (SELECT distinct_codes FROM codes)
    GROUP BY user
),
sessions AS
(
    SELECT user, session
    FROM
    (
        SELECT
            user,
            arraySort(unsorted) AS keys,
            arraySplit((code, gap) -> gap > 1800000,
                       arrayMap(k -> bitAnd(k, 1048575), keys),
                       arrayDifference(arrayMap(k -> bitShiftRight(k, 20), keys))) AS split
        FROM keyed
    )
    ARRAY JOIN split AS session
),
paths AS
(
    SELECT
        user,
        arrayFilter((code, previous, i) -> i = 1 OR code != previous, session, arrayPushFront(arrayPopBack(session), 0), arrayEnumerate(session)) AS collapsed,
{% if start_event %}
        indexOf(collapsed, indexOf((SELECT names FROM codes), {start_event:String})) AS start,
{% else %}
        toUInt64(1) AS start,
{% endif %}
        arraySlice(collapsed, start, {depth:UInt8}) AS path
    FROM sessions
    WHERE start > 0
)
SELECT step, (SELECT names FROM codes)[source_code] AS source, (SELECT names FROM codes)[target_code] AS target, users
FROM
(
    SELECT toUInt8(i) AS step, path[i] AS source_code, path[i + 1] AS target_code, uniqExact(user) AS users
    FROM paths
    ARRAY JOIN arrayEnumerate(path) AS i
    WHERE i < length(path)
    GROUP BY step, source_code, target_code
)
ORDER BY step, users DESC, source, target
LIMIT {limit:UInt16} BY step
