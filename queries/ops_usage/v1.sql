/*---
description = """
Connector operation usage per period (UTC hours, days or months) from `from` to `to` inclusive:
operations, errors (status error, failed, failure or timeout), error rate, distinct users, average
and p95 duration in ms (t-digest estimate). Served from the ops_hourly/daily/monthly rollups
(closed periods finalized in ops_final, used while no operation has been added to them since)."""
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
{% set range %}period >= {from:DateTime} AND period <= {to:DateTime}{% if operation %} AND operation = {operation:String}{% endif %}{% endset %}
{#- Closed periods come from ops_final where its fingerprint (the operations counted) still equals
    the rollup's (src/rollups); the other periods merge the rollup's states. -#}
WITH
checked AS
(
    SELECT l.period AS period, l.operation AS operation, f.ops AS ops, f.errors AS errors,
           f.unique_users AS unique_users, f.duration_sum AS duration_sum, f.duration_n AS duration_n, f.p95_ms AS p95_ms,
           f.present = 1 AND f.fingerprint = l.fingerprint AS fresh
    FROM
    (
        SELECT period, operation, sum(ops) AS fingerprint
        FROM {{ table }}
        WHERE {{ range }}
        GROUP BY period, operation
    ) AS l
    LEFT JOIN
    (
        SELECT period, operation,
               argMax(ops, finalized_at) AS ops, argMax(errors, finalized_at) AS errors,
               argMax(unique_users, finalized_at) AS unique_users, argMax(duration_sum, finalized_at) AS duration_sum,
               argMax(duration_n, finalized_at) AS duration_n, argMax(p95_ms, finalized_at) AS p95_ms,
               argMax(fingerprint, finalized_at) AS fingerprint, toUInt8(1) AS present
        FROM ops_final
        WHERE granularity = {granularity:String} AND {{ range }}
        GROUP BY period, operation
    ) AS f ON f.period = l.period AND f.operation = l.operation
)
SELECT
    period,
    toString(operation) AS operation,
    ops,
    errors,
    round(errors / ops, 4) AS error_rate,
    unique_users,
    if(duration_n = 0, NULL, round(duration_sum / duration_n, 3)) AS avg_ms,
    p95_ms
FROM
(
    SELECT period, operation, ops, errors, unique_users, duration_sum, duration_n, p95_ms FROM checked WHERE fresh
    UNION ALL
    SELECT
        period,
        operation,
        sum(ops) AS merged_ops,
        sum(errors) AS merged_errors,
        uniqMerge(users) AS merged_users,
        sum(duration_sum) AS merged_duration_sum,
        sum(duration_n) AS merged_duration_n,
        if(merged_duration_n = 0, NULL, round(toFloat64(arrayElement(quantilesTDigestMerge(0.5, 0.95, 0.99)(duration_q), 2)), 3)) AS merged_p95_ms
    FROM {{ table }}
    WHERE {{ range }}
      AND (operation, period) IN (SELECT operation, period FROM checked WHERE NOT fresh)
    GROUP BY period, operation
)
ORDER BY period, operation
