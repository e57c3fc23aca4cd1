/*---
description = """
Event counts and distinct users per period for the chosen events, optionally broken down by
platform, country, browser or OS. Counts events with from <= timestamp < to (UTC); periods are
hours, days, ISO weeks (Monday) or months. Bots are excluded unless include_bots=true."""
roles = ["admin", "analyst", "marketer", "developer", "support", "service"]
cache_ttl_secs = 120
max_execution_secs = 30
columns = { period = "DateTime('UTC')", event = "String", breakdown = "String", events = "UInt64", users = "UInt64" }

[params.events]
type = "Array(String)"
required = true
min_items = 1
max_items = 20
description = "Event names"

[params.from]
type = "DateTime"
required = true

[params.to]
type = "DateTime"
required = true

[params.granularity]
type = "String"
default = "day"
allowed = ["hour", "day", "week", "month"]

[params.breakdown]
type = "String"
allowed = ["platform", "country", "browser", "os", "device_type", "channel"]
description = "A column to split by; the `breakdown` column is empty without it"

[params.include_bots]
type = "Bool"
default = false

[params.segment]
type = "UUID"
description = "Only members of this segment (its latest refresh), to compare a segment with everyone"

[[examples]]
name = "purchases and signups per day, last week"
params = { events = ["purchase", "signup"], from = "today-7d", to = "today", granularity = "day" }

[[examples]]
name = "game views by platform per hour"
params = { events = ["game_view"], from = "now-24h", to = "now", granularity = "hour", breakdown = "platform" }
---*/
{% set bucket = {"hour": "toStartOfHour(timestamp)", "day": "toStartOfDay(timestamp)", "week": "toDateTime(toMonday(timestamp), 'UTC')", "month": "toDateTime(toStartOfMonth(timestamp), 'UTC')"}[granularity] %}
SELECT
    toDateTime({{ bucket }}, 'UTC') AS period,
    toString(event) AS event,
    {% if breakdown %}toString({{ breakdown }}){% else %}''{% endif %} AS breakdown,
    count() AS events,
    uniqExact(actor_id) AS users
FROM events
WHERE event IN {events:Array(String)}
  AND timestamp >= {from:DateTime} AND timestamp < {to:DateTime}
{% if segment is not none %}      AND actor_id IN (SELECT actor_id FROM segment_members WHERE segment_id = {segment:UUID} AND computed_at = (SELECT max(computed_at) FROM segment_members WHERE segment_id = {segment:UUID}))
{% endif %}{% if not include_bots %}  AND is_bot = 0
{% endif %}GROUP BY period, event, breakdown
ORDER BY period, event, breakdown
