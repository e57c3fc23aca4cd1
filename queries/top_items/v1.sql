/*---
description = """
The items most involved in an event (e.g. game_view or purchase), by event count, with distinct
users. `item_property` names the property holding the item: item_id (the lifted column) or any
other property of the event. Counts events with from <= timestamp < to (UTC), bots excluded."""
roles = ["admin", "analyst", "marketer", "developer", "service"]
cache_ttl_secs = 300
columns = { item = "String", events = "UInt64", users = "UInt64" }

[params.event]
type = "String"
required = true

[params.item_property]
type = "String"
default = "item_id"

[params.from]
type = "DateTime"
required = true

[params.to]
type = "DateTime"
required = true

[params.limit]
type = "UInt32"
default = 20
min = 1
max = 1000

[[examples]]
name = "most viewed games this week"
params = { event = "game_view", from = "today-7d", to = "now" }

[[examples]]
name = "most searched queries"
params = { event = "search", item_property = "query", from = "today-30d", to = "now", limit = 10 }
---*/
SELECT
    if({item_property:String} = 'item_id', item_id, JSONExtractString(properties, {item_property:String})) AS item,
    count() AS events,
    uniqExact(actor_id) AS users
FROM events
WHERE event = {event:String}
  AND timestamp >= {from:DateTime} AND timestamp < {to:DateTime}
  AND is_bot = 0
GROUP BY item
HAVING item != ''
ORDER BY events DESC, users DESC, item
LIMIT {limit:UInt32}
