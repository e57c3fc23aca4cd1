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
    hash with odds of about n^2 / 2^65 (1e-8 for a million users). -#}
WITH
event_names AS
(
    SELECT arraySort(groupUniqArray(toString(event))) AS names
    FROM events
    WHERE timestamp >= {from:DateTime} AND timestamp < {to:DateTime} AND is_bot = 0
),
sessions AS
(
    SELECT user, session
    FROM
    (
        SELECT
            cityHash64(actor_id) AS user,
            arraySort(groupArray(bitShiftLeft(toUInt64(toUnixTimestamp64Milli(timestamp)), 20)
                + transform(event, (SELECT names FROM event_names), arrayEnumerate((SELECT names FROM event_names)), 0))) AS keys,
            arraySplit((code, gap) -> gap > 1800000,
                       arrayMap(k -> bitAnd(k, 1048575), keys),
                       arrayDifference(arrayMap(k -> bitShiftRight(k, 20), keys))) AS split
        FROM events
        WHERE timestamp >= {from:DateTime} AND timestamp < {to:DateTime} AND is_bot = 0
        GROUP BY user
    )
    ARRAY JOIN split AS session
),
paths AS
(
    SELECT
        user,
        arrayFilter((code, previous, i) -> i = 1 OR code != previous, session, arrayPushFront(arrayPopBack(session), 0), arrayEnumerate(session)) AS collapsed,
{% if start_event %}
        indexOf(collapsed, indexOf((SELECT names FROM event_names), {start_event:String})) AS start,
{% else %}
        toUInt64(1) AS start,
{% endif %}
        arraySlice(collapsed, start, {depth:UInt8}) AS path
    FROM sessions
    WHERE start > 0
)
SELECT step, (SELECT names FROM event_names)[source_code] AS source, (SELECT names FROM event_names)[target_code] AS target, users
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
