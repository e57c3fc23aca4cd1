/*---
description = """
New users per period: users whose first event ever (first_seen, bots excluded) falls in the period.
Periods are UTC days, ISO weeks starting Monday, or calendar months; the range covers users first
seen from `from` to `to` inclusive. Served from the user_first_seen rollup."""
roles = ["admin", "analyst", "marketer", "service"]
cache_ttl_secs = 300
columns = { period = "Date", new_users = "UInt64" }

[freshness]
# A user's first day is the earliest of all their events: an older event moves it.
history = true

[params.from]
type = "Date"
required = true

[params.to]
type = "Date"
required = true

[params.granularity]
type = "String"
default = "day"
allowed = ["day", "week", "month"]

[deprecated]
sunset = "2027-06-30"
successor = "v2"
note = "v2 lists periods without new users with 0"

[[examples]]
name = "weekly, last quarter"
params = { from = "today-90d", to = "today", granularity = "week" }
---*/
{% set bucket = {"day": "toDate", "week": "toMonday", "month": "toStartOfMonth"}[granularity] %}
SELECT {{ bucket }}(first_day) AS period, count() AS new_users
FROM
(
    SELECT actor_id, toDate(min(first_seen)) AS first_day
    FROM user_first_seen
    GROUP BY actor_id
)
WHERE first_day BETWEEN {from:Date} AND {to:Date}
GROUP BY period
ORDER BY period
