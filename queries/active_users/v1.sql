/*---
description = """
Rolling active users for each UTC day from `from` to `to`: distinct users active that day (DAU,
granularity=day), in the 7 days ending that day (WAU, week) or in the 30 days ending that day (MAU,
month), as PostHog's weekly and monthly active users. Days without activity are listed with 0.
Bots excluded. Served from the dau_daily rollup.

On purpose: any event makes a user active (PostHog counts a chosen event); a user is an actor_id
(user_id, else anonymous_id; identities are not merged, so one person before and after being
identified counts twice that day); and the counts are ClickHouse's uniq, exact but for rare hash
collisions up to 65 536 users per period and a sampled estimate above (PostHog counts exactly)."""
roles = ["admin", "analyst", "marketer", "support", "service"]
cache_ttl_secs = 300
max_execution_secs = 15
columns = { period = "Date", users = "UInt64" }

[freshness]
# The week and month windows count users of up to 29 days before `from`.
days_before = 29

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
description = "day = DAU, week = WAU (7-day window), month = MAU (30-day window)"

[[examples]]
name = "MAU over the last 90 days"
params = { from = "today-90d", to = "today", granularity = "month" }

[[examples]]
name = "WAU in November"
params = { from = "2026-11-01", to = "2026-11-30", granularity = "week" }
---*/
{% set window = {"day": 1, "week": 7, "month": 30}[granularity] %}
SELECT period, uniqMerge(users) AS users
FROM
(
    SELECT arrayJoin(arrayMap(k -> day + k, range(toUInt16({{ window }})))) AS period, users
    FROM dau_daily
    WHERE day BETWEEN {from:Date} - {{ window - 1 }} AND {to:Date}
)
WHERE period BETWEEN {from:Date} AND {to:Date}
GROUP BY period
ORDER BY period WITH FILL FROM {from:Date} TO {to:Date} + 1
