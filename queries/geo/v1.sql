/*---
description = """
Users and events by country (or city, where the GeoIP database has cities) with from <= timestamp
< to (UTC), bots excluded, most users first."""
roles = ["admin", "analyst", "marketer", "service"]
cache_ttl_secs = 300
columns = { geo = "String", users = "UInt64", events = "UInt64" }

[params.from]
type = "DateTime"
required = true

[params.to]
type = "DateTime"
required = true

[params.level]
type = "String"
default = "country"
allowed = ["country", "city"]

[params.limit]
type = "UInt32"
default = 100
min = 1
max = 10000

[[examples]]
name = "countries, last 30 days"
params = { from = "today-30d", to = "now" }
---*/
SELECT toString({{ level }}) AS geo, uniqExact(actor_id) AS users, count() AS events
FROM events
WHERE timestamp >= {from:DateTime} AND timestamp < {to:DateTime} AND is_bot = 0
GROUP BY geo
ORDER BY users DESC, events DESC, geo
LIMIT {limit:UInt32}
