/*---
description = """
New users per period: users whose first event ever (first_seen, bots excluded) falls in the period.
Periods are UTC days, ISO weeks starting Monday, or calendar months; the range covers users first
seen from `from` to `to` inclusive, so a first or last period that `from` or `to` cuts is partial.
Every period of the range is listed, those without new users with 0 (v1 left them out). A user is
an actor_id (user_id, else anonymous_id): chgate does not merge identities, so a visitor who is
identified later is new again under their user_id (PostHog merges them into one person). Served
from the user_first_seen rollup."""
roles = ["admin", "analyst", "marketer", "service"]
cache_ttl_secs = 300
columns = { period = "Date", new_users = "UInt64" }

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

[[examples]]
name = "weekly, last quarter"
params = { from = "today-90d", to = "today", granularity = "week" }
---*/
{% set bucket = {"day": "toDate", "week": "toMonday", "month": "toStartOfMonth"}[granularity] %}
{% set unit = {"day": "DAY", "week": "WEEK", "month": "MONTH"}[granularity] %}
SELECT {{ bucket }}(first_day) AS period, count() AS new_users
FROM
(
    SELECT actor_id, toDate(min(first_seen)) AS first_day
    FROM user_first_seen
    GROUP BY actor_id
)
WHERE first_day BETWEEN {from:Date} AND {to:Date}
GROUP BY period
ORDER BY period WITH FILL FROM {{ bucket }}({from:Date}) TO {{ bucket }}({to:Date}) + INTERVAL 1 {{ unit }} STEP INTERVAL 1 {{ unit }}
