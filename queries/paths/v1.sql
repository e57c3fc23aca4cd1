/*---
description = """
The most common transitions between events. Each user's events with from <= timestamp < to (UTC,
bots excluded) are split into sessions at gaps over 30 minutes; repeated consecutive events are
collapsed; with start_event a session's path starts at its first start_event (sessions without it
are skipped). The first `depth` events of each path form steps; for each step the top `limit`
transitions source -> target are listed with the distinct users who made them."""
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

[deprecated]
sunset = "2027-06-30"
successor = "v2"
note = "v2 takes events of the same millisecond in a fixed order (by event name)"

[[examples]]
name = "paths from the home page, last week"
params = { from = "today-7d", to = "now", start_event = "page_view", depth = 4 }

[[examples]]
name = "all paths, yesterday"
params = { from = "today-1d", to = "today" }
---*/
WITH
sessions AS
(
    SELECT actor_id, session
    FROM
    (
        SELECT
            actor_id,
            arraySort(x -> tupleElement(x, 1), groupArray((toUnixTimestamp64Milli(timestamp), toString(event)))) AS evs,
            arraySplit(
                (x, i) -> i > 1 AND tupleElement(x, 1) - tupleElement(evs[i - 1], 1) > 1800000,
                evs, arrayEnumerate(evs)
            ) AS split
        FROM events
        WHERE timestamp >= {from:DateTime} AND timestamp < {to:DateTime} AND is_bot = 0
        GROUP BY actor_id
    )
    ARRAY JOIN split AS session
),
paths AS
(
    SELECT
        actor_id,
        arrayMap(x -> tupleElement(x, 2), session) AS raw,
        arrayFilter((name, i) -> i = 1 OR name != raw[i - 1], raw, arrayEnumerate(raw)) AS collapsed,
{% if start_event %}
        indexOf(collapsed, {start_event:String}) AS start,
{% else %}
        toUInt64(1) AS start,
{% endif %}
        arraySlice(collapsed, start, {depth:UInt8}) AS path
    FROM sessions
    WHERE start > 0
)
SELECT toUInt8(i) AS step, path[i] AS source, path[i + 1] AS target, uniqExact(actor_id) AS users
FROM paths
ARRAY JOIN arrayEnumerate(path) AS i
WHERE i < length(path)
GROUP BY step, source, target
ORDER BY step, users DESC, source, target
LIMIT {limit:UInt16} BY step
