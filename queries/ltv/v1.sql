/*---
description = """
Lifetime value by cohort: users first seen in each period (UTC day, ISO week from Monday, or
month) from `from` to `to` inclusive, and the cumulative net revenue (purchases minus refunds in
`currency`) per cohort user through each period offset 0..periods, up to the current period."""
roles = ["admin", "analyst", "marketer", "service"]
cache_ttl_secs = 600
max_execution_secs = 60
columns = { cohort = "Date", users = "UInt64", period_offset = "UInt8", cumulative_revenue_per_user = "Float64" }

[freshness]
# Cohorts come from first-seen days (an older event moves a user out of a cohort), and revenue
# is summed up to the current period.
history = true
through = "today"

[params.from]
type = "Date"
required = true

[params.to]
type = "Date"
required = true

[params.period]
type = "String"
default = "month"
allowed = ["day", "week", "month"]

[params.periods]
type = "UInt8"
default = 6
min = 1
max = 24

[params.currency]
type = "String"
default = "USD"

[[examples]]
name = "monthly cohorts this year, USD"
params = { from = "2026-01-01", to = "2026-11-30", period = "month", periods = 6 }
---*/
{% set bucket = {"day": "toDate", "week": "toMonday", "month": "toStartOfMonth"}[period] %}
{% set add = {"day": "addDays", "week": "addWeeks", "month": "addMonths"}[period] %}
WITH
cohorts AS
(
    SELECT actor_id, {{ bucket }}(first_day) AS cohort
    FROM
    (
        SELECT actor_id, toDate(min(first_seen)) AS first_day
        FROM user_first_seen
        GROUP BY actor_id
    )
    WHERE first_day BETWEEN {from:Date} AND {to:Date}
),
sizes AS
(
    SELECT cohort, count() AS users FROM cohorts GROUP BY cohort
),
revenue AS
(
    SELECT c.cohort AS cohort, toUInt8(dateDiff('{{ period }}', c.cohort, {{ bucket }}(toDate(e.timestamp)))) AS period_offset,
           sum(if(e.event = 'refund', -e.revenue, e.revenue)) AS net
    FROM events AS e
    INNER JOIN cohorts AS c ON c.actor_id = e.actor_id
    WHERE e.event IN ('purchase', 'refund') AND e.currency = {currency:String} AND e.is_bot = 0
      AND e.timestamp >= {from:Date}
      AND dateDiff('{{ period }}', c.cohort, {{ bucket }}(toDate(e.timestamp))) BETWEEN 0 AND {periods:UInt8}
    GROUP BY cohort, period_offset
)
SELECT
    s.cohort AS cohort,
    s.users AS users,
    o.period_offset AS period_offset,
    round(sum(r.net) OVER (PARTITION BY s.cohort ORDER BY o.period_offset) / s.users, 4) AS cumulative_revenue_per_user
FROM sizes AS s
CROSS JOIN
(
    SELECT toUInt8(number) AS period_offset FROM numbers(toUInt64({periods:UInt8}) + 1)
) AS o
LEFT JOIN revenue AS r ON r.cohort = s.cohort AND r.period_offset = o.period_offset
WHERE {{ add }}(s.cohort, o.period_offset) <= {{ bucket }}(today())
ORDER BY cohort, period_offset
