/*---
description = """
Connector operation usage per period (UTC hours, days or months) from `from` to `to` inclusive:
operations, errors (status error, failed, failure or timeout), error rate, distinct users, average
and p95 duration in ms (t-digest estimate). Served from the ops_hourly/daily/monthly rollups."""
roles = ["admin", "analyst", "developer", "support", "service"]
cache_ttl_secs = 60
columns = { period = "DateTime('UTC')", operation = "String", ops = "UInt64", errors = "UInt64", error_rate = "Float64", unique_users = "UInt64", avg_ms = "Nullable(Float64)", p95_ms = "Nullable(Float64)" }

[freshness]
# A monthly row holds its whole month.
through = "end_of_month"

[params.from]
type = "DateTime"
required = true

[params.to]
type = "DateTime"
required = true

[params.granularity]
type = "String"
default = "day"
allowed = ["hour", "day", "month"]

[params.operation]
type = "String"
description = "Only this operation"

[[examples]]
name = "daily, last two weeks"
params = { from = "today-14d", to = "now", granularity = "day" }

[[examples]]
name = "payment API per hour today"
params = { from = "today", to = "now", granularity = "hour", operation = "payment_api" }
---*/
{% set table = {"hour": "ops_hourly", "day": "ops_daily", "month": "ops_monthly"}[granularity] %}
SELECT
    period,
    toString(operation) AS operation,
    sum(ops) AS ops,
    sum(errors) AS errors,
    round(errors / ops, 4) AS error_rate,
    uniqMerge(users) AS unique_users,
    if(sum(duration_n) = 0, NULL, round(sum(duration_sum) / sum(duration_n), 3)) AS avg_ms,
    if(sum(duration_n) = 0, NULL, round(toFloat64(arrayElement(quantilesTDigestMerge(0.5, 0.95, 0.99)(duration_q), 2)), 3)) AS p95_ms
FROM {{ table }}
WHERE period >= {from:DateTime} AND period <= {to:DateTime}
{% if operation %}  AND operation = {operation:String}
{% endif %}GROUP BY period, operation
ORDER BY period, operation
